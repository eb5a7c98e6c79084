//! Result receipts through the engine harness: an honest host's receipt ends up verified with
//! the task at its origin; a lying one (digest of other bytes, another key) is counted and not
//! kept, and the result still arrives; an origin that refuses the protocol gets its result
//! without one. Test-only, like the harness.

use sha2::{Digest, Sha256};

use super::*;
use crate::receipt::SignedReceipt;

/// The digest a fake executor reports for `data`: the true one, or a lying host's.
pub(super) fn digest_of(data: &[u8], lie: Option<&Lie>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    if lie == Some(&Lie::Digest) {
        h.update(b"bytes it never sent");
    }
    h.finalize().into()
}

/// Runs one task from node 0 (acme) on node 1 (globex) and returns it, finished.
fn one_task(w: &mut World) -> (TaskId, Task) {
    w.settle();
    let bytes = LOG_CHUNK + 4321;
    let id = w.submit(ORIGIN, spec_for(&["globex"]), vec![Behaviour::new(1_000, bytes)]);
    assert_eq!(w.finish(ORIGIN, id, 60_000), TaskStatus::Succeeded, "seed {}", w.seed);
    assert_eq!(w.log(ORIGIN, id), output_of(id, Attempt(1), bytes).as_slice());
    (id, w.task(ORIGIN, id).clone())
}

#[test]
fn a_finished_task_keeps_its_hosts_verified_receipt() {
    let mut w = World::new(SEED, &[("acme", 2), ("globex", 2)]);
    let (id, task) = one_task(&mut w);
    let stored = task.receipt.clone().expect("the honest host's receipt is kept");
    assert!(stored.digest_checked);
    let r = &stored.signed.receipt;
    assert_eq!((r.task, r.attempt, r.exit_code, r.cancelled), (id, Attempt(1), Some(0), false));
    assert_eq!((&r.host, &r.origin), (&w.nodes[1].id, &w.nodes[ORIGIN].id));
    assert_eq!(r.log_len, w.log(ORIGIN, id).len() as u64);
    assert_eq!(r.output_sha256, digest_of(w.log(ORIGIN, id), None));
    // Anyone can check it: a verifier holding no key of either node.
    let anyone = InsecureTestKeyring::new(PeerId::new("12D3KooWanyone").expect("base58 test id"));
    assert_eq!(stored.signed.verify(&anyone), Ok(()));
    let bytes = r.signed_bytes();
    assert_eq!(SignedReceipt::verify_parts(&bytes, &stored.signed.signature, &anyone).as_ref(), Ok(r));
    assert_eq!(w.counters(ORIGIN), EngineCounters::default());
    let receipts = w.nodes[1].sent.iter().filter(|(_, s)| s.starts_with("receipt")).count();
    assert_eq!(receipts, 1, "one receipt, answered at once");
    // Delivered, it is owed no more: the host forgets the attempt.
    w.run_for(2_000);
    assert!(w.nodes[1].store.runs.is_empty());
}

#[test]
fn a_task_run_on_its_origin_keeps_a_receipt_too() {
    let mut w = World::new(SEED, &[("acme", 2), ("globex", 2)]);
    w.settle();
    let id = w.submit(ORIGIN, spec_for(&["acme"]), vec![Behaviour::new(500, 999)]);
    assert_eq!(w.finish(ORIGIN, id, 60_000), TaskStatus::Succeeded);
    let stored = w.task(ORIGIN, id).receipt.clone().expect("a receipt from itself");
    assert_eq!(stored.signed.receipt.host, w.nodes[ORIGIN].id);
    assert!(stored.digest_checked);
}

fn lying_host(lie: Lie) {
    let mut w = World::new(SEED, &[("acme", 2), ("globex", 2)]);
    w.lies.insert(1, lie);
    w.restart(1);
    let (_, task) = one_task(&mut w);
    assert_eq!(task.receipt, None, "{lie:?}: a lying receipt is not kept");
    assert_eq!(task.exit_code, Some(0), "{lie:?}: the result still arrives");
    assert_eq!(w.counters(ORIGIN).bad_receipts, 1, "{lie:?}");
    w.run_for(2_000);
    assert!(w.nodes[1].store.runs.is_empty(), "{lie:?}: the host gave the refused receipt up");
}

#[test]
fn a_receipt_whose_digest_is_not_of_the_output_sent_is_counted_and_dropped() {
    lying_host(Lie::Digest);
}

#[test]
fn a_receipt_signed_by_another_key_is_counted_and_dropped() {
    lying_host(Lie::Key);
}

#[test]
fn an_origin_that_refuses_receipts_still_gets_the_result() {
    let mut w = World::new(SEED, &[("acme", 2), ("globex", 2)]);
    w.lies.insert(ORIGIN, Lie::Old);
    let (_, task) = one_task(&mut w);
    assert_eq!(task.receipt, None);
    assert_eq!(w.counters(ORIGIN).bad_receipts, 0);
    let receipts = w.nodes[1].sent.iter().filter(|(_, s)| s.starts_with("receipt")).count();
    assert_eq!(receipts, 3, "a few tries, then the result without one");
}

