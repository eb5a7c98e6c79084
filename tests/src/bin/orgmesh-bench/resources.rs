//! `resources`: one node alone. Idle RSS and CPU; then as many noop tasks as fit (a million, or
//! what the time limit allows) loaded through the API, RSS with them stored, `GET
//! /v1/tasks?limit=100` latency and the restart time with that store.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::Params;
use crate::launcher::{BenchNode, cpu_ticks, http_client, ms, rss_bytes, ticks_per_s};
use crate::placement::submit;
use crate::report::{Figure, Target};
use orgmesh_tests::benchstats::percentile;

const MB: f64 = 1024.0 * 1024.0;
/// `api.rate_per_s` and `api.burst` of the `resources` node (reported as `api_rate_override`).
const LOAD_RATE_LIMIT: u32 = 1_000_000;

/// Whether no task is left in a non-terminal status.
async fn all_terminal(http: &reqwest::Client, api: &str) -> bool {
    for s in ["pending", "placing", "placed", "running", "unreachable"] {
        let Ok(r) = http.get(format!("{api}/v1/tasks?status={s}&limit=1")).send().await else { return false };
        let Ok(v) = r.json::<Value>().await else { return false };
        if v["items"].as_array().is_none_or(|a| !a.is_empty()) {
            return false;
        }
    }
    true
}

