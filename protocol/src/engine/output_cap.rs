//! The one cap on a task's output and the marker a log cut at that cap ends with. The host's
//! executor applies it per attempt (its spool), the origin per task (its store); never more.

/// Default cap on one attempt's output, and on what the origin stores per task, in MiB.
pub const DEFAULT_OUTPUT_CAP_MB: u64 = 64;

/// The line a log ends with when it was cut at `cap_bytes`: it says that it was cut, where, and
/// which setting moves the cap, so nobody mistakes a cut log for a complete one.
pub fn marker(cap_bytes: u64) -> Vec<u8> {
    format!("\n[orgmesh: output cut at {cap_bytes} bytes, the cap set by executor.output_cap_mb]\n")
        .into_bytes()
}

/// What the origin stores of one log chunk of a task whose log is capped at `cap` bytes: the
/// chunk starts `at` bytes into the task's log (every attempt's output, one after the other);
/// `stored` tells how long the stored log is (read only when the chunk reaches past the cap).
/// `Some((at, bytes))` is what to append; `None` means store nothing and acknowledge the chunk,
/// because the log was cut already. The cut log is the first `cap` bytes and the marker once,
/// so it is never longer than `cap + marker(cap).len()`, whatever a host sends.
///
/// Only the stored log being longer than `cap` means it was cut: nothing else writes past the
/// cap. A stale `stored` (appends still in flight) is at most shorter than the truth, so the
/// worst it causes is a write the store skips as a resend, or a gap it reports: never a second
/// marker, since the store keeps bytes before its own length as they are.
pub fn cap_chunk(
    cap: u64,
    at: u64,
    mut data: Vec<u8>,
    stored: impl FnOnce() -> u64,
) -> Option<(u64, Vec<u8>)> {
    let end = at.saturating_add(data.len() as u64);
    if end <= cap {
        return Some((at, data));
    }
    if stored() > cap {
        return None;
    }
    // The part below the cap, then the marker right at the cap. A chunk that starts past the cap
    // (bytes between the cap and it never arrived) still puts the marker at the cap: the store
    // reports a gap if the log does not reach the cap yet, and the host resends from there.
    let keep = usize::try_from(cap.saturating_sub(at)).unwrap_or(usize::MAX).min(data.len());
    data.truncate(keep);
    data.extend_from_slice(&marker(cap));
    Some((at.min(cap), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's append rule, in short: a gap is refused, bytes it has are skipped.
    fn append(log: &mut Vec<u8>, at: u64, bytes: &[u8]) -> Result<(), u64> {
        let have = log.len() as u64;
        if at > have {
            return Err(have);
        }
        let skip = usize::try_from(have - at).unwrap_or(usize::MAX).min(bytes.len());
        log.extend_from_slice(&bytes[skip..]);
        Ok(())
    }

    fn feed(log: &mut Vec<u8>, cap: u64, at: u64, chunk: &[u8]) -> Result<(), u64> {
        let stored = log.len() as u64;
        match cap_chunk(cap, at, chunk.to_vec(), || stored) {
            Some((at, bytes)) => append(log, at, &bytes),
            None => Ok(()),
        }
    }

    #[test]
    fn a_log_past_the_cap_is_cut_there_with_the_marker_once() {
        let cap = 100;
        let mut log = Vec::new();
        let mut at = 0;
        // 1,000 chunks of 7 bytes: 7,000 bytes sent, 100 kept.
        for _ in 0..1000 {
            feed(&mut log, cap, at, b"abcdefg").unwrap();
            at += 7;
        }
        let mark = marker(cap);
        assert_eq!(log.len(), 100 + mark.len());
        assert!(log.ends_with(&mark));
        assert_eq!(&log[..7], b"abcdefg");
        assert_eq!(log.windows(mark.len()).filter(|w| *w == mark.as_slice()).count(), 1);
    }

    #[test]
    fn resends_gaps_and_a_second_attempt_change_nothing_once_cut() {
        let cap = 10;
        let mut log = Vec::new();
        feed(&mut log, cap, 0, b"01234").unwrap();
        // A chunk past the cap with a hole before it: the store reports where the log ends.
        assert_eq!(feed(&mut log, cap, 12, b"zz"), Err(5));
        feed(&mut log, cap, 5, b"56789ABCD").unwrap();
        let cut = log.clone();
        assert_eq!(&cut[..10], b"0123456789");
        // A resend of either chunk, a straddling chunk seen with a stale length, and a second
        // attempt's output (starting past the cap) all leave the cut log as it is.
        feed(&mut log, cap, 0, b"01234").unwrap();
        feed(&mut log, cap, 5, b"56789ABCD").unwrap();
        assert_eq!(cap_chunk(cap, 8, b"89AB".to_vec(), || 0).map(|(at, _)| at), Some(8));
        append(&mut log, 8, &cap_chunk(cap, 8, b"89AB".to_vec(), || 0).unwrap().1).unwrap();
        feed(&mut log, cap, cut.len() as u64, b"second attempt").unwrap();
        assert_eq!(log, cut);
    }

    #[test]
    fn a_log_that_ends_exactly_at_the_cap_is_not_marked() {
        let mut log = Vec::new();
        feed(&mut log, 4, 0, b"ab").unwrap();
        feed(&mut log, 4, 2, b"cd").unwrap();
        assert_eq!(log, b"abcd");
        // One more byte, even much later, cuts it.
        feed(&mut log, 4, 4, b"e").unwrap();
        assert!(log.starts_with(b"abcd") && log.ends_with(&marker(4)));
    }
}
