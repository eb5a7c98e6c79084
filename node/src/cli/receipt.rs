//! `orgmesh receipt verify`: checks a host's signed result receipt offline. It reads the JSON a
//! node serves (a task record, or its `receipt` alone), decodes the exact signed bytes (`signed`),
//! checks the signature against the host's peer id, which embeds its ed25519 public key, and
//! optionally the output bytes against the signed length and digest. It trusts none of the
//! JSON's other fields: they are a view, and any disagreement with the signed bytes is reported.
//! Never talks to a node, never needs a key.

use std::io::Read;
use std::path::Path;

use orgmesh_protocol::receipt::{Receipt, SignedReceipt, from_hex, to_hex};
use serde_json::{Value, json};
use sha2::Digest;

use super::{ReceiptCommand, print_json};
use crate::identity::PeerIdVerifier;

/// Runs `orgmesh receipt ...`; returns the exit code (0: verified; 1: it failed, and why is on
/// stderr).
pub fn receipt(command: &ReceiptCommand, json: bool) -> i32 {
    let ReceiptCommand::Verify { file, output } = command;
    match verify(file, output.as_deref()) {
        Ok(v) => {
            if json {
                print_json(&v.to_json());
            } else {
                v.print();
            }
            0
        }
        Err(why) => {
            if json {
                print_json(&json!({"verified": false, "error": why}));
            }
            eprintln!("receipt NOT verified: {why}");
            1
        }
    }
}

/// What a verified receipt proves.
#[derive(Debug)]
struct Verified {
    receipt: Receipt,
    /// `Some(true)`: `--output` matched; `None`: not asked.
    output_matches: Option<bool>,
}

impl Verified {
    fn to_json(&self) -> Value {
        let r = &self.receipt;
        json!({
            "verified": true,
            "host": r.host, "origin": r.origin, "task": r.task, "attempt": r.attempt.0,
            "exit_code": r.exit_code, "error": r.error, "cancelled": r.cancelled,
            "log_len": r.log_len, "output_sha256": to_hex(&r.output_sha256),
            "usage": {"wall_ms": r.usage.wall_ms, "cpu_ms": r.usage.cpu_ms,
                      "peak_memory_bytes": r.usage.peak_memory_bytes},
            "finished_at_ms": r.finished_at_ms,
            "output_checked": self.output_matches.is_some(),
        })
    }

    fn print(&self) {
        let r = &self.receipt;
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!("receipt verified: host {} signed this", r.host);
        println!("  task       {}", r.task);
        println!("  attempt    {}", r.attempt.0);
        println!("  origin     {}", r.origin);
        println!("  exit code  {}", or_dash(r.exit_code.map(|c| c.to_string())));
        println!("  error      {}", or_dash(r.error.clone()));
        println!("  cancelled  {}", r.cancelled);
        println!("  output     {} bytes, sha256 {}", r.log_len, to_hex(&r.output_sha256));
        println!(
            "  usage      wall {} ms, cpu {}, peak memory {}",
            r.usage.wall_ms,
            or_dash(r.usage.cpu_ms.map(|c| format!("{c} ms"))),
            or_dash(r.usage.peak_memory_bytes.map(|b| format!("{b} bytes")))
        );
        println!("  finished   {} (unix ms, host clock)", r.finished_at_ms);
        match self.output_matches {
            Some(_) => println!("  the output file is the output it states"),
            None => println!("  output bytes not checked (--output FILE checks them)"),
        }
        println!("It proves what the host stated, not that the output is right.");
    }
}

fn read_input(file: &Path) -> Result<Vec<u8>, String> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(buf);
    }
    std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// The checks, in order; the first failure is the answer.
