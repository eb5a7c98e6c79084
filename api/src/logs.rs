//! `GET /v1/tasks/{id}/logs`: a task's output as `text/plain` from `?offset=N`, or with
//! `?follow=true` as SSE until the task ends. Each followed event's `id:` is the byte offset just
//! after it, so a reconnect with `Last-Event-ID` resumes with nothing lost or repeated.
//!
//! Offsets always count raw bytes of the stored log. The SSE text is a rendering of those bytes:
//! chunks are cut on UTF-8 boundaries, invalid bytes become U+FFFD, and CR / CRLF become LF
//! (SSE cannot carry a CR). This module must never move an offset past a byte it did not send.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use orgmesh_protocol::{TaskId, TaskStatus};
use orgmesh_store::{Notification, StoreReader};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::params::task_id;
use crate::problem::Problem;
use crate::shutdown::Shutdown;
use crate::sse::{KEEP_ALIVE, last_event_id};
use crate::state::ApiState;

/// Bytes read from the store at a time (one plain-body frame, at most one SSE event).
const CHUNK: usize = 32 * 1024;

/// `GET /v1/tasks/{id}/logs[?offset=N][&follow=true]`.
#[utoipa::path(get, path = "/v1/tasks/{id}/logs", tag = "tasks", security(("bearer" = ["read"])),
    params(
        ("id" = String, Path, description = "Task id"),
        ("offset" = Option<u64>, Query, description = "Start at this byte"),
        ("follow" = Option<bool>, Query, description = "Stream as SSE until the task ends; event ids are byte offsets"),
    ),
    responses(
        (status = 200, description = "The output so far (text/plain), or an SSE stream with follow=true", content_type = "text/plain"),
        (status = 404, description = "No such task here", body = crate::schema::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn logs(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    shutdown: Shutdown,
) -> Result<Response, Problem> {
    let id = task_id(path)?;
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let mut offset = match query.get("offset") {
        None => 0,
        Some(s) => {
            s.parse::<u64>().map_err(|_| Problem::bad_request("offset: must be a byte offset (0 or more)"))?
        }
    };
    let follow = match query.get("follow").map(String::as_str) {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes" | "") => true,
        Some(_) => return Err(Problem::bad_request("follow: must be true or false")),
    };
    if !follow {
        if state.store.task(id)?.is_none() {
            return Err(no_task(id));
        }
        let content_type = HeaderValue::from_static("text/plain; charset=utf-8");
        return Ok((
            [(header::CONTENT_TYPE, content_type)],
            Body::from_stream(plain(state.store, id, offset)),
        )
            .into_response());
    }
    // A reconnecting EventSource sends the last id it saw: it wins over the URL's offset.
    if let Some(last) = last_event_id(&headers, "a byte offset")? {
        offset = last;
    }
    // Subscribe before the first read: whatever commits after that read is then announced to us.
    let rx = state.store.subscribe();
    if state.store.task(id)?.is_none() {
        return Err(no_task(id));
    }
    let follower = Follower { store: state.store, task: id, rx, offset, done: false };
    let events = stream::unfold(follower, |mut f| async move {
        f.next_event().await.map(|e| (Ok::<Event, Infallible>(e), f))
    })
    .take_until(shutdown.wait());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

fn no_task(id: TaskId) -> Problem {
    Problem::not_found(format!("no task {id} at this node"))
}

/// The stored log from `offset` to its end, in `CHUNK`-sized frames.
fn plain(store: StoreReader, task: TaskId, offset: u64) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    stream::unfold(Some(offset), move |at| {
        let store = store.clone();
        async move {
            let at = at?;
            match store.read_log(task, at, CHUNK) {
                Ok(buf) if buf.is_empty() => None,
                Ok(buf) => {
                    let next = at + buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), Some(next)))
                }
                // Headers are gone already: all we can do is cut the body short.
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    })
}

/// One follower's position in one task's log.
struct Follower {
    store: StoreReader,
    task: TaskId,
    rx: broadcast::Receiver<Notification>,
    /// Bytes sent so far, counted from the log's start.
    offset: u64,
    done: bool,
}

impl Follower {
    /// The next SSE event: a log chunk, or `end` once the task ended and every byte went out.
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            // Status first: if it is terminal, every byte logged before it is already readable.
            let status = match self.store.task(self.task) {
                Ok(Some(t)) => t.status,
                Ok(None) => return self.finish(None),
                Err(e) => {
                    tracing::warn!(task = %self.task, error = %e, "log follow: store read failed");
                    return self.finish(None);
                }
            };
            let read = self.store.log_len(self.task).and_then(|len| {
                let want = len.saturating_sub(self.offset).min(CHUNK as u64) as usize;
                let buf =
                    if want == 0 { Vec::new() } else { self.store.read_log(self.task, self.offset, want)? };
                Ok((len, buf))
            });
            let (len, buf) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(task = %self.task, error = %e, "log follow: store read failed");
                    return self.finish(None);
                }
            };
            let last = status.is_terminal() && self.offset + buf.len() as u64 >= len;
            let n = sendable_len(&buf, last);
            if n > 0 {
                self.offset += n as u64;
                let event =
                    Event::default().event("log").id(self.offset.to_string()).data(sse_text(&buf[..n]));
                return Some(event);
            }
            if last {
                return self.finish(Some(status));
            }
            if !self.wait_for_change().await {
                return self.finish(None);
            }
        }
    }

    /// Waits until something may have changed for this task; false when the store went away.
    async fn wait_for_change(&mut self) -> bool {
        loop {
            match self.rx.recv().await {
                Ok(Notification::Log { task, .. } | Notification::Task { task, .. }) if task == self.task => {
                    return true;
                }
                Ok(_) => {}
                // We missed notifications, maybe ours: reading again is always safe.
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => return false,
            }
        }
    }

    /// Ends the stream, with an `end` event when the task ended.
    fn finish(&mut self, status: Option<TaskStatus>) -> Option<Event> {
        self.done = true;
        let status = status?;
        let data = serde_json::json!({ "status": status }).to_string();
        Some(Event::default().event("end").id(self.offset.to_string()).data(data))
    }
}

