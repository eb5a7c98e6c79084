//! Encodes each event of the node's log as SSE text once, for every `/v1/events` client, and
//! passes the frames on in sequence order. It must never hide a gap: an event it could not pass
//! on shows up to receivers as a jump in `seq` (or a lag), which sends them to the store.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use orgmesh_store::{Notification, StoreError, StoreReader, StoredEvent};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// Batches a slow client may fall behind before it catches up from the store instead.
const CAPACITY: usize = 4096;

/// Events read from the store per page when the relay fills a gap; also the largest batch.
const PAGE: usize = 1000;

/// One event, encoded.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Position in the event log.
    pub(crate) seq: u64,
    /// Event name, for clients' kind filters.
    pub(crate) kind: String,
    /// `id:`, `event:` and `data:` lines and the blank line that ends them (a slice of the
    /// batch's `joined`).
    pub(crate) bytes: Bytes,
}

/// Consecutive events, encoded: what one wake-up of a client passes on. A client that wants
/// every event writes `joined` as it is, so a thousand clients share one buffer and make one
/// write each per batch.
#[derive(Debug)]
pub(crate) struct Batch {
    /// In sequence order, without gaps; never empty.
    pub(crate) frames: Vec<Frame>,
    /// All frames, one after the other.
    pub(crate) joined: Bytes,
}

impl Batch {
    fn encode<'a>(events: impl IntoIterator<Item = &'a StoredEvent>) -> Option<Self> {
        let mut text = Vec::new();
        let mut spans = Vec::new();
        for e in events {
            let start = text.len();
            encode_into(e, &mut text);
            spans.push((e.seq, e.kind.clone(), start..text.len()));
        }
        let joined = Bytes::from(text);
        let frames: Vec<Frame> =
            spans.into_iter().map(|(seq, kind, r)| Frame { seq, kind, bytes: joined.slice(r) }).collect();
        (!frames.is_empty()).then_some(Self { frames, joined })
    }

    pub(crate) fn first_seq(&self) -> u64 {
        self.frames.first().map_or(0, |f| f.seq)
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.seq)
    }
}

/// The frames of every event committed after the relay started, in order.
#[derive(Clone, Default)]
pub(crate) struct Fanout(Arc<Mutex<Option<broadcast::Sender<Arc<Batch>>>>>);

impl Fanout {
    /// A receiver of every batch from now on. The relay starts with the first subscriber, so a
    /// node nobody watches encodes nothing.
    pub(crate) fn subscribe(
        &self,
        store: &StoreReader,
    ) -> Result<broadcast::Receiver<Arc<Batch>>, StoreError> {
        let mut relay = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = relay.as_ref() {
            return Ok(tx.subscribe());
        }
        // Subscribe to the store before reading where it is: every later commit reaches `rx`.
        let rx = store.subscribe();
        let cursor = store.last_seq()?;
        let (tx, batches) = broadcast::channel(CAPACITY);
        let relay_state = Relay { store: store.clone(), cursor, tx: tx.clone(), pending: Vec::new() };
        tokio::spawn(relay_state.run(rx));
        *relay = Some(tx);
        Ok(batches)
    }
}

/// Encodes the store's events, in order, until the store closes. Everything the store has
/// notified by the time the relay wakes goes out as one batch. A lag or a hole in the store's
/// notifications is filled from the store itself, so the batches stay gap-free while the relay
/// keeps up with the store.
struct Relay {
    store: StoreReader,
    /// Last event taken (sent, or pending).
    cursor: u64,
    tx: broadcast::Sender<Arc<Batch>>,
    pending: Vec<Arc<StoredEvent>>,
}

