//! `placement`: acme, globex and initech; tasks submitted at acme for globex, `noop` executor,
//! durability as shipped. Latency of 1,000 sequential tasks (submit → `task.running` and →
//! `task.succeeded`, timestamped on acme's `/v1/events` stream) and the throughput of 20,000
//! tasks submitted 64 at a time.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Params;
use crate::launcher::{BenchNode, http_client, ms, wait_mesh};
use crate::report::{Figure, Target};
use crate::sse::{SseEvent, SseReader};
use orgmesh_tests::benchstats::percentile;

/// A noop task that only globex may run.
pub(crate) fn globex_spec() -> Value {
    json!({"command": ["true"], "constraints": {"orgs": ["globex"]}})
}

/// Submits `spec` and returns the task id.
/// What one `POST /v1/tasks` got.
enum Submitted {
    Accepted(String),
    /// 429: try again after this long.
    RateLimited(Duration),
}

async fn submit_once(http: &reqwest::Client, api: &str, spec: &Value) -> anyhow::Result<Submitted> {
    let resp = http.post(format!("{api}/v1/tasks")).json(spec).send().await?;
    let status = resp.status();
    if status.as_u16() == 429 {
        let wait = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1);
        return Ok(Submitted::RateLimited(Duration::from_secs(wait.clamp(1, 10))));
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 202 {
        bail!("submit gave {status}: {body}");
    }
    Ok(Submitted::Accepted(body["id"].as_str().context("no id in the 202")?.to_string()))
}

/// Submits like a well-behaved client: a 429 is retried after its `Retry-After` (at most 60
/// times). Returns the id and how many 429s it took.
pub(crate) async fn submit_patiently(
    http: &reqwest::Client,
    api: &str,
    spec: &Value,
) -> anyhow::Result<(String, usize)> {
    for refused in 0..60 {
        match submit_once(http, api, spec).await? {
            Submitted::Accepted(id) => return Ok((id, refused)),
            Submitted::RateLimited(wait) => tokio::time::sleep(wait).await,
        }
    }
    bail!("submit refused 60 times (429)")
}

/// Submits once: a 429 is a failure (the caller counts it).
pub(crate) async fn submit(http: &reqwest::Client, api: &str, spec: &Value) -> anyhow::Result<String> {
    match submit_once(http, api, spec).await? {
        Submitted::Accepted(id) => Ok(id),
        Submitted::RateLimited(_) => bail!("submit gave 429 Too Many Requests"),
    }
}

/// Forwards every event of `reader` into a channel until the receiver goes away.
pub(crate) fn pump(mut reader: SseReader) -> mpsc::UnboundedReceiver<SseEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = reader.next().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    rx
}

pub(crate) async fn run(bin: &Path, p: &Params) -> anyhow::Result<Vec<Figure>> {
    let http = http_client();
    let mut acme = BenchNode::init(bin, "acme", None)?;
    acme.up(&http).await?;
    let mut globex = BenchNode::init(bin, "globex", Some(&acme.multiaddr()))?;
    let mut initech = BenchNode::init(bin, "initech", Some(&acme.multiaddr()))?;
    globex.up(&http).await?;
    initech.up(&http).await?;
    wait_mesh(&http, &[&acme, &globex, &initech], Duration::from_millis(50), Duration::from_secs(60)).await?;
    let spec = globex_spec();

    // Latency: one task at a time.
    let mut rx = pump(SseReader::open(&http, &format!("{}/v1/events?kinds=task.", acme.api)).await?);
    let (mut to_running, mut to_succeeded) = (Vec::new(), Vec::new());
    let (mut to_accepted, mut to_placed) = (Vec::new(), Vec::new());
    for _ in 0..p.latency_tasks {
        let sent = Instant::now();
        let id = submit(&http, &acme.api, &spec).await?;
        to_accepted.push(ms(sent.elapsed()));
        let (mut running, mut placed) = (None, None);
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .with_context(|| format!("task {id}: no event within 30 s"))?
                .context("event stream ended")?;
            if e.task_id() != Some(id.as_str()) {
                continue;
            }
            match e.kind.as_str() {
                "task.placed" => placed = Some(e.at),
                "task.running" => running = Some(e.at),
                "task.succeeded" => {
                    to_running.push(ms(running.unwrap_or(e.at) - sent));
                    to_placed.push(ms(placed.or(running).unwrap_or(e.at) - sent));
                    to_succeeded.push(ms(e.at - sent));
                    break;
                }
                "task.failed" | "task.cancelled" => bail!("task {id} ended {}: {}", e.kind, e.data),
                _ => {}
            }
        }
    }
    drop(rx);

    // Throughput: many in flight; done when acme has announced every one `succeeded`.
    let mut rx = pump(SseReader::open(&http, &format!("{}/v1/events?kinds=task.", acme.api)).await?);
    let n = p.throughput_tasks;
    let start = Instant::now();
    let submitter = {
        let (http, api, spec, in_flight) = (http.clone(), acme.api.clone(), spec.clone(), p.in_flight);
        tokio::spawn(async move {
            let results: Vec<anyhow::Result<(String, usize)>> = futures::stream::iter(0..n)
                .map(|_| submit_patiently(&http, &api, &spec))
                .buffer_unordered(in_flight)
                .collect()
                .await;
            (results, start.elapsed())
        })
    };
    let (mut succeeded, mut failed) = (HashSet::new(), 0usize);
    let mut last = start;
    let deadline = tokio::time::Instant::now() + p.throughput_limit;
    while succeeded.len() + failed < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => match e.kind.as_str() {
                "task.succeeded" => {
                    if let Some(id) = e.task_id() {
                        succeeded.insert(id.to_string());
                        last = e.at;
                    }
                }
                "task.failed" | "task.cancelled" => failed += 1,
                _ => {}
            },
            Ok(None) => bail!("event stream ended after {} succeeded", succeeded.len()),
            Err(_) => {
                eprintln!(
                    "placement: only {} of {n} succeeded within {:?}; throughput is what finished",
                    succeeded.len(),
                    p.throughput_limit
                );
                break;
            }
        }
    }
    let (results, submit_time) = submitter.await?;
    let refused = results.iter().filter(|r| r.is_err()).count();
    let rate_limited: usize = results.iter().filter_map(|r| r.as_ref().ok()).map(|(_, n)| n).sum();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("placement: {refused} submissions failed, e.g. {e:#}");
    }
    let elapsed = last - start;

    let pct = |v: &[f64], q| percentile(v, q).unwrap_or(f64::NAN);
    Ok(vec![
        Figure::target("running_p50", pct(&to_running, 50.0), "ms", Target::AtMost(1.0)),
        Figure::target("running_p99", pct(&to_running, 99.0), "ms", Target::AtMost(3.0)),
        Figure::info("accepted_p50", pct(&to_accepted, 50.0), "ms"),
        Figure::info("placed_p50", pct(&to_placed, 50.0), "ms"),
        Figure::info("succeeded_p50", pct(&to_succeeded, 50.0), "ms"),
        Figure::info("succeeded_p99", pct(&to_succeeded, 99.0), "ms"),
        Figure::target(
            "throughput",
            succeeded.len() as f64 / elapsed.as_secs_f64(),
            "tasks/s",
            Target::AtLeast(2000.0),
        ),
        Figure::info("throughput_finished", succeeded.len() as f64, "tasks"),
        Figure::info("accepted_rate", (n - refused) as f64 / submit_time.as_secs_f64(), "tasks/s"),
        Figure::info("failed", (failed + refused) as f64, "tasks"),
        Figure::info("rate_limited_retries", rate_limited as f64, "requests"),
    ])
}