/// How many leading bytes of `buf` may go out now. Unless this is the log's final piece, an
/// incomplete trailing UTF-8 sequence and a trailing CR (whose LF may come next) wait for more.
fn sendable_len(buf: &[u8], last: bool) -> usize {
    if last {
        return buf.len();
    }
    let mut n = buf.len() - incomplete_utf8_tail(buf);
    if n > 0 && buf[n - 1] == b'\r' {
        n -= 1;
    }
    n
}

/// Length of a UTF-8 sequence cut short at the end of `buf` (0 when it ends on a boundary).
fn incomplete_utf8_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for its lead
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// The text an SSE client reassembles for these bytes: lossy UTF-8 with CR and CRLF as LF.
fn sse_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_tails_are_held_back_until_the_end() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail(&euro[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&[b'a', euro[0], euro[1]]), 2);
        assert_eq!(incomplete_utf8_tail(euro), 0);
        let crab = "🦀".as_bytes(); // 4 bytes
        assert_eq!(incomplete_utf8_tail(&crab[..3]), 3);
        assert_eq!(incomplete_utf8_tail(crab), 0);
        // Stray continuation bytes are invalid, not incomplete: send them (lossy).
        assert_eq!(incomplete_utf8_tail(&[0x80, 0x80, 0x80]), 0);
        assert_eq!(sendable_len(&[b'a', euro[0]], false), 1);
        assert_eq!(sendable_len(&[b'a', euro[0]], true), 2);
        assert_eq!(sendable_len(b"a\r", false), 1);
        assert_eq!(sendable_len(b"a\r", true), 2);
        assert_eq!(sendable_len(b"\r", false), 0);
    }

    #[test]
    fn sse_text_normalizes_line_ends_and_replaces_invalid_bytes() {
        assert_eq!(sse_text(b"a\r\nb\rc\n"), "a\nb\nc\n");
        assert_eq!(sse_text(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
    }
}
