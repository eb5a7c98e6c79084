//! orgmesh's simulator: a single-threaded, deterministic discrete-event simulation in which every
//! node is the node's own `protocol::engine::Engine` (membership, negotiator, ledger, leases, the
//! origin's task table and the host's reporter), driven over a virtual network, with their messages encoded and decoded by `protocol::wire`, under faults
//! (crashes and restarts, partitions, loss, clock skew, paused processes) and a workload. One
//! seed decides everything, so a failing seed is a complete bug report (after TigerBeetle's VOPR
//! and turmoil).
//!
//! Layout:
//! - [`queue`]: the event queue, ordered by (time, sequence).
//! - [`net`]: latency, jitter, bandwidth, loss, partitions.
//! - `pool`: one shared copy of each record for all simulated nodes (memory, not behaviour).
//! - [`scenario`]: the TOML scenario format.
//! - [`workload`]: arrivals and the omniscient scheduler used as a yardstick.
//! - `store`: each node's durable store (tasks, logs, hosted runs, spools), kept across crashes.
//! - `executor`: the executor's stand-in: a duration and a deterministic output per attempt.
//! - `world`: the nodes' engines, the event loop that carries out their outputs, faults and the
//!   checkers; [`run`] is the entry point. Nothing outside the engine decides a task's life.
//! - `world/byzantine.rs`: the adversary of `[byzantine]` scenarios: attackers are honest engines
//!   whose outgoing messages it tampers with, whose executor never finishes, and which inject
//!   scripted wire messages; it reads the world, never writes an honest engine's state.
//! - [`report`]: what a run prints and writes as JSON.
//!
//! ```no_run
//! let s = orgmesh_sim::scenario::Scenario::load("sim/scenarios/n100.toml".as_ref())?;
//! let report = orgmesh_sim::run(s, 1, None, false)?;
//! assert!(report.ok(), "{report}");
//! # Ok::<(), anyhow::Error>(())
//! ```
#![warn(missing_docs)]

mod executor;
pub mod net;
mod pool;
pub mod queue;
pub mod report;
pub mod scenario;
mod stats;
mod store;
pub mod workload;
mod world;

pub use report::Report;

/// Runs `scenario` with `seed`, up to event index `until` if given; `trace` prints every event.
pub fn run(
    scenario: scenario::Scenario,
    seed: u64,
    until: Option<u64>,
    trace: bool,
) -> anyhow::Result<Report> {
    run_with_progress(scenario, seed, until, trace, None)
}

/// `run`, printing a progress line to stderr every `progress_s` simulated seconds. The lines
/// carry wall and CPU time, so they differ between runs; the report does not.
pub fn run_with_progress(
    scenario: scenario::Scenario,
    seed: u64,
    until: Option<u64>,
    trace: bool,
    progress_s: Option<f64>,
) -> anyhow::Result<Report> {
    Ok(world::World::new(scenario, seed, trace)?.run(until, progress_s))
}
