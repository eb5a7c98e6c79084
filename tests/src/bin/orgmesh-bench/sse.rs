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
    seq: u64,
    kind: String,
    data: String,
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
        Ok(Self {
            resp,
            buf: Vec::new(),
            pending: Default::default(),
            seq: 0,
            kind: String::new(),
            data: String::new(),
        })
    }

    /// The next event; `None` when the stream ends or fails.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let chunk = self.resp.chunk().await.ok()??;
            let at = Instant::now();
            self.buf.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(nl) = self.buf[start..].iter().position(|b| *b == b'\n') {
                let line = &self.buf[start..start + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                start += nl + 1;
                if line.is_empty() {
                    if !self.kind.is_empty() || !self.data.is_empty() {
                        self.pending.push_back(SseEvent {
                            seq: self.seq,
                            kind: std::mem::take(&mut self.kind),
                            data: std::mem::take(&mut self.data),
                            at,
                        });
                    }
                    continue;
                }
                let text = String::from_utf8_lossy(line);
                let (field, value) = text.split_once(':').unwrap_or((&text, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.seq = value.parse().unwrap_or(0),
                    "event" => self.kind = value.to_string(),
                    "data" => {
                        if !self.data.is_empty() {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                    }
                    _ => {}
                }
            }
            self.buf.drain(..start);
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
