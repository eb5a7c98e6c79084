//! Receipts in the store: a task keeps its receipt across a reopen, and the records written
//! before tasks carried receipts (or hosted runs their evidence) still decode, as `None`.

use orgmesh_protocol::receipt::{Receipt, SignedReceipt, StoredReceipt, Usage};
use orgmesh_protocol::task::TaskOrigin;
use orgmesh_protocol::{Attempt, Org, PeerId, Task, TaskId, TaskSpec, Timestamp};

use crate::schema::{decode_run, decode_task};
use crate::{HostedRun, RunEvidence, Store};

fn task() -> Task {
    let origin =
        TaskOrigin { peer_id: PeerId::new("12D3KooWorigin").unwrap(), org: Org::new("acme").unwrap() };
    let mut t = Task::new(TaskId::new(5, 6), TaskSpec::new(vec!["true".into()]), origin, Timestamp(5));
    t.history = vec![];
    t.exit_code = Some(0);
    t
}

fn receipt() -> StoredReceipt {
    let receipt = Receipt {
        task: TaskId::new(5, 6),
        attempt: Attempt(1),
        origin: PeerId::new("12D3KooWorigin").unwrap(),
        host: PeerId::new("12D3KooWhost").unwrap(),
        exit_code: Some(0),
        error: None,
        cancelled: false,
        log_len: 3,
        output_sha256: [9; 32],
        usage: Usage { wall_ms: 5, cpu_ms: None, peak_memory_bytes: Some(4096) },
        finished_at_ms: 10,
    };
    StoredReceipt { signed: SignedReceipt { receipt, signature: vec![1; 64] }, digest_checked: true }
}

/// `Task` as postcard wrote it before `receipt`: the current encoding without its last byte
/// (the `None` tag), which is exactly what the older layout was.
#[test]
fn a_task_written_before_receipts_decodes_with_none() {
    let t = task();
    let mut bytes = postcard::to_allocvec(&t).unwrap();
    assert_eq!(bytes.pop(), Some(0), "receipt is last, and None is one zero byte");
    assert_eq!(decode_task(&bytes).unwrap(), t);
    // Bytes that are neither layout are corruption, not a guess.
    bytes.push(7);
    bytes.push(7);
    assert!(decode_task(&bytes).is_err());
    assert!(decode_task(&[]).is_err());
}

#[test]
fn a_run_written_before_evidence_decodes_with_none() {
    let run = HostedRun {
        task: TaskId::new(1, 2),
        attempt: Attempt(3),
        origin: PeerId::new("12D3KooWorigin").unwrap(),
        pgid: Some(1),
        outcome: None,
        legacy_output: Vec::new(),
        acked: 4,
        evidence: None,
    };
    let mut bytes = postcard::to_allocvec(&run).unwrap();
    assert_eq!(bytes.pop(), Some(0));
    assert_eq!(decode_run(&bytes).unwrap(), run);
    let with = HostedRun {
        evidence: Some(RunEvidence {
            output_sha256: [1; 32],
            output_len: 9,
            wall_ms: 2,
            cpu_ms: Some(1),
            peak_memory_bytes: None,
            finished_at_ms: 3,
        }),
        ..run
    };
    assert_eq!(decode_run(&postcard::to_allocvec(&with).unwrap()).unwrap(), with);
}

#[tokio::test]
async fn a_tasks_receipt_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orgmesh.redb");
    let mut t = task();
    t.receipt = Some(receipt());
    {
        let store = Store::open(&path).unwrap();
        store.put_task(t.clone(), vec![]).await.unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.task(t.id).unwrap(), Some(t));
}