fn verify(file: &Path, output: Option<&Path>) -> Result<Verified, String> {
    let bytes = read_input(file)?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    // A task record carries the receipt under `receipt`; a bare receipt has `signed` itself.
    let (record, view) = match doc.get("signed") {
        Some(_) => (None, &doc),
        None => match doc.get("receipt") {
            Some(Value::Null) => return Err("the task record has no receipt (`receipt` is null)".into()),
            Some(r) => (Some(&doc), r),
            None => return Err("neither a receipt (no `signed`) nor a task record (no `receipt`)".into()),
        },
    };
    let hex_field = |name: &str| -> Result<Vec<u8>, String> {
        let text =
            view.get(name).and_then(Value::as_str).ok_or_else(|| format!("the receipt has no `{name}`"))?;
        from_hex(text).ok_or_else(|| format!("`{name}` is not hex"))
    };
    let signed = hex_field("signed")?;
    let signature = hex_field("signature")?;
    let receipt =
        SignedReceipt::verify_parts(&signed, &signature, &PeerIdVerifier).map_err(|e| e.to_string())?;
    check_view(view, &receipt)?;
    if let Some(record) = record {
        check_record(record, &receipt)?;
    }
    let output_matches = match output {
        None => None,
        Some(path) => {
            let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if data.len() as u64 != receipt.log_len {
                return Err(format!(
                    "{} is {} bytes; the host signed {} bytes of output",
                    path.display(),
                    data.len(),
                    receipt.log_len
                ));
            }
            let digest: [u8; 32] = sha2::Sha256::digest(&data).into();
            if digest != receipt.output_sha256 {
                return Err(format!(
                    "{} has sha256 {}; the host signed {}",
                    path.display(),
                    to_hex(&digest),
                    to_hex(&receipt.output_sha256)
                ));
            }
            Some(true)
        }
    };
    Ok(Verified { receipt, output_matches })
}

/// The JSON view's readable fields must say what the signed bytes say: a view edited to claim
/// something else is caught here rather than believed by whoever reads the JSON.
fn check_view(view: &Value, r: &Receipt) -> Result<(), String> {
    let expected = [
        ("task", json!(r.task)),
        ("attempt", json!(r.attempt.0)),
        ("origin", json!(r.origin)),
        ("host", json!(r.host)),
        ("exit_code", json!(r.exit_code)),
        ("error", json!(r.error)),
        ("cancelled", json!(r.cancelled)),
        ("log_len", json!(r.log_len)),
        ("output_sha256", json!(to_hex(&r.output_sha256))),
        ("finished_at_ms", json!(r.finished_at_ms)),
    ];
    for (field, signed) in expected {
        if let Some(shown) = view.get(field)
            && *shown != signed
        {
            return Err(format!("the receipt's `{field}` shows {shown} but the signed bytes say {signed}"));
        }
    }
    Ok(())
}

