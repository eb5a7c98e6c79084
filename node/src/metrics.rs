//! The node's Prometheus metrics (`GET /metrics`, OpenMetrics text): one registry per node, so
//! several nodes in one process (`orgmesh demo`) never mix their figures.
//!
//! Where each figure comes from, chosen so that the event loop carries only one-line hooks:
//! - `orgmesh_tasks{status}`: the store's status counts, read at scrape time.
//! - `orgmesh_peers{state}`: the event loop's peer view (`Command::Peers`), at scrape time.
//! - `orgmesh_placement_latency_seconds`: submit → placed, observed from the store's
//!   notifications of task writes (a task written `placed` for the first time).
//! - `orgmesh_gossip_rounds_total`: gossip rounds this node opened (hook in the event loop).
//! - `orgmesh_wire_bytes_total{protocol,direction}`: frame bytes, counted in the p2p codec.
//! - `orgmesh_store_commit_seconds`: the store writer's group commits (its commit observer).
//! - `libp2p_*`: connections, dials and listeners, from libp2p's own metrics (hook in the loop).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::metrics::Recorder;
use libp2p::swarm::SwarmEvent;
use orgmesh_protocol::TaskStatus;
use orgmesh_protocol::membership::PeerState;
use orgmesh_protocol::wire::gossip::GossipRequest;
use orgmesh_store::{Notification, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Buckets of latencies from 1 ms to about 1 min.
const LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WireLabels {
    protocol: String,
    direction: String,
}

/// The byte counters one protocol's codec adds to.
#[derive(Debug, Clone, Default)]
pub struct WireCounter {
    sent: Counter,
    received: Counter,
}

impl WireCounter {
    /// `n` bytes written.
    pub fn sent(&self, n: usize) {
        self.sent.inc_by(n as u64);
    }

    /// `n` bytes read.
    pub fn received(&self, n: usize) {
        self.received.inc_by(n as u64);
    }

    /// Bytes written so far.
    pub fn sent_total(&self) -> u64 {
        self.sent.get()
    }

    /// Bytes read so far.
    pub fn received_total(&self) -> u64 {
        self.received.get()
    }
}

/// The codecs' counters, one per protocol.
#[derive(Debug, Clone, Default)]
pub struct WireCounters {
    /// `/orgmesh/gossip/1`.
    pub gossip: WireCounter,
    /// `/orgmesh/place/1`.
    pub place: WireCounter,
    /// `/orgmesh/task/1`.
    pub task: WireCounter,
    /// `/orgmesh/receipt/1`.
    pub receipt: WireCounter,
}

/// One node's metrics. Cheap to clone; clones share the figures.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    tasks: Family<StatusLabels, Gauge>,
    peers: Family<StateLabels, Gauge>,
    placement_latency: Histogram,
    store_commit: Histogram,
    gossip_rounds: Counter,
    wire: WireCounters,
    libp2p: Arc<libp2p::metrics::Metrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tasks = Family::<StatusLabels, Gauge>::default();
        let peers = Family::<StateLabels, Gauge>::default();
        let placement_latency = Histogram::new(LATENCY_BUCKETS);
        let store_commit = Histogram::new(LATENCY_BUCKETS);
        let gossip_rounds = Counter::default();
        let wire_family = Family::<WireLabels, Counter>::default();
        let om = registry.sub_registry_with_prefix("orgmesh");
        om.register("tasks", "Tasks submitted at this node, by status", tasks.clone());
        om.register("peers", "Peers this node knows, by failure-detector state", peers.clone());
        om.register(
            "placement_latency_seconds",
            "Time from submit to placed, for tasks submitted at this node",
            placement_latency.clone(),
        );
        om.register(
            "store_commit_seconds",
            "Duration of the store writer's group commits (one redb transaction each)",
            store_commit.clone(),
        );
        om.register("gossip_rounds", "Gossip rounds this node opened", gossip_rounds.clone());
        om.register("wire_bytes", "Frame bytes on the orgmesh protocols", wire_family.clone());
        let counter = |protocol: &str| {
            let get = |direction: &str| {
                wire_family
                    .get_or_create(&WireLabels { protocol: protocol.into(), direction: direction.into() })
                    .clone()
            };
            WireCounter { sent: get("sent"), received: get("received") }
        };
        let wire = WireCounters {
            gossip: counter("gossip"),
            place: counter("place"),
            task: counter("task"),
            receipt: counter("receipt"),
        };
        let libp2p = Arc::new(libp2p::metrics::Metrics::new(&mut registry));
        Self {
            registry: Arc::new(Mutex::new(registry)),
            tasks,
            peers,
            placement_latency,
            store_commit,
            gossip_rounds,
            wire,
            libp2p,
        }
    }

    /// The codecs' byte counters.
    pub fn wire(&self) -> &WireCounters {
        &self.wire
    }

    /// Hook: the event loop sends a gossip request; a `Syn` opens a round.
    pub fn gossip_sent(&self, request: &GossipRequest) {
        if matches!(request, GossipRequest::Syn { .. }) {
            self.gossip_rounds.inc();
        }
    }

    /// Hook: every swarm event, for libp2p's connection metrics.
    pub fn swarm_event<E>(&self, event: &SwarmEvent<E>) {
        self.libp2p.record(event);
    }

    /// A group commit of the store took `took`.
    pub fn store_commit(&self, took: Duration) {
        self.store_commit.observe(took.as_secs_f64());
    }

    /// Renders every metric, after refreshing the gauges read at scrape time.
    pub fn render(&self, store: &Store, peer_states: &[PeerState]) -> Result<String, String> {
        let counts = store.status_counts().map_err(|e| e.to_string())?;
        for status in TaskStatus::ALL {
            let n = counts.get(&status).copied().unwrap_or(0);
            self.tasks.get_or_create(&StatusLabels { status: status.to_string() }).set(gauge_value(n));
        }
        for state in [PeerState::Alive, PeerState::Suspect, PeerState::Dead] {
            let n = peer_states.iter().filter(|s| **s == state).count() as u64;
            self.peers.get_or_create(&StateLabels { state: state_name(state) }).set(gauge_value(n));
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| e.to_string())?;
        Ok(text)
    }

    /// Observes placement latency from the store's notifications until `shutdown`: each task
    /// seen written `placed` the first time counts once, with `now - created_at`.
    pub async fn watch_placements(self, store: Store, shutdown: CancellationToken) {
        let mut rx = store.subscribe();
        // Tasks already observed; a lost attempt that is placed again does not count twice.
        let mut seen: HashSet<orgmesh_protocol::TaskId> = HashSet::new();
        loop {
            let note = tokio::select! {
                _ = shutdown.cancelled() => return,
                note = rx.recv() => note,
            };
            match note {
                Ok(Notification::Task { task, status: TaskStatus::Placed }) => {
                    if !seen.insert(task) {
                        continue;
                    }
                    if let Ok(Some(t)) = store.task(task) {
                        let ms = crate::wall_clock().0.saturating_sub(t.created_at.0);
                        self.placement_latency.observe(ms as f64 / 1000.0);
                    }
                }
                Ok(Notification::Task { task, status }) if status.is_terminal() => {
                    seen.remove(&task);
                }
                Ok(_) => {}
                // Missed notifications only cost observations; go on with the next.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn state_name(state: PeerState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_names() {
        let m = Metrics::new();
        m.gossip_sent(&GossipRequest::Syn { digest: Vec::new() });
        m.gossip_sent(&GossipRequest::Push { updates: Vec::new() });
        m.wire().gossip.sent(100);
        m.store_commit(Duration::from_millis(3));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let text = m.render(&store, &[PeerState::Alive, PeerState::Alive, PeerState::Dead]).unwrap();
        for line in [
            "orgmesh_gossip_rounds_total 1",
            "orgmesh_wire_bytes_total{protocol=\"gossip\",direction=\"sent\"} 100",
            "orgmesh_peers{state=\"alive\"} 2",
            "orgmesh_peers{state=\"dead\"} 1",
            "orgmesh_tasks{status=\"pending\"} 0",
            "orgmesh_store_commit_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
