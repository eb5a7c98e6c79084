//! What the two server-sent-event streams (`/v1/tasks/{id}/logs?follow=true` and `/v1/events`)
//! share: how often an idle stream shows it is alive, and how a reconnecting client's
//! `Last-Event-ID` is read. A leaf module, so neither stream depends on the other; it must never
//! decide what an event id means (a byte offset or a sequence number: each stream says).

use std::time::Duration;

use axum::http::HeaderMap;

use crate::problem::Problem;

/// How often an idle SSE stream sends a comment, so proxies and clients see it alive.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `Last-Event-ID` a reconnecting `EventSource` sends, as a number; 400 (saying the id must
/// be `must_be`) when it is not one.
pub(crate) fn last_event_id(headers: &HeaderMap, must_be: &str) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| Problem::bad_request(format!("Last-Event-ID: must be {must_be}")))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn last_event_id_is_a_number_or_a_400() {
        let with = |v: &'static [u8]| {
            let mut h = HeaderMap::new();
            h.insert("last-event-id", HeaderValue::from_bytes(v).unwrap());
            last_event_id(&h, "a byte offset")
        };
        assert_eq!(last_event_id(&HeaderMap::new(), "x").unwrap(), None);
        assert_eq!(with(b" 42 ").unwrap(), Some(42));
        for bad in [&b"-1"[..], b"", b"4 2", b"18446744073709551616", b"\xff"] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
