//! The executor's stand-in: what a simulated host does where the node runs a process. An attempt
//! "runs" for its arrival's duration and prints a deterministic output (lines naming its task and
//! attempt, so bytes of one attempt can never pass for another's), spooled as it goes. It must
//! never decide anything about a task's life: it answers the engine's `StartAttempt`,
//! `StopAttempt` and `ReadLog`, and says when a process ended.

use orgmesh_protocol::{Attempt, TaskId};

/// An attempt's process, running on a live host (it dies with the process).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Process {
    /// When it started, global µs.
    pub(crate) started_us: u64,
    /// How long it runs.
    pub(crate) duration_us: u64,
    /// Its CPU, for the utilization figure.
    pub(crate) cpu_millis: u32,
    /// What it prints by the end.
    pub(crate) output_bytes: u64,
}

impl Process {
    /// Bytes spooled by `now` (global µs): the output comes at an even pace.
    pub(crate) fn spooled_by(&self, now: u64) -> u64 {
        let elapsed = now.saturating_sub(self.started_us).min(self.duration_us);
        let share = elapsed as f64 / self.duration_us.max(1) as f64;
        ((self.output_bytes as f64 * share) as u64).min(self.output_bytes)
    }
}

/// The whole output an attempt of `task` prints if it runs for `len` bytes.
pub(crate) fn output(task: TaskId, attempt: Attempt, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut line = 0u64;
    while (out.len() as u64) < len {
        out.extend_from_slice(format!("{task} attempt {} line {line:04}\n", attempt.0).as_bytes());
        line += 1;
    }
    out.truncate(usize::try_from(len).unwrap_or(usize::MAX));
    out
}

/// Up to `max` bytes of a spool of `len` bytes, from `offset` (empty past its end).
pub(crate) fn read(task: TaskId, attempt: Attempt, len: u64, offset: u64, max: usize) -> Vec<u8> {
    let all = output(task, attempt, len);
    let from = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
    let to = from.saturating_add(max).min(all.len());
    all[from..to].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TaskId {
        TaskId::new(1_800_000_000_000, 3)
    }

    #[test]
    fn outputs_are_exact_in_length_and_differ_by_attempt() {
        assert_eq!(output(id(), Attempt(1), 0), b"");
        assert_eq!(output(id(), Attempt(1), 1000).len(), 1000);
        assert_ne!(output(id(), Attempt(1), 100), output(id(), Attempt(2), 100));
        // A prefix of a longer output: a spool grows, it is never rewritten.
        assert_eq!(output(id(), Attempt(1), 1000)[..300], output(id(), Attempt(1), 300)[..]);
    }

    #[test]
    fn reads_stop_at_the_spool_and_the_limit() {
        let all = output(id(), Attempt(1), 500);
        assert_eq!(read(id(), Attempt(1), 500, 100, 50), all[100..150]);
        assert_eq!(read(id(), Attempt(1), 500, 480, 50), all[480..]);
        assert!(read(id(), Attempt(1), 500, 500, 50).is_empty());
        assert!(read(id(), Attempt(1), 500, u64::MAX, usize::MAX).is_empty());
    }

    #[test]
    fn a_process_spools_at_an_even_pace_and_never_past_its_output() {
        let p = Process { started_us: 1_000, duration_us: 1_000, cpu_millis: 1, output_bytes: 400 };
        assert_eq!(p.spooled_by(0), 0);
        assert_eq!(p.spooled_by(1_500), 200);
        assert_eq!(p.spooled_by(10_000), 400);
        let instant = Process { duration_us: 0, ..p };
        assert_eq!(instant.spooled_by(1_000), 0);
    }
}
