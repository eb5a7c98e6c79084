//! An attempt's output on its way to the spool: the pipe copied on the blocking pool, and the
//! lengths it reaches reported to the event loop. Never keeps the output in memory beyond one read.

use orgmesh_protocol::{Attempt, TaskId};
use tokio::sync::{mpsc, watch};

use super::ExecEvent;

/// Largest read from the task's pipe.
const CHUNK: usize = 64 * 1024;

/// Tells the event loop how long the spool has grown, until the copy ends. Lengths written while
/// the loop was busy are reported as one.
pub(super) async fn report_progress(
    mut progress: watch::Receiver<u64>,
    events: mpsc::Sender<ExecEvent>,
    (task, attempt): (TaskId, Attempt),
) {
    while progress.changed().await.is_ok() {
        let len = *progress.borrow_and_update();
        if events.send(ExecEvent::Spooled { task, attempt, len }).await.is_err() {
            break;
        }
    }
}

/// Copies the output pipe into the spool until end-of-file (every writer closed), publishing each
/// length the spool reaches; returns the final one and the digest of the spool's bytes. Past the cap, or once the spool cannot be
/// written, the pipe is still drained, so the task is never blocked on it. Blocking: runs on
/// tokio's blocking pool.
pub(super) fn pump(
    mut from: std::io::PipeReader,
    mut to: crate::spool::SpoolWriter<std::fs::File>,
    progress: &watch::Sender<u64>,
) -> (u64, [u8; 32]) {
    use std::io::Read;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let before = to.len();
                let len = to.push(&buf[..n]);
                if len != before {
                    progress.send_replace(len);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (to.len(), to.digest())
}
