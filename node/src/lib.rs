//! The orgmesh node: drives the sans-IO protocol machines over libp2p and tokio, runs tasks as
//! child processes, serves the local API, and provides the `orgmesh` CLI.
//!
//! Layout:
//! - [`config`]: `orgmesh.toml` and `ORGMESH_*` overrides.
//! - [`identity`]: the node's ed25519 key and the keyring that signs gossip records.
//! - [`p2p`]: the swarm: TCP + Noise + Yamux, one request-response behaviour per protocol.
//! - [`actor`]: the event loop that owns the swarm and every state machine.
//! - [`executor`]: child processes for task attempts, each in a [`sandbox`] unless policy says not.
//! - [`output_cap`]: the cap on a task's output and the marker a cut log ends with.
//! - [`spool`]: each attempt's output in a file of its own, written up to the cap, read at send time.
//! - [`handle`]: `NodeHandle`, the API's way in.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`, and the hooks that feed it.
//! - [`run`]: assembles a node; [`cli`] and [`demo`] are the binary's commands.

pub mod actor;
pub mod cli;
pub mod config;
pub mod demo;
mod events;
pub mod executor;
pub mod handle;
pub mod identity;
pub mod metrics;
pub use orgmesh_protocol::engine::output_cap;
pub mod p2p;
pub mod redial;
pub mod run;
pub mod sandbox;
pub mod spool;

use std::time::{SystemTime, UNIX_EPOCH};

use orgmesh_protocol::Timestamp;

/// Wall-clock now.
pub fn wall_clock() -> Timestamp {
    Timestamp(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}