/// A host whose `Finished` states another exit code than the receipt it signed: the result
/// is taken from `Finished` (as before receipts), the contradicting receipt is not kept.
#[test]
fn a_receipt_that_disagrees_with_the_reported_result_is_dropped() {
    let mut w = World::new(SEED, &[("acme", 2), ("globex", 2)]);
    w.lies.insert(1, Lie::Result);
    w.settle();
    let id = w.submit(ORIGIN, spec_for(&["globex"]), vec![Behaviour::new(1_000, 100)]);
    assert_eq!(w.finish(ORIGIN, id, 60_000), TaskStatus::Failed);
    assert_eq!(w.task(ORIGIN, id).exit_code, Some(1));
    assert_eq!(w.task(ORIGIN, id).receipt, None);
    assert_eq!(w.counters(ORIGIN).bad_receipts, 1);
}

/// An origin that restarted while the output streamed in has not seen all of it: it keeps the
/// receipt (signature and fencing checked) and says that the digest went unchecked.
#[test]
fn an_origin_restarted_mid_output_keeps_the_receipt_with_its_digest_unchecked() {
    let mut w = World::new(SEED, &[("acme", 2), ("hosts", 2), ("hosts", 2)]);
    let bytes = 3 * LOG_CHUNK + 5;
    let (id, host) = running_on_a_host(&mut w, 60, vec![Behaviour::new(6_000, bytes)]);
    assert!(w.run_until(30_000, |w| !w.log(ORIGIN, id).is_empty()));
    w.restart(ORIGIN);
    assert_eq!(w.finish(ORIGIN, id, 60_000), TaskStatus::Succeeded);
    let stored = w.task(ORIGIN, id).receipt.clone().expect("kept");
    assert!(!stored.digest_checked);
    assert_eq!(stored.signed.receipt.host, w.nodes[host].id);
    // The digest is still the true one: a verifier holding the output can check it.
    assert_eq!(stored.signed.receipt.output_sha256, digest_of(w.log(ORIGIN, id), None));
    assert_eq!(w.counters(ORIGIN).bad_receipts, 0);
}

/// Made-up receipts injected while the attempt runs: from another node, naming another origin
/// or host, stating a length not received, for an unknown task. None is kept, the bad ones are
/// counted, and the honest receipt that follows is kept as usual.
#[test]
fn made_up_receipts_are_refused_and_the_honest_one_still_kept() {
    use crate::receipt::{Receipt, Usage};
    let mut w = World::new(SEED, &[("acme", 2), ("hosts", 2), ("hosts", 2)]);
    let bytes = 40_000;
    let (id, host) = running_on_a_host(&mut w, 60, vec![Behaviour::new(8_000, bytes)]);
    let other = 3 - host;
    let made_up = |w: &World, signer: usize, origin: usize, host_field: usize, task: TaskId, log_len: u64| {
        let receipt = Receipt {
            task,
            attempt: Attempt(1),
            origin: w.nodes[origin].id.clone(),
            host: w.nodes[host_field].id.clone(),
            exit_code: Some(0),
            error: None,
            cancelled: false,
            log_len,
            output_sha256: digest_of(&output_of(id, Attempt(1), bytes), None),
            usage: Usage::default(),
            finished_at_ms: 0,
        };
        let keyring = InsecureTestKeyring::new(w.nodes[signer].id.clone());
        Request::Receipt(ReceiptRequest { receipt: SignedReceipt::sign(receipt, &keyring) })
    };
    let all = bytes as u64;
    let stranger = TaskId::new(WALL_EPOCH, 999_999);
    let cases = [
        (other, made_up(&w, other, ORIGIN, other, id, all)),
        (host, made_up(&w, host, other, host, id, all)),
        (host, made_up(&w, other, ORIGIN, other, id, all)),
        (host, made_up(&w, host, ORIGIN, host, id, all)),
        (host, made_up(&w, host, ORIGIN, host, stranger, all)),
    ];
    for (from, request) in cases {
        w.inject(from, ORIGIN, request);
    }
    w.run_for(20);
    let injected: Vec<_> =
        w.exchanges.iter().filter(|x| x.from.is_none()).map(|x| x.response.clone()).collect();
    let r = |x: ReceiptResponse| Some(Response::Receipt(x));
    assert_eq!(
        injected,
        [
            r(ReceiptResponse::Stale { current: Attempt(1) }),
            r(ReceiptResponse::Mismatch),
            r(ReceiptResponse::Mismatch),
            // The whole output has not arrived yet: the length (and digest) are not what was received.
            r(ReceiptResponse::Mismatch),
            r(ReceiptResponse::Unknown),
        ]
    );
    assert_eq!(w.counters(ORIGIN).bad_receipts, 3);
    assert_eq!(w.finish(ORIGIN, id, 60_000), TaskStatus::Succeeded);
    let stored = w.task(ORIGIN, id).receipt.clone().expect("the honest receipt");
    assert_eq!(stored.signed.receipt.host, w.nodes[host].id);
    assert!(stored.digest_checked);
    assert_eq!(w.counters(ORIGIN).bad_receipts, 3);
}
