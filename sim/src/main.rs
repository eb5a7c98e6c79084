//! `orgmesh-sim run SCENARIO --seed N [--json out.json] [--load 0.9]`: runs one simulation,
//! prints its report, and exits non-zero if an invariant broke.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Decoding every gossip message allocates hundreds of small strings that live a microsecond;
// glibc's allocator was a quarter of a large run's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "orgmesh-sim", about = "Deterministic simulator of an orgmesh mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a scenario and prints its report.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// The seed; the same seed gives the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Overrides the scenario's offered load.
        #[arg(long)]
        load: Option<f64>,
        /// Overrides the number of nodes.
        #[arg(long)]
        nodes: Option<usize>,
        /// Overrides the simulated duration (seconds from the start, warm-up included, before
        /// the drain).
        #[arg(long)]
        duration: Option<f64>,
        /// Overrides the drain (seconds without arrivals or faults at the end).
        #[arg(long)]
        drain: Option<f64>,
        /// Stops before event index K (to replay up to a violation).
        #[arg(long)]
        until_event: Option<u64>,
        /// Prints every event (index, time, node, kind) to stderr.
        #[arg(long)]
        trace: bool,
        /// Prints a line to stderr every this many simulated seconds: events so far, wall and
        /// CPU time (to see what a long run costs per simulated second, phase by phase).
        #[arg(long)]
        progress: Option<f64>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let Command::Run { scenario, seed, json, load, nodes, duration, drain, until_event, trace, progress } =
        Cli::parse().command;
    let mut s = orgmesh_sim::scenario::Scenario::load(&scenario)?;
    if let Some(load) = load {
        s.workload.load = load;
        s.name = format!("{}@{load}", s.name);
    }
    if let Some(n) = nodes {
        s.nodes = n;
    }
    if let Some(d) = duration {
        s.duration_s = d;
    }
    if let Some(d) = drain {
        s.drain_s = d;
    }
    let report = orgmesh_sim::run_with_progress(s, seed, until_event, trace, progress)?;
    print!("{report}");
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    if !report.ok() {
        eprintln!("invariant violated: seed {seed}, scenario {}", scenario.display());
    }
    Ok(report.ok())
}
