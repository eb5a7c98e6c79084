//! A small `text/event-stream` reader that timestamps each event when its bytes arrive. It pulls
//! out only what the bench needs (sequence id, kind and the task id in the data) without parsing
//! the JSON, so a thousand readers stay cheap.

use std::time::Instant;

use anyhow::bail;

/// One event as received.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    /// `id:` (the node's event sequence number).
    pub(crate) seq: u64,
    /// `event:`.
    pub(crate) kind: String,
    /// `data:`.
    pub(crate) data: String,
    /// When the chunk holding it arrived.
    pub(crate) at: Instant,
}

impl SseEvent {
    /// The `"id"` string in the data (a task event's task id), found without parsing the JSON.
    pub(crate) fn task_id(&self) -> Option<&str> {
        let start = self.data.find("\"id\":\"")? + 6;
        let len = self.data[start..].find('"')?;
        Some(&self.data[start..start + len])
    }
}

/// An open stream.
pub(crate) struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<SseEvent>,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader").field("pending", &self.pending.len()).finish()
    }
}

impl SseReader {
    /// `GET url` and waits for the response head: from then on the node has subscribed this
    /// stream, so every later event reaches it.
    pub(crate) async fn open(http: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let resp = http.get(url).header("Accept", "text/event-stream").send().await?;
        if !resp.status().is_success() {
            bail!("GET {url} gave {}", resp.status());
        }
        Ok(Self { resp, buf: Vec::new(), pending: Default::default() })
    }

    /// The next event, owned; `None` when the stream ends or fails. Built on [`scan`](Self::scan)
    /// for the readers that keep events (a few streams, not a thousand).
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let mut got = Vec::new();
            let more = self
                .scan(|seq, kind, data, at| {
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    got.push(SseEvent { seq, kind: text(kind), data: text(data), at });
                })
                .await;
            self.pending.extend(got);
            if !more && self.pending.is_empty() {
                return None;
            }
        }
    }

    /// Reads the next chunk and calls `f(seq, kind, data, arrival)` for every event it completes,
    /// without allocating per event: with a thousand clients on the bench's two cores, the
    /// reader's own cost would otherwise be part of the lag it measures. Expects the node's
    /// framing (`\n` line ends, one `data:` line). `false` when the stream ended or failed.
    pub(crate) async fn scan(&mut self, mut f: impl FnMut(u64, &[u8], &[u8], Instant)) -> bool {
        let Ok(Some(chunk)) = self.resp.chunk().await else { return false };
        let at = Instant::now();
        self.buf.extend_from_slice(&chunk);
        let mut start = 0;
        static END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\n"));
        while let Some(end) = END.find(&self.buf[start..]) {
            let block = &self.buf[start..start + end];
            start += end + 2;
            let (mut seq, mut kind, mut data) = (None, &b""[..], &b""[..]);
            for line in block.split(|b| *b == b'\n') {
                // Lines are few per event (three); the scan above is what must be fast.
                if let Some(v) = line.strip_prefix(b"id: ") {
                    seq = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
                } else if let Some(v) = line.strip_prefix(b"event: ") {
                    kind = v;
                } else if let Some(v) = line.strip_prefix(b"data: ") {
                    data = v;
                }
            }
            if let Some(seq) = seq {
                f(seq, kind, data, at);
            }
        }
        self.buf.drain(..start);
        true
    }
}

/// The `"id"` string in an event's data (a task event's task id), found without parsing.
pub(crate) fn task_id_bytes(data: &[u8]) -> Option<&[u8]> {
    static ID: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"id\":\""));
    let start = ID.find(data)? + 6;
    let len = data[start..].iter().position(|b| *b == b'"')?;
    Some(&data[start..start + len])
}
