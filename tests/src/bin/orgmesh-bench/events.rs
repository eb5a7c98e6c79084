//! `events`: many `/v1/events` clients on one node while noop tasks are submitted at a fixed
//! rate. The lag of an event is from the moment its task's submit request was sent (the event
//! cannot exist earlier) to its arrival at each client; measured on `task.created`, the one event
//! per task whose production the submit bounds. The event rate reported is the one produced, from
//! the sequence numbers one client saw.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::Params;
use crate::launcher::{BenchNode, http_client, ms};
use crate::placement::submit;
use crate::report::{Figure, Target};
use crate::sse::{SseReader, task_id_bytes};
use orgmesh_tests::benchstats::percentile;

/// `ORGMESH_SLOTS` of the events node.
const EVENTS_SLOTS: u32 = 256;

fn key(id: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(id);
    h.finish()
}

/// What one client saw: `task.created` arrivals, and (first, last) of (seq, arrival).
#[derive(Debug, Default)]
struct Seen {
    created: Vec<(u64, Instant)>,
    span: Option<((u64, Instant), (u64, Instant))>,
    events: u64,
}

pub(crate) async fn run(bin: &Path, p: &Params) -> anyhow::Result<Vec<Figure>> {
    let http = http_client();
    let mut node = BenchNode::init(bin, "solo", None)?;
    // With the shipped 4 slots noop tasks finish at a few dozen per second (see
    // docs/performance.md), too few to produce ~1,000 events/s: this scenario is about fan-out,
    // so it gives the node enough slots and says so in its output.
    node.set_env("ORGMESH_SLOTS", &EVENTS_SLOTS.to_string());
    node.up(&http).await?;
    node.wait_ok(&http, "/readyz", Duration::from_secs(30)).await?;
    let spec = json!({"command": ["true"]});

    // Events per noop task, to pick the submit rate.
    let mut probe = SseReader::open(&http, &format!("{}/v1/events", node.api)).await?;
    let id = submit(&http, &node.api, &spec).await?;
    let mut per_task = 0u32;
    let mut first_seq;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), probe.next())
            .await
            .context("probe task: no event within 10 s")?
            .context("probe stream ended")?;
        if e.task_id() == Some(id.as_str()) {
            per_task += 1;
            first_seq = e.seq;
            if matches!(e.kind.as_str(), "task.succeeded" | "task.failed" | "task.cancelled") {
                break;
            }
        }
    }
    drop(probe);
    let tasks_per_s = p.events_per_s / f64::from(per_task.max(1));

    // Clients, connected a hundred at a time.
    let window = p.events_window;
    let mut readers = Vec::with_capacity(p.sse_clients);
    let url = format!("{}/v1/events", node.api);
    for chunk in (0..p.sse_clients).collect::<Vec<_>>().chunks(100) {
        let opened = futures::future::join_all(chunk.iter().map(|_| SseReader::open(&http, &url))).await;
        for r in opened {
            readers.push(r?);
        }
    }
    let end = tokio::time::Instant::now() + window + Duration::from_secs(3);
    let clients: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let on_event = |seen: &mut Seen, seq: u64, kind: &[u8], data: &[u8], at: Instant| {
                    seen.events += 1;
                    let first = seen.span.map_or((seq, at), |s| s.0);
                    seen.span = Some((first, (seq, at)));
                    if kind == b"task.created"
                        && let Some(id) = task_id_bytes(data)
                    {
                        seen.created.push((key(id), at));
                    }
                };
                // One deadline for the whole stream (a timeout per read re-arms a timer per chunk).
                let deadline = tokio::time::sleep_until(end);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        biased;
                        more = reader.scan(|seq, kind, data, at| on_event(&mut seen, seq, kind, data, at)) => {
                            if !more {
                                break;
                            }
                        }
                        () = &mut deadline => break,
                    }
                }
                seen
            })
        })
        .collect();

    // Submit at a fixed rate, each submission on its own task so a slow answer does not slow the
    // rate; remember when each was sent and answered.
    let sent: Arc<Mutex<HashMap<u64, (Instant, Instant)>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / tasks_per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let submit_start = Instant::now();
    let stop = submit_start + window;
    let mut submitters = Vec::new();
    while Instant::now() < stop {
        tick.tick().await;
        let (http, api, spec, sent) = (http.clone(), node.api.clone(), spec.clone(), sent.clone());
        submitters.push(tokio::spawn(async move {
            let t = Instant::now();
            let id = submit(&http, &api, &spec).await?;
            let answered = Instant::now();
            sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(key(id.as_bytes()), (t, answered));
            anyhow::Ok(())
        }));
    }
    let mut failed = 0usize;
    for s in submitters {
        if !matches!(s.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    // Production rate: the sequence number of a fresh task's `task.created`, read on a new stream
    // (which starts at the live end, so it does not wait behind the lagging clients).
    let mut fresh = SseReader::open(&http, &format!("{}/v1/events?kinds=task.created", node.api)).await?;
    let last = submit(&http, &node.api, &spec).await?;
    let last_seq = loop {
        let e = tokio::time::timeout(Duration::from_secs(30), fresh.next())
            .await
            .context("closing probe: no event within 30 s")?
            .context("closing probe stream ended")?;
        if e.task_id() == Some(last.as_str()) {
            break e.seq;
        }
    };
    let produced = last_seq.saturating_sub(first_seq) as f64 / submit_start.elapsed().as_secs_f64();
    drop(fresh);
    let sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    if sent.is_empty() {
        bail!("no task was accepted");
    }

    let (mut lag, mut lag_from_202, mut missed, mut rates, mut connected) =
        (Vec::new(), Vec::new(), 0usize, Vec::new(), 0usize);
    for c in clients {
        let seen = c.await?;
        if seen.events > 0 {
            connected += 1;
        }
        let mut got = 0usize;
        for (k, at) in &seen.created {
            if let Some((t, answered)) = sent.get(k) {
                got += 1;
                lag.push(ms(at.saturating_duration_since(*t)));
                lag_from_202.push(signed_ms(*at, *answered));
            }
        }
        missed += sent.len() - got.min(sent.len());
        if let Some(((s0, a0), (s1, a1))) = seen.span {
            let secs = (a1 - a0).as_secs_f64();
            if secs > 0.0 {
                rates.push((s1 - s0) as f64 / secs);
            }
        }
    }
    let delivered = percentile(&rates, 50.0).unwrap_or(0.0);
    // How long the durable 202 took: the part of `lag` that is not fan-out.
    let acked: Vec<f64> = sent.values().map(|(t, answered)| ms(*answered - *t)).collect();
    let pct = |v: &[f64], q| percentile(v, q).unwrap_or(f64::NAN);
    Ok(vec![
        Figure::info("clients", connected as f64, "clients"),
        Figure::info("event_rate", produced, "events/s"),
        Figure::info("delivered_rate_per_client", delivered, "events/s"),
        Figure::info("events_per_task", f64::from(per_task), "events"),
        Figure::info("lag_p50", pct(&lag, 50.0), "ms"),
        Figure::target("lag_p99", pct(&lag, 99.0), "ms", Target::AtMost(50.0)),
        Figure::info("lag_after_202_p50", pct(&lag_from_202, 50.0), "ms"),
        Figure::info("lag_after_202_p99", pct(&lag_from_202, 99.0), "ms"),
        Figure::info("submit_202_p50", pct(&acked, 50.0), "ms"),
        Figure::info("submit_202_p99", pct(&acked, 99.0), "ms"),
        Figure::info("missed", missed as f64, "deliveries"),
        Figure::info("submit_failed", failed as f64, "tasks"),
        Figure::info("slots_override", f64::from(EVENTS_SLOTS), "slots"),
    ])
}

/// `a - b` in milliseconds, negative when `a` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b { ms(a - b) } else { -ms(b - a) }
}
