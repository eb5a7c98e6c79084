//! Signed result receipts between real nodes (issue 17, "Results are taken on trust"): a task
//! that acme places on globex ends with globex's signed receipt in acme's task record; the
//! `orgmesh receipt verify` command proves it offline from the served JSON alone, with and
//! without the output bytes, and refuses it after one byte of its signed bytes changes.
//!
//! Real `orgmesh` processes on 127.0.0.1; the verifier is the same binary, run with no node.

use std::process::{Command, Output};
use std::time::Duration;

use orgmesh_tests::{binary, origin_and_host};
use serde_json::{Value, json};

fn verify(dir: &std::path::Path, name: &str, json: &Value, extra: &[&str]) -> anyhow::Result<Output> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(json)?)?;
    let mut cmd = Command::new(binary());
    cmd.args(["receipt", "verify"]).arg(&path).args(extra);
    Ok(cmd.output()?)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_placed_on_another_org_ends_with_a_receipt_anyone_can_verify() -> anyhow::Result<()> {
    let (acme, globex) = origin_and_host(&[], &[]).await?;
    let globex_id = globex.get("/v1/node").await?.1["peer_id"].clone();
    let id = acme
        .submit(&json!({"command": ["sh", "-c", "echo receipt-test; exit 3"], "constraints": {"orgs": ["globex"]}}))
        .await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(60)).await?;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["exit_code"], 3, "{task}");
    let receipt = &task["receipt"];
    assert!(receipt.is_object(), "no receipt in {task}");
    assert_eq!(receipt["host"], globex_id, "{receipt}");
    assert_eq!(receipt["task"], json!(id));
    assert_eq!(receipt["exit_code"], 3);
    assert_eq!(receipt["log_len"], "receipt-test\n".len());
    assert_eq!(receipt["digest_checked"], true, "{receipt}");
    assert_eq!(acme.counter("bad_receipts").await, 0);
    // What it used: wall time always; CPU and peak memory from the cgroup of a sandboxed attempt.
    assert!(receipt["usage"]["wall_ms"].is_u64(), "{receipt}");
    if globex.get("/v1/node").await?.1["isolation"] == "sandbox" {
        assert!(receipt["usage"]["cpu_ms"].is_u64(), "{receipt}");
        assert!(receipt["usage"]["peak_memory_bytes"].as_u64().is_some_and(|b| b > 0), "{receipt}");
    }
    eprintln!("receipt: {receipt}");

    let dir = tempfile::tempdir()?;
    // The whole record, and the receipt alone, verify offline.
    let out = verify(dir.path(), "task.json", &task, &[])?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(globex_id.as_str().unwrap_or_default()), "{}", text(&out));
    let out = verify(dir.path(), "receipt.json", receipt, &[])?;
    assert!(out.status.success(), "{}", text(&out));
    // With the output served by the origin: the bytes are the ones the host signed.
    let (_, _, log) = acme.get_text(&format!("/v1/tasks/{id}/logs")).await?;
    std::fs::write(dir.path().join("out"), &log)?;
    let output = dir.path().join("out");
    let output = output.to_str().unwrap_or_default();
    let out = verify(dir.path(), "task.json", &task, &["--output", output])?;
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(dir.path().join("out"), "receipt-tesT\n")?;
    let out = verify(dir.path(), "task.json", &task, &["--output", output])?;
    assert!(!out.status.success(), "other output bytes verified: {}", text(&out));

    // One byte of the signed bytes changed, anywhere: refused, naming what failed.
    let signed = receipt["signed"].as_str().unwrap_or_default().to_string();
    assert!(signed.len() > 40);
    for at in [0, 38, signed.len() / 2, signed.len() - 2] {
        let mut bytes: Vec<u8> = signed.clone().into_bytes();
        // Flips one hex digit: one byte of the signed bytes changes.
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        let mut changed = task.clone();
        changed["receipt"]["signed"] = json!(String::from_utf8(bytes)?);
        let out = verify(dir.path(), "changed.json", &changed, &[])?;
        assert!(!out.status.success(), "byte at hex {at} changed and still verified: {}", text(&out));
        assert!(text(&out).contains("NOT verified"), "{}", text(&out));
    }
    // A record edited to claim another result than the host signed is caught too.
    let mut lying = task.clone();
    lying["exit_code"] = json!(0);
    let out = verify(dir.path(), "lying.json", &lying, &[])?;
    assert!(!out.status.success(), "{}", text(&out));
    Ok(())
}
