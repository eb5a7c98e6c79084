//! `orgmesh-bench`: performance figures for orgmesh, taken from the outside.
//!
//! ```text
//! cargo run --release -p orgmesh-tests --bin orgmesh-bench -- <scenario|all> [--runs N] [--json]
//!     [--quick] [--pause-secs S] [--load-secs S]
//! ```
//!
//! It builds the release `orgmesh` binary (or runs `$ORGMESH_BIN`), starts its own nodes on
//! 127.0.0.1 as real processes with the shipped defaults (plus the `noop` executor), and drives
//! them only through the public REST API. Each scenario prints one line of figures, each beside
//! its target; with `--runs N` a figure is the median of N runs with the min–max after it.
//! `docs/performance.md` says what each figure means and how it is taken.
//!
//! Layout: `launcher` (init/up/signal of a node process), `sse` (a small SSE reader that
//! timestamps every event on arrival), `report` (figures, targets, the line and the JSON), and one
//! module per scenario.

mod events;
mod launcher;
mod membership;
mod placement;
mod report;
mod resources;
mod sse;

use std::time::Duration;

use anyhow::Context;

use report::{Figure, Report};

/// Sizes and durations of one invocation (`--quick` shrinks them for smoke runs).
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) quick: bool,
    /// Sequential tasks for the placement latency.
    pub(crate) latency_tasks: usize,
    /// Tasks for the placement throughput.
    pub(crate) throughput_tasks: usize,
    /// Submissions in flight for throughput and loading.
    pub(crate) in_flight: usize,
    /// Mesh sizes of `membership`.
    pub(crate) mesh_sizes: Vec<usize>,
    /// Steady-state measurement window.
    pub(crate) steady: Duration,
    /// How long `membership` keeps pausing random nodes.
    pub(crate) pause: Duration,
    /// Tasks to store in `resources`.
    pub(crate) stored_tasks: usize,
    /// Most time spent loading them (the figure says how many were loaded).
    pub(crate) load_limit: Duration,
    /// How often the list latency and the restart are measured on the loaded store.
    pub(crate) store_repeats: usize,
    /// `ORGMESH_SLOTS` for the `resources` node (`--resources-slots`; shipped default when unset).
    pub(crate) resources_slots: Option<u64>,
    /// Longest wait for the throughput tasks to finish (the figure is then what finished).
    pub(crate) throughput_limit: Duration,
    /// Idle CPU window.
    pub(crate) idle: Duration,
    /// SSE clients of `events`.
    pub(crate) sse_clients: usize,
    /// Target event rate of `events`.
    pub(crate) events_per_s: f64,
    /// Measurement window of `events`.
    pub(crate) events_window: Duration,
}

impl Params {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                latency_tasks: 100,
                throughput_tasks: 1_000,
                in_flight: 64,
                mesh_sizes: vec![5],
                steady: Duration::from_secs(5),
                pause: Duration::from_secs(5),
                stored_tasks: 5_000,
                load_limit: Duration::from_secs(60),
                store_repeats: 2,
                idle: Duration::from_secs(3),
                resources_slots: None,
                throughput_limit: Duration::from_secs(30),
                sse_clients: 50,
                events_per_s: 200.0,
                events_window: Duration::from_secs(5),
            }
        } else {
            Self {
                quick,
                latency_tasks: 1_000,
                throughput_tasks: 20_000,
                in_flight: 64,
                mesh_sizes: vec![5, 10, 25],
                steady: Duration::from_secs(30),
                pause: Duration::from_secs(120),
                stored_tasks: 1_000_000,
                load_limit: Duration::from_secs(900),
                store_repeats: 5,
                idle: Duration::from_secs(30),
                resources_slots: None,
                throughput_limit: Duration::from_secs(120),
                sse_clients: 1_000,
                events_per_s: 1_000.0,
                events_window: Duration::from_secs(15),
            }
        }
    }
}

const SCENARIOS: [&str; 4] = ["placement", "membership", "resources", "events"];

fn usage() -> ! {
    eprintln!(
        "usage: orgmesh-bench <placement|membership|resources|events|all> [--runs N] [--json] [--quick] \
         [--pause-secs S] [--load-secs S] [--stored N] [--resources-slots N] [--throughput-secs S] [--sizes 5,10,25]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut which, mut runs, mut json, mut quick) = (None::<String>, 1usize, false, false);
    let (mut pause_secs, mut load_secs, mut stored) = (None::<u64>, None::<u64>, None::<usize>);
    let (mut slots, mut throughput_secs, mut sizes) = (None::<u64>, None::<u64>, None::<Vec<usize>>);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| name.to_string())
        };
        match a.as_str() {
            "--runs" => runs = usize::try_from(num("--runs")?)?.max(1),
            "--json" => json = true,
            "--quick" => quick = true,
            "--pause-secs" => pause_secs = Some(num("--pause-secs")?),
            "--load-secs" => load_secs = Some(num("--load-secs")?),
            "--resources-slots" => slots = Some(num("--resources-slots")?),
            "--throughput-secs" => throughput_secs = Some(num("--throughput-secs")?),
            "--sizes" => {
                let list = args.next().unwrap_or_else(|| usage());
                sizes =
                    Some(list.split(',').map(|x| x.trim().parse::<usize>()).collect::<Result<Vec<_>, _>>()?);
            }
            "--stored" => stored = Some(usize::try_from(num("--stored")?)?),
            "-h" | "--help" => usage(),
            s if !s.starts_with('-') && which.is_none() => which = Some(s.to_string()),
            _ => usage(),
        }
    }
    let which = which.unwrap_or_else(|| usage());
    let scenarios: Vec<&str> = match which.as_str() {
        "all" => SCENARIOS.to_vec(),
        s if SCENARIOS.contains(&s) => vec![SCENARIOS.iter().copied().find(|x| *x == s).unwrap_or("all")],
        _ => usage(),
    };
    let mut params = Params::new(quick);
    if let Some(s) = pause_secs {
        params.pause = Duration::from_secs(s);
    }
    if let Some(s) = load_secs {
        params.load_limit = Duration::from_secs(s);
    }
    params.resources_slots = slots;
    if let Some(sizes) = sizes {
        params.mesh_sizes = sizes;
    }
    if let Some(s) = throughput_secs {
        params.throughput_limit = Duration::from_secs(s);
    }
    if let Some(n) = stored {
        params.stored_tasks = n;
    }
    launcher::raise_fd_limit();
    let bin = launcher::release_binary()?;
    eprintln!("orgmesh-bench: node binary {}", bin.display());
    let mut report = Report::new(runs, &params);
    for scenario in scenarios {
        for run in 1..=runs {
            eprintln!("orgmesh-bench: {scenario} run {run}/{runs} ...");
            let figures: anyhow::Result<Vec<Figure>> = match scenario {
                "placement" => placement::run(&bin, &params).await,
                "membership" => membership::run(&bin, &params).await,
                "resources" => resources::run(&bin, &params).await,
                "events" => events::run(&bin, &params).await,
                _ => Err(anyhow::anyhow!("unknown scenario {scenario}")),
            };
            match figures {
                Ok(figures) => report.add(scenario, figures),
                Err(e) => {
                    eprintln!("orgmesh-bench: {scenario} run {run} failed: {e:#}");
                    report.fail(scenario, format!("run {run}: {e:#}"));
                }
            }
        }
        println!("{}", report.line(scenario));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    }
    Ok(())
}
