//! Every JSON shape the API documents, in one leaf module that the handlers, [`Control`] and
//! the OpenAPI document all read: the node's views ([`NodeInfo`], [`PeerEntry`], [`Check`],
//! [`DrainStatus`]), which are real types, and mirror shapes (`pub(crate)`, never built) for
//! bodies whose Rust types live in `protocol` (which must not depend on utoipa) or are built
//! with `json!`. A mirror's name is its name in the document, so it may shadow a protocol type:
//! protocol types are written out in full here.
//!
//! This module must never import another module of this crate: it is what they share.
//!
//! [`Control`]: crate::Control

use std::collections::BTreeMap;

use orgmesh_protocol::membership::PeerState;
use orgmesh_protocol::{Org, PeerId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// This node.
    #[schema(value_type = String)]
    pub peer_id: PeerId,
    /// Its org.
    #[schema(value_type = String)]
    pub org: Org,
    /// Its name.
    pub name: String,
    /// orgmesh version.
    pub version: String,
    /// Multiaddrs the p2p listener is bound to.
    pub listen_addrs: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its capacity now.
    #[schema(value_type = Capacity)]
    pub capacity: orgmesh_protocol::Capacity,
    /// When the process started.
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// Whether it is draining.
    pub draining: bool,
    /// How it confines the tasks it runs (`none` or `sandbox`), as its signed record says.
    #[schema(value_type = Isolation)]
    pub isolation: orgmesh_protocol::Isolation,
    /// What the node dropped or refused since it started (malformed frames, rejected records,
    /// rate-limited requests, stale reports, bans...), by name.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// One item of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerEntry {
    /// The peer.
    #[schema(value_type = String)]
    pub peer_id: PeerId,
    /// Its org.
    #[schema(value_type = String)]
    pub org: Org,
    /// Its name.
    pub name: String,
    /// Failure-detector verdict.
    #[schema(value_type = String, example = "alive")]
    pub state: PeerState,
    /// Its multiaddrs.
    pub addrs: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its capacity as last gossiped.
    #[schema(value_type = Capacity)]
    pub capacity: orgmesh_protocol::Capacity,
    /// When it was last heard of.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: Timestamp,
    /// Whether it is draining.
    pub draining: bool,
    /// How it confines the tasks it runs (`none` or `sandbox`), as its signed record says.
    #[schema(value_type = Isolation)]
    pub isolation: orgmesh_protocol::Isolation,
    /// Discovery sources that found it (`static`, `gossip`, ...).
    pub sources: Vec<String>,
}

/// One readiness check of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// `store`, `p2p`, `discovery:static`, ...
    pub name: String,
    /// Whether it passes.
    pub ok: bool,
    /// Details, especially when failing.
    pub detail: String,
}

/// `POST /v1/drain` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrainStatus {
    /// Whether the node is draining.
    pub draining: bool,
    /// Attempts still running here.
    pub running: u32,
}

// Mirror shapes: only their `ToSchema` derives are used.

/// What a node has and has left.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct Capacity {
    cpu_millis: u32,
    cpu_millis_free: u32,
    memory_mb: u64,
    memory_mb_free: u64,
    gpus: u32,
    gpus_free: u32,
    slots: u32,
    free_slots: u32,
    running_tasks: u32,
}

/// Resources reserved for a task.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct Resources {
    #[schema(default = 100)]
    cpu_millis: u32,
    #[schema(default = 64)]
    memory_mb: u64,
    #[schema(default = 0)]
    gpus: u32,
}

/// Where a task may run.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct Constraints {
    /// Orgs whose nodes may run it; empty means any.
    orgs: Vec<String>,
    /// Labels the node must carry.
    node_labels: BTreeMap<String, String>,
    /// The least isolation the node must give; absent or null: any.
    isolation: Option<Isolation>,
}

/// How a node confines the tasks it runs: `none` (unconfined, as the node's user) or
/// `sandbox` (its own uid, namespaces and cgroup); `sandbox` meets a requirement of `none`.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum Isolation {
    None,
    Sandbox,
}

/// A task as submitted; only `command` is required.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct TaskSpec {
    /// Program and arguments, run directly.
    #[schema(example = json!(["sh", "-c", "echo hello"]))]
    command: Vec<String>,
    env: Option<BTreeMap<String, String>>,
    resources: Option<Resources>,
    constraints: Option<Constraints>,
    #[schema(default = 3600)]
    timeout_s: Option<u64>,
    #[schema(default = 3)]
    max_attempts: Option<u32>,
    #[schema(default = 600)]
    queue_timeout_s: Option<u64>,
    #[schema(default = 0)]
    priority: Option<i32>,
    #[schema(default = 60)]
    replace_after_s: Option<u64>,
}

/// The node that owns a task.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct TaskOrigin {
    peer_id: String,
    org: String,
}

/// Where an attempt runs.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct TaskPlacement {
    peer_id: String,
    org: String,
    name: String,
}

/// One attempt of a task.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct AttemptRecord {
    attempt: u32,
    placement: TaskPlacement,
    #[schema(format = DateTime)]
    placed_at: String,
    #[schema(format = DateTime)]
    ended_at: Option<String>,
    outcome: Option<String>,
    /// Byte offset in the task's log where this attempt's output begins.
    log_start: u64,
}

/// A task.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct Task {
    id: String,
    /// pending, placing, placed, running, unreachable, succeeded, failed, cancelled
    status: String,
    spec: TaskSpec,
    origin: TaskOrigin,
    placement: Option<TaskPlacement>,
    attempt: u32,
    exit_code: Option<i32>,
    error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    history: Vec<AttemptRecord>,
    /// The host's signed result receipt, once the origin checked and accepted one.
    receipt: Option<Receipt>,
}

/// What an attempt used, as its host measured it (null: not measured).
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct Usage {
    wall_ms: u64,
    cpu_ms: Option<u64>,
    peak_memory_bytes: Option<u64>,
}

/// A host's signed statement of how an attempt ended (docs/protocol.md, "Result receipts").
/// Only `signed` and `signature` are signed; the other fields show what `signed` decodes to.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct Receipt {
    task: String,
    attempt: u32,
    /// The node the attempt ran for.
    origin: String,
    /// The node that ran it and signed this.
    host: String,
    exit_code: Option<i32>,
    error: Option<String>,
    cancelled: bool,
    /// Bytes of output in all.
    log_len: u64,
    /// SHA-256 of the output, hex.
    output_sha256: String,
    usage: Usage,
    /// When it ended, unix ms, on the host's clock.
    finished_at_ms: u64,
    /// The host's ed25519 signature over `signed`, hex.
    signature: String,
    /// The exact signed bytes, hex: `orgmesh-receipt-v1\0` then the postcard receipt.
    signed: String,
    /// Whether the origin compared the digest with the output bytes it received.
    digest_checked: bool,
}

/// A page of tasks, newest first.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct TaskList {
    items: Vec<Task>,
    next_cursor: Option<String>,
}

/// The peers this node knows.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct PeerList {
    items: Vec<PeerEntry>,
}

/// A submit's answer.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct Accepted {
    id: String,
    status: String,
}

/// A cancel's answer.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct CancelAccepted {
    id: String,
    status: Option<String>,
    cancel_requested: bool,
}

/// RFC 9457 problem details (`application/problem+json`).
#[allow(dead_code)]
#[derive(ToSchema, serde::Serialize)]
pub(crate) struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
}