pub(crate) async fn run(bin: &Path, p: &Params) -> anyhow::Result<Vec<Figure>> {
    let http = http_client();
    let mut node = BenchNode::init(bin, "solo", None)?;
    if let Some(slots) = p.resources_slots {
        node.set_env("ORGMESH_SLOTS", &slots.to_string());
    }
    // Loading is a bulk import, not the client the rate limit is for.
    node.set_env("ORGMESH_API_RATE_PER_S", &LOAD_RATE_LIMIT.to_string());
    node.set_env("ORGMESH_API_BURST", &LOAD_RATE_LIMIT.to_string());
    node.up(&http).await?;
    node.wait_ok(&http, "/readyz", Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = node.pid().unwrap_or(0);
    let idle_rss = rss_bytes(pid).unwrap_or(0) as f64 / MB;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid).unwrap_or(0));
    tokio::time::sleep(p.idle).await;
    let (secs, c1) = (t0.elapsed().as_secs_f64(), cpu_ticks(pid).unwrap_or(0));
    let idle_cpu = (c1 - c0) as f64 / ticks_per_s() / secs * 100.0;
    let mut figures = vec![
        Figure::target("idle_rss", idle_rss, "MB", Target::AtMost(25.0)),
        Figure::target("idle_cpu", idle_cpu, "%", Target::AtMost(0.5)),
    ];

    // Load: submissions in flight until the count or the time limit is reached.
    // What is measured is the store with a million tasks, not how fast they run: a task that
    // finds no free slot at once ends `failed` (queue timeout 0) instead of waiting, because
    // placement runs at ~50-130 tasks/s today (see docs/performance.md) and a million would
    // take hours to drain.
    let spec = json!({"command": ["true"], "queue_timeout_s": 0});
    let start = Instant::now();
    let load_ticks = cpu_ticks(pid).unwrap_or(0);
    let limit = p.load_limit;
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<String, String>> = futures::stream::iter(0..p.stored_tasks)
        .take_while(|_| std::future::ready(start.elapsed() < limit))
        .map(|_| async {
            let result = submit(&http, &node.api, &spec).await.map_err(|e| format!("{e:#}"));
            let done = progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if done.is_multiple_of(50_000) {
                eprintln!("resources: {done} submitted in {:.0} s", start.elapsed().as_secs_f64());
            }
            result
        })
        .buffer_unordered(p.in_flight)
        .collect()
        .await;
    let submitted = results.iter().filter(|r| r.is_ok()).count();
    report_failures(results.iter().filter_map(|r| r.as_ref().err()));
    let submit_time = start.elapsed();
    let wait_end = Instant::now() + Duration::from_secs(600);
    while !all_terminal(&http, &node.api).await {
        if Instant::now() > wait_end {
            bail!("tasks still unfinished 600 s after loading");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load_time = start.elapsed();
    let load_cpu = cpu_ticks(pid).unwrap_or(0).saturating_sub(load_ticks) as f64
        / ticks_per_s()
        / load_time.as_secs_f64()
        * 100.0;
    eprintln!(
        "resources: {submitted} tasks accepted in {:.1} s, all finished after {:.1} s",
        submit_time.as_secs_f64(),
        load_time.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    figures.push(Figure::info("stored_tasks", submitted as f64, "tasks"));
    figures.push(Figure::info("api_rate_override", f64::from(LOAD_RATE_LIMIT), "req/s"));
    figures.push(Figure::info("load_time", load_time.as_secs_f64(), "s"));
    figures.push(Figure::info("load_rate", submitted as f64 / load_time.as_secs_f64(), "tasks/s"));
    figures.push(Figure::info("load_cpu", load_cpu, "%"));
    if let Some(slots) = p.resources_slots {
        figures.push(Figure::info("slots_override", slots as f64, "slots"));
    }
    figures.push(Figure::info("loaded_rss", rss_bytes(pid).unwrap_or(0) as f64 / MB, "MB"));

    // Listing latency and restart, measured `store_repeats` times on the one loaded store
    // (loading a million tasks takes minutes; measuring on it takes seconds).
    let (mut p50s, mut p99s, mut stops, mut restarts, mut rss_after) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..p.store_repeats {
        let mut lat = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let t = Instant::now();
            let r = http.get(format!("{}/v1/tasks?limit=100", node.api)).send().await?;
            if !r.status().is_success() {
                bail!("list gave {}", r.status());
            }
            let _ = r.bytes().await?;
            lat.push(ms(t.elapsed()));
        }
        p50s.push(percentile(&lat, 50.0).unwrap_or(f64::NAN));
        p99s.push(percentile(&lat, 99.0).unwrap_or(f64::NAN));
        // Restart with that store: SIGTERM, then start until ready and listing.
        stops.push(ms(node.terminate(Duration::from_secs(60)).await?));
        let t = Instant::now();
        node.spawn()?;
        node.wait_ok(&http, "/readyz", Duration::from_secs(120)).await?;
        node.wait_ok(&http, "/v1/tasks?limit=100", Duration::from_secs(120)).await?;
        restarts.push(ms(t.elapsed()));
        if let Some(pid) = node.pid() {
            rss_after.push(rss_bytes(pid).unwrap_or(0) as f64 / MB);
        }
    }
    let median = |v: &[f64]| percentile(v, 50.0).unwrap_or(f64::NAN);
    figures.push(Figure::info("list_p50", median(&p50s), "ms"));
    figures.push(Figure::target("list_p99", median(&p99s), "ms", Target::AtMost(5.0)));
    figures.push(Figure::info("stop", median(&stops), "ms"));
    figures.push(Figure::target("restart", median(&restarts), "ms", Target::AtMost(1000.0)));
    figures.push(Figure::info("restart_max", restarts.iter().copied().fold(f64::NAN, f64::max), "ms"));
    figures.push(Figure::info("restarted_rss", median(&rss_after), "MB"));
    figures.push(Figure::info("store_repeats", p.store_repeats as f64, "times"));
    figures.push(Figure::info("store_on_disk", dir_bytes(node.dir()) as f64 / MB, "MB"));
    Ok(figures)
}

/// Prints how many load submissions failed, grouped by reason, so a short store is explained.
fn report_failures<'a>(errors: impl Iterator<Item = &'a String>) {
    let mut by_reason = std::collections::BTreeMap::<String, usize>::new();
    for e in errors {
        // Task ids and timings differ per failure; the first 120 characters name the reason.
        *by_reason.entry(e.chars().take(120).collect()).or_default() += 1;
    }
    for (reason, n) in by_reason {
        eprintln!("resources: {n} submissions failed: {reason}");
    }
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
