//! `GET /v1/events`: the node's event log as SSE. Every event carries `id: <seq>`,
//! `event: <kind>` and `data: <json>`. A stream starts after `Last-Event-ID`, else after
//! `?since=SEQ`, else with the last `?tail=N` events (the dashboard's first view), else at the
//! live end; `?kinds=a,b.` filters by name (exact, or prefix when the
//! entry ends in `.` or `.*`). The one rule: between the starting point and the stream's end no
//! event is skipped and none is sent twice, whatever the broadcast channel does.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, stream};
use orgmesh_store::{StoreReader, StoredEvent};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Sleep};

use crate::fanout::{Batch, encode, ready};
use crate::problem::Problem;
use crate::shutdown::Shutdown;
use crate::sse::{KEEP_ALIVE, last_event_id};
use crate::state::ApiState;

/// Events read from the store per catch-up page.
const PAGE: usize = 1000;

/// Most events `?tail=` replays.
const MAX_TAIL: u64 = 10_000;

/// A client's pending frames are written together up to this size (one write, not one per
/// event: with a thousand clients the per-event writes were the cost).
const MAX_CHUNK: usize = 256 * 1024;

/// What an idle stream sends every [`KEEP_ALIVE`]: an SSE comment.
const KEEP_ALIVE_COMMENT: &[u8] = b":\n\n";

/// `GET /v1/events[?since=SEQ|?tail=N][&kinds=...]`, honouring `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = ["read"])),
    params(
        ("since" = Option<u64>, Query, description = "Start after this sequence number"),
        ("tail" = Option<u64>, Query, description = "Start this many events back from the end (at most 10,000); `since` and `Last-Event-ID` take precedence"),
        ("kinds" = Option<String>, Query, description = "Comma-separated kinds; `task.` matches a prefix"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number"),
    ),
    responses((status = 200, description = "Server-sent events: id (sequence), event (kind), data (JSON)", content_type = "text/event-stream")))]
pub(crate) async fn events(
    State(state): State<ApiState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    shutdown: Shutdown,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let last_event_id = last_event_id(&headers, "an event sequence number")?;
    let since = match query.get("since") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>().map_err(|_| Problem::bad_request("since: must be an event sequence number"))?,
        ),
    };
    let tail = match query.get("tail") {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n <= MAX_TAIL => Some(n),
            _ => return Err(Problem::bad_request(format!("tail: must be an integer from 0 to {MAX_TAIL}"))),
        },
    };
    let filter = KindFilter::parse(query.get("kinds").map(String::as_str));
    // Subscribe before reading the cursor or the log: every later commit reaches `rx`.
    let rx = state.events.subscribe(&state.store)?;
    let cursor = match last_event_id.or(since) {
        Some(seq) => seq,
        // `tail` counts events before filtering: it says how far back to start, not how many match.
        None => state.store.last_seq()?.saturating_sub(tail.unwrap_or(0)),
    };
    let tail = Tail {
        store: state.store,
        rx,
        cursor,
        catching_up: true,
        queue: VecDeque::new(),
        filter,
        last_write: Instant::now(),
        keep_alive: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
    };
    let chunks =
        stream::unfold(
            tail,
            |mut t| async move { t.next_chunk().await.map(|c| (Ok::<_, Infallible>(c), t)) },
        )
        .take_until(shutdown.wait());
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Which event kinds a client asked for.
#[derive(Debug, Clone, Default)]
struct KindFilter {
    /// Empty: everything.
    entries: Vec<String>,
}

impl KindFilter {
    fn parse(param: Option<&str>) -> Self {
        let entries = param
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.strip_suffix('*').unwrap_or(s).to_owned())
            .collect();
        Self { entries }
    }

    fn is_all(&self) -> bool {
        self.entries.is_empty()
    }

    fn matches(&self, kind: &str) -> bool {
        self.entries.is_empty()
            || self.entries.iter().any(|e| {
                if e.ends_with('.') {
                    kind.starts_with(e.as_str())
                } else {
                    // `task` also means the whole `task.` family.
                    kind == e || kind.strip_prefix(e.as_str()).is_some_and(|rest| rest.starts_with('.'))
                }
            })
    }
}

/// One subscriber's position in the event log.
struct Tail {
    store: StoreReader,
    rx: broadcast::Receiver<Arc<Batch>>,
    /// Sequence number of the last event passed on (sent or filtered out).
    cursor: u64,
    /// Whether the store may hold events after `cursor` that the channel will not bring.
    catching_up: bool,
    /// Read from the store, not yet passed on.
    queue: VecDeque<StoredEvent>,
    filter: KindFilter,
    /// When this stream last wrote anything.
    last_write: Instant,
    /// Fires when a keep-alive may be due (see [`Tail::wait`]).
    keep_alive: Pin<Box<Sleep>>,
}

