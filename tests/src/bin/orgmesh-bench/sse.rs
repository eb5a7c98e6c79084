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
}