impl Relay {
    async fn run(mut self, mut rx: broadcast::Receiver<Notification>) {
        loop {
            let mut hole = false;
            let mut received = Some(rx.recv().await);
            while let Some(r) = received {
                match r {
                    Ok(Notification::Event(e)) if e.seq <= self.cursor => {}
                    Ok(Notification::Event(e)) if e.seq == self.cursor + 1 => {
                        self.cursor = e.seq;
                        self.pending.push(e);
                        if self.pending.len() >= PAGE {
                            self.flush();
                        }
                    }
                    Ok(Notification::Event(_)) | Err(RecvError::Lagged(_)) => {
                        hole = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(RecvError::Closed) => {
                        self.flush();
                        return;
                    }
                }
                received = ready(&mut rx);
            }
            self.flush();
            if hole {
                if let Err(e) = self.fill() {
                    // Receivers see the next batch's jump in `seq` and read the store themselves.
                    tracing::warn!(error = %e, "event fan-out: store read failed");
                    self.cursor = self.store.last_seq().unwrap_or(self.cursor);
                }
                tokio::task::yield_now().await;
            }
        }
    }

    /// Sends the pending events as one batch (encoded only when someone listens).
    fn flush(&mut self) {
        if self.tx.receiver_count() > 0
            && let Some(batch) = Batch::encode(self.pending.iter().map(|e| &**e))
        {
            let _ = self.tx.send(Arc::new(batch));
        }
        self.pending.clear();
    }

    /// Sends the events after `cursor` from the store, a page per batch.
    fn fill(&mut self) -> Result<(), StoreError> {
        if self.tx.receiver_count() == 0 {
            self.cursor = self.store.last_seq()?;
            return Ok(());
        }
        loop {
            let page = self.store.events_after(self.cursor, PAGE)?;
            let Some(batch) = Batch::encode(&page) else { return Ok(()) };
            self.cursor = batch.last_seq();
            let _ = self.tx.send(Arc::new(batch));
        }
    }
}

/// What `rx` holds now, without waiting; `None` when nothing is ready. Lets a receiver take
/// everything already sent in one wake-up.
pub(crate) fn ready<T: Clone>(rx: &mut broadcast::Receiver<T>) -> Option<Result<T, RecvError>> {
    match rx.try_recv() {
        Ok(v) => Some(Ok(v)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
        Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
    }
}

/// An event as SSE text. Kinds come from the node; a line break in one would break framing, so it
/// is replaced. Line breaks in the data (JSON whitespace only: JSON strings cannot hold raw ones)
/// become separate `data:` lines, which the client joins with `\n`: the same JSON.
pub(crate) fn encode(e: &StoredEvent) -> Bytes {
    let mut out = Vec::with_capacity(e.data.len() + e.kind.len() + 40);
    encode_into(e, &mut out);
    Bytes::from(out)
}

fn encode_into(e: &StoredEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(e.seq.to_string().as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend(e.kind.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.push(b'\n');
    let data = e.data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_is_its_frames_joined() {
        let events = [event(3, "a", "{}"), event(4, "b", "[1]")];
        let batch = Batch::encode(&events).unwrap();
        assert_eq!((batch.first_seq(), batch.last_seq()), (3, 4));
        assert_eq!(batch.frames[1].bytes, encode(&events[1]));
        let joined: Vec<u8> = batch.frames.iter().flat_map(|f| f.bytes.to_vec()).collect();
        assert_eq!(batch.joined, joined);
        assert!(Batch::encode(&[] as &[StoredEvent]).is_none());
    }

    use super::*;
    use orgmesh_protocol::Timestamp;

    fn event(seq: u64, kind: &str, data: &str) -> StoredEvent {
        StoredEvent { seq, kind: kind.into(), at: Timestamp(0), data: data.into() }
    }

    #[test]
    fn frames_are_one_sse_event_each() {
        let f = encode(&event(7, "task.created", r#"{"id":"x"}"#));
        assert_eq!(&f[..], b"id: 7\nevent: task.created\ndata: {\"id\":\"x\"}\n\n");
    }

    #[test]
    fn line_breaks_cannot_break_framing() {
        let f = encode(&event(1, "a\nb\rc", "{\r\n\"k\": 1\r}"));
        assert_eq!(&f[..], b"id: 1\nevent: a b c\ndata: {\ndata: \"k\": 1\ndata: }\n\n");
    }
}