/// Frames gathered for one write.
#[derive(Default)]
struct Chunk {
    parts: Vec<Bytes>,
    len: usize,
}

impl Chunk {
    fn push(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.parts.push(bytes);
    }

    fn full(&self) -> bool {
        self.len >= MAX_CHUNK
    }

    /// The gathered frames as one buffer (the shared frame itself when there is one).
    fn take(&mut self) -> Option<Bytes> {
        match self.parts.len() {
            0 => None,
            1 => self.parts.pop(),
            _ => {
                let mut out = Vec::with_capacity(self.len);
                for p in self.parts.drain(..) {
                    out.extend_from_slice(&p);
                }
                Some(Bytes::from(out))
            }
        }
    }
}

impl Tail {
    /// What to write next: every event that is ready, as one chunk, or a keep-alive comment
    /// after [`KEEP_ALIVE`] of silence. `None`: the stream ends (the store closed or failed).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let chunk = self.gather().await;
        self.last_write = Instant::now();
        chunk
    }

    /// The next batch; `None` once nothing was written for [`KEEP_ALIVE`]. The keep-alive timer
    /// is armed once per interval and re-armed only when it fires early, not per wait: with a
    /// thousand clients a timer per wait was a timer per client per commit.
    async fn wait(&mut self) -> Option<Result<Arc<Batch>, RecvError>> {
        loop {
            tokio::select! {
                received = self.rx.recv() => return Some(received),
                () = &mut self.keep_alive => {
                    let due = self.last_write + KEEP_ALIVE;
                    if Instant::now() >= due {
                        self.keep_alive.as_mut().reset(Instant::now() + KEEP_ALIVE);
                        return None;
                    }
                    self.keep_alive.as_mut().reset(due);
                }
            }
        }
    }

    /// Every event that is ready, as one chunk; waits only when none is.
    async fn gather(&mut self) -> Option<Bytes> {
        let mut chunk = Chunk::default();
        loop {
            while let Some(e) = self.queue.pop_front() {
                if e.seq <= self.cursor {
                    continue;
                }
                self.cursor = e.seq;
                if self.filter.matches(&e.kind) {
                    chunk.push(encode(&e));
                    if chunk.full() {
                        return chunk.take();
                    }
                }
            }
            if self.catching_up {
                match self.store.events_after(self.cursor, PAGE) {
                    Ok(page) if page.is_empty() => self.catching_up = false,
                    Ok(page) => {
                        self.queue.extend(page);
                        if !chunk.parts.is_empty() {
                            return chunk.take();
                        }
                        // A long filtered catch-up must not hog this runtime thread.
                        tokio::task::yield_now().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream: store read failed");
                        return chunk.take();
                    }
                }
                continue;
            }
            let received = match ready(&mut self.rx) {
                Some(r) => r,
                None if !chunk.parts.is_empty() => return chunk.take(),
                None => match self.wait().await {
                    Some(r) => r,
                    None => return Some(Bytes::from_static(KEEP_ALIVE_COMMENT)),
                },
            };
            match received {
                Ok(batch) => {
                    if batch.last_seq() <= self.cursor {
                        // Already passed on (read from the store while catching up).
                    } else if batch.first_seq() > self.cursor + 1 {
                        // A hole between us and this batch: the store has it all, in order.
                        self.catching_up = true;
                    } else if batch.first_seq() == self.cursor + 1 && self.filter.is_all() {
                        self.cursor = batch.last_seq();
                        chunk.push(batch.joined.clone());
                    } else {
                        let after = self.cursor;
                        for frame in batch.frames.iter().filter(|f| f.seq > after) {
                            self.cursor = frame.seq;
                            if self.filter.matches(&frame.kind) {
                                chunk.push(frame.bytes.clone());
                            }
                        }
                    }
                    if chunk.full() {
                        return chunk.take();
                    }
                }
                // Dropped frames: read them from the store.
                Err(RecvError::Lagged(_)) => self.catching_up = true,
                Err(RecvError::Closed) => return chunk.take(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_filter_exact_and_prefix() {
        let all = KindFilter::parse(None);
        assert!(all.matches("peer.dead"));
        let f = KindFilter::parse(Some("task.created, peer.,node.*"));
        assert!(f.matches("task.created"));
        assert!(!f.matches("task.created2"));
        assert!(!f.matches("task.failed"));
        assert!(f.matches("peer.dead"));
        assert!(f.matches("node.draining"));
        let family = KindFilter::parse(Some("task"));
        assert!(family.matches("task.running"));
        assert!(!family.matches("tasks.x"));
    }
}
