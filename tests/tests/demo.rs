//! `orgmesh demo` starts a three-org mesh and `orgmesh submit --wait -- echo hi` against it prints
//! `hi` and exits 0 (issue "A working mesh", point 6).

use std::process::{Command, Stdio};
use std::time::Duration;

use orgmesh_tests::{binary, free_port, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mesh_runs_a_submitted_command() -> anyhow::Result<()> {
    // Ports of our own, so the test does not collide with a demo someone is running.
    let (api, p2p) = (free_port(), free_port());
    let mut demo = Command::new(binary())
        .args(["demo", "--nodes", "3", "--api-port", &api.to_string(), "--p2p-port", &p2p.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{api}");
    let http = reqwest::Client::new();
    let result = async {
        wait_for("demo node 1 sees two peers", Duration::from_secs(30), async || {
            let peers: serde_json::Value =
                http.get(format!("{url}/v1/peers")).send().await.ok()?.json().await.ok()?;
            let alive = peers["items"].as_array()?.iter().filter(|p| p["state"] == "alive").count();
            (alive == 2).then_some(())
        })
        .await?;
        let out =
            Command::new(binary()).args(["--api", &url, "submit", "--wait", "--", "echo", "hi"]).output()?;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new(binary())
            .args(["--api", &url, "submit", "--wait", "--", "sh", "-c", "exit 3"])
            .output()?;
        assert_eq!(out.status.code(), Some(3), "submit --wait exits with the task's code");
        anyhow::Ok(())
    }
    .await;
    // Ctrl-C stops the demo cleanly.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(demo.id() as i32, libc::SIGINT);
    }
    let status = demo.wait()?;
    result?;
    assert!(status.success(), "demo exited with {status}");
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut demo.stdout.take().expect("stdout"), &mut printed)?;
    assert!(
        printed.contains(&format!("http://127.0.0.1:{api}")),
        "demo prints how to reach each node: {printed}"
    );
    Ok(())
}
