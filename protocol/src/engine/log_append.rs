//! The append rule every store of a task's log follows (redb in `store/`, the simulator's and the
//! harness's in memory): an origin's log never has a hole, and a resend never duplicates bytes.
//! Pure arithmetic; it must never touch storage.

/// Which of `data`, written at byte `at` of a log holding `have` bytes, is new: `Ok` with the bytes
/// to append (empty when all are held already: a resend after a lost ack), or `Err(have)` when the
/// write would leave a hole after the held bytes.
pub fn new_log_bytes(have: u64, at: u64, data: &[u8]) -> Result<&[u8], u64> {
    if at > have {
        return Err(have);
    }
    let held = usize::try_from(have - at).unwrap_or(usize::MAX);
    Ok(data.get(held..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::new_log_bytes;

    #[test]
    fn a_write_at_the_end_is_appended_whole() {
        assert_eq!(new_log_bytes(3, 3, b"abc"), Ok(&b"abc"[..]));
        assert_eq!(new_log_bytes(0, 0, b""), Ok(&b""[..]));
    }

    #[test]
    fn held_bytes_are_skipped_and_only_the_rest_appended() {
        assert_eq!(new_log_bytes(5, 3, b"defgh"), Ok(&b"fgh"[..]));
        assert_eq!(new_log_bytes(8, 3, b"defgh"), Ok(&b""[..]));
        assert_eq!(new_log_bytes(100, 3, b"defgh"), Ok(&b""[..]), "a resend far behind the end adds nothing");
    }

    #[test]
    fn a_write_past_the_end_is_refused_with_the_length_held() {
        assert_eq!(new_log_bytes(3, 4, b"e"), Err(3));
        assert_eq!(new_log_bytes(3, u64::MAX, b"e"), Err(3));
    }
}