/// A task record must be about the receipt's task, and state the result the host signed.
fn check_record(record: &Value, r: &Receipt) -> Result<(), String> {
    if record.get("id") != Some(&json!(r.task)) {
        return Err(format!("the record is task {} but the receipt is for task {}", record["id"], r.task));
    }
    if record.get("attempt") != Some(&json!(r.attempt.0)) {
        return Err(format!(
            "the record's attempt is {} but the host signed attempt {}",
            record["attempt"], r.attempt.0
        ));
    }
    if record.get("exit_code") != Some(&json!(r.exit_code)) {
        return Err(format!(
            "the record says exit code {} but the host signed {}",
            record["exit_code"],
            json!(r.exit_code)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use orgmesh_protocol::receipt::{StoredReceipt, Usage};
    use orgmesh_protocol::{Attempt, Keyring, TaskId};

    use super::*;
    use crate::identity::{Libp2pKeyring, TrustPolicy, to_protocol};

    fn signed_by(key: Keypair) -> (Value, Vec<u8>) {
        let host = to_protocol(&key.public().to_peer_id());
        let ring = Libp2pKeyring::new(key, TrustPolicy::default());
        let output = b"hello\n".to_vec();
        let receipt = Receipt {
            task: TaskId::new(1_700_000_000_000, 7),
            attempt: Attempt(1),
            origin: to_protocol(&Keypair::generate_ed25519().public().to_peer_id()),
            host,
            exit_code: Some(0),
            error: None,
            cancelled: false,
            log_len: output.len() as u64,
            output_sha256: sha2::Sha256::digest(&output).into(),
            usage: Usage { wall_ms: 3, cpu_ms: Some(1), peak_memory_bytes: None },
            finished_at_ms: 1_700_000_000_003,
        };
        let stored = StoredReceipt { signed: SignedReceipt::sign(receipt, &ring), digest_checked: true };
        (serde_json::to_value(&stored).unwrap(), output)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_real_ed25519_receipt_verifies_and_fails_after_any_byte_of_its_signed_bytes_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (view, output) = signed_by(Keypair::generate_ed25519());
        let file = write(dir.path(), "r.json", view.to_string().as_bytes());
        let out = write(dir.path(), "out", &output);
        let verified = verify(&file, Some(&out)).unwrap();
        assert_eq!(verified.output_matches, Some(true));
        let signed = from_hex(view["signed"].as_str().unwrap()).unwrap();
        for i in 0..signed.len() {
            let mut changed = signed.clone();
            changed[i] ^= 0x01;
            let mut v = view.clone();
            v["signed"] = json!(to_hex(&changed));
            let file = write(dir.path(), "changed.json", v.to_string().as_bytes());
            assert!(verify(&file, None).is_err(), "byte {i} changed and still verified");
        }
        let signature = from_hex(view["signature"].as_str().unwrap()).unwrap();
        for i in 0..signature.len() {
            let mut changed = signature.clone();
            changed[i] ^= 0x80;
            let mut v = view.clone();
            v["signature"] = json!(to_hex(&changed));
            let file = write(dir.path(), "changed.json", v.to_string().as_bytes());
            assert!(verify(&file, None).is_err(), "signature byte {i} changed and still verified");
        }
    }

    #[test]
    fn a_lie_anywhere_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (view, output) = signed_by(Keypair::generate_ed25519());
        // The view's readable fields edited to claim another exit.
        let mut v = view.clone();
        v["exit_code"] = json!(1);
        let file = write(dir.path(), "v.json", v.to_string().as_bytes());
        assert!(verify(&file, None).unwrap_err().contains("exit_code"));
        // Other output bytes than the host signed.
        let file = write(dir.path(), "r.json", view.to_string().as_bytes());
        let mut other = output.clone();
        other[0] ^= 1;
        let out = write(dir.path(), "out", &other);
        assert!(verify(&file, Some(&out)).unwrap_err().contains("sha256"));
        // A task record stating another result than its receipt.
        let record = json!({"id": view["task"], "attempt": 1, "exit_code": 3, "receipt": view});
        let file = write(dir.path(), "t.json", record.to_string().as_bytes());
        assert!(verify(&file, None).unwrap_err().contains("exit code"));
        let record = json!({"id": view["task"], "attempt": 1, "exit_code": 0, "receipt": view});
        let file = write(dir.path(), "t.json", record.to_string().as_bytes());
        assert!(verify(&file, None).is_ok());
        // No receipt, or no JSON at all.
        let file = write(dir.path(), "n.json", br#"{"id": "x", "receipt": null}"#);
        assert!(verify(&file, None).unwrap_err().contains("no receipt"));
        let file = write(dir.path(), "g.json", b"\xff garbage");
        assert!(verify(&file, None).is_err());
        // Signed by another key than the host it names.
        let (mut v, _) = signed_by(Keypair::generate_ed25519());
        let (other, _) = signed_by(Keypair::generate_ed25519());
        v["signature"] = other["signature"].clone();
        let file = write(dir.path(), "k.json", v.to_string().as_bytes());
        assert!(verify(&file, None).unwrap_err().contains("signature"));
        // A verifier signs nothing.
        assert!(PeerIdVerifier.sign(b"x").is_empty());
    }
}
