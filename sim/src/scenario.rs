//! Scenarios: TOML files describing the mesh (nodes, regions, capacities), the network, the
//! workload and the faults. Every field has a default, so a scenario names only what it changes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use orgmesh_protocol::settings::{GossipSettings, PlacementSettings};
use serde::Deserialize;

/// One simulated run's description.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// A name for reports.
    pub name: String,
    /// Nodes at start.
    pub nodes: usize,
    /// Simulated seconds of the run (arrivals and faults happen in this window).
    pub duration_s: f64,
    /// Arrivals start this late, so start-up convergence is measured on an idle mesh.
    pub warmup_s: f64,
    /// After `duration_s`: faults heal, arrivals stop, and the run goes on this long (liveness
    /// phase) so that every task can end.
    pub drain_s: f64,
    /// How often convergence is sampled, in simulated milliseconds.
    pub sample_ms: u64,
    /// How many nodes are checked at each sample (all of them if the mesh is smaller).
    pub observers: usize,
    /// Orgs the nodes are spread over (round robin).
    pub orgs: Vec<String>,
    /// Gossip tuning.
    pub membership: GossipSettings,
    /// Placement tuning.
    pub placement: PlacementSettings,
    /// Regions and their share of nodes.
    pub regions: Vec<Region>,
    /// The virtual network.
    pub network: NetworkSection,
    /// Kinds of nodes and their share.
    pub node_classes: Vec<NodeClass>,
    /// The tasks.
    pub workload: Workload,
    /// Crashes, partitions, pauses.
    pub faults: Faults,
    /// A share of the nodes attacking the rest (none by default).
    pub byzantine: Byzantine,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "unnamed".into(),
            nodes: 50,
            duration_s: 60.0,
            warmup_s: 15.0,
            drain_s: 60.0,
            sample_ms: 1000,
            observers: 64,
            orgs: vec!["acme".into(), "globex".into(), "initech".into()],
            membership: GossipSettings::default(),
            placement: PlacementSettings::default(),
            regions: vec![Region { name: "local".into(), weight: 1.0 }],
            network: NetworkSection::default(),
            node_classes: vec![NodeClass::default()],
            workload: Workload::default(),
            faults: Faults::default(),
            byzantine: Byzantine::default(),
        }
    }
}

/// A region: nodes in one region are close to each other.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Its share of nodes (relative).
    pub weight: f64,
}

/// Latency, loss, bandwidth, timeouts, clocks.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// One-way base latency inside a region.
    pub intra_region_ms: f64,
    /// One-way base latency between regions (unless `latency_ms` says otherwise).
    pub inter_region_ms: f64,
    /// Optional one-way base latency per region pair, `latency_ms[a][b]`.
    pub latency_ms: Vec<Vec<f64>>,
    /// Median of the log-normal jitter added to every message.
    pub jitter_ms: f64,
    /// Its shape (sigma of the underlying normal).
    pub jitter_sigma: f64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Each node's uplink: a message waits for the ones before it to be serialized.
    pub bandwidth_mbps: f64,
    /// A request lost or unanswered fails this long after it was sent.
    pub request_timeout_ms: u64,
    /// Each node's clock is off by up to this much (uniform, either way).
    pub clock_skew_ms: u64,
    /// A restarted node draws a new clock offset (as after an NTP step).
    pub skew_on_restart: bool,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            intra_region_ms: 0.5,
            inter_region_ms: 30.0,
            latency_ms: Vec::new(),
            jitter_ms: 0.5,
            jitter_sigma: 0.6,
            loss: 0.0,
            bandwidth_mbps: 1000.0,
            request_timeout_ms: 5000,
            clock_skew_ms: 0,
            skew_on_restart: false,
        }
    }
}

/// A kind of node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeClass {
    /// Share of nodes (relative).
    pub weight: f64,
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory.
    pub memory_mb: u64,
    /// Task slots.
    pub slots: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Default for NodeClass {
    fn default() -> Self {
        Self { weight: 1.0, cpu_millis: 4000, memory_mb: 8192, slots: 4, labels: BTreeMap::new() }
    }
}

/// What the tasks look like and how fast they come.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Offered work / total capacity (on the scarcest resource); sets the Poisson arrival rate.
    pub load: f64,
    /// Task durations.
    pub duration: Duration,
    /// Resource shapes and their share.
    pub shapes: Vec<Shape>,
    /// Share of tasks constrained to one org.
    pub org_constrained: f64,
    /// Share of tasks constrained to a label, drawn from `label_constraints`.
    pub label_constrained: f64,
    /// `key=value` labels a constrained task may require.
    pub label_constraints: Vec<String>,
    /// `max_attempts` of every task.
    pub max_attempts: u32,
    /// `queue_timeout_s` of every task.
    pub queue_timeout_s: u64,
    /// Share of tasks whose origin is asked to cancel them (`Engine::cancel`) some seconds after
    /// submission (see `workload::outputs_and_cancels`).
    pub cancel_fraction: f64,
    /// A CSV trace to replay instead of Poisson arrivals:
    /// `at_s,cpu_millis,memory_mb,duration_s[,org][,label]`, relative to the end of warm-up.
    pub trace: Option<String>,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            load: 0.5,
            duration: Duration::default(),
            shapes: vec![Shape { weight: 1.0, cpu_millis: 1000, memory_mb: 1024 }],
            org_constrained: 0.0,
            label_constrained: 0.0,
            label_constraints: Vec::new(),
            max_attempts: 3,
            queue_timeout_s: 600,
            cancel_fraction: 0.0,
            trace: None,
        }
    }
}

/// A task duration distribution.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Duration {
    /// Exponential with this mean.
    Exponential {
        /// Mean, seconds.
        mean_s: f64,
    },
    /// Uniform between two bounds.
    Uniform {
        /// Shortest, seconds.
        min_s: f64,
        /// Longest, seconds.
        max_s: f64,
    },
    /// Log-normal with this median.
    Lognormal {
        /// Median, seconds.
        median_s: f64,
        /// Sigma of the underlying normal.
        sigma: f64,
    },
}

impl Default for Duration {
    fn default() -> Self {
        Duration::Exponential { mean_s: 20.0 }
    }
}

impl Duration {
    /// The mean, seconds.
    pub fn mean_s(&self) -> f64 {
        match *self {
            Duration::Exponential { mean_s } => mean_s,
            Duration::Uniform { min_s, max_s } => (min_s + max_s) / 2.0,
            Duration::Lognormal { median_s, sigma } => median_s * (sigma * sigma / 2.0).exp(),
        }
    }
}

/// A task resource shape.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Share of tasks (relative).
    pub weight: f64,
    /// CPU.
    pub cpu_millis: u32,
    /// Memory.
    pub memory_mb: u64,
}

/// Faults, all drawn from the seed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Random crashes (and restarts).
    pub churn: Option<Churn>,
    /// Scheduled crashes.
    pub crashes: Vec<Crash>,
    /// Partitions that open and heal.
    pub partitions: Vec<Partition>,
    /// Processes frozen for a while (GC pause, starved VM): their timers fire late.
    pub pauses: Vec<Pause>,
}

/// Crashes at a Poisson rate, each of a random live node, which restarts after a random delay.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Crashes per simulated second, whole mesh.
    pub rate_per_s: f64,
    /// From.
    pub start_s: f64,
    /// Until.
    pub end_s: f64,
    /// Shortest downtime.
    pub down_min_s: f64,
    /// Longest downtime; a negative value means the node never comes back.
    pub down_max_s: f64,
}

/// `count` random nodes crash at `at_s` and restart after `down_s` (never if absent).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {
    /// When.
    pub at_s: f64,
    /// How many.
    pub count: usize,
    /// Downtime.
    pub down_s: Option<f64>,
}

/// From `at_s` to `heal_s`, the nodes of `regions` (or a random `fraction` of nodes) cannot
/// reach the others.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Opens.
    pub at_s: f64,
    /// Heals.
    pub heal_s: f64,
    /// Cut off these regions...
    #[serde(default)]
    pub regions: Vec<String>,
    /// ... or this share of nodes.
    #[serde(default)]
    pub fraction: f64,
}

/// `count` random nodes freeze at `at_s` for `pause_s`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// When.
    pub at_s: f64,
    /// How many.
    pub count: usize,
    /// How long.
    pub pause_s: f64,
}

/// What the hostile nodes do (`[byzantine]`). The attackers are drawn from the seed alone, so the
/// same nodes are hostile whatever the attack, and `honest = true` gives the baseline: the same
/// nodes, the same capacity, behaving.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Byzantine {
    /// The attack; none by default.
    pub attack: Option<Attack>,
    /// Share of the nodes that attack.
    pub fraction: f64,
    /// The attackers behave as honest nodes (the baseline run of the same scenario and seed).
    pub honest: bool,
    /// `forge_heartbeats`: forged entries added to every digest (`Syn`) and `Ack` an attacker sends.
    pub forged_per_message: usize,
    /// `forge_heartbeats`: a "leading" forgery claims the victim's heartbeat plus this many beats.
    pub lead_beats: u64,
    /// `flood_bids`: bid requests per second each attacker sends, for made-up tasks.
    pub bids_per_s: f64,
    /// `mint_identities`: pushes per second each attacker sends, each of `records_per_push`
    /// freshly minted, validly signed records.
    pub pushes_per_s: f64,
    /// `mint_identities`: records per push.
    pub records_per_push: usize,
}

impl Default for Byzantine {
    fn default() -> Self {
        Self {
            attack: None,
            fraction: 0.1,
            honest: false,
            forged_per_message: 32,
            lead_beats: 20,
            bids_per_s: 100.0,
            pushes_per_s: 1.0,
            records_per_push: 8,
        }
    }
}

/// The attacks a hostile node can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// Digests and acks name honest victims with their generation and a made-up heartbeat: `u64::MAX`
    /// (the old freeze), a lead of `lead_beats`, or a stale one.
    ForgeHeartbeats,
    /// Offers with the highest score; commits taken, leases renewed, never finished.
    BidHighNeverFinish,
    /// Bid requests for made-up tasks, `bids_per_s` per attacker, to random hosts.
    FloodBids,
    /// Pushes of freshly minted identities' signed records.
    MintIdentities,
    /// Lease answers naming other origins' attempts on the renewing host in their stop and
    /// cancel lists.
    ForeignLeases,
}

impl Attack {
    /// Its name in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            Attack::ForgeHeartbeats => "forge_heartbeats",
            Attack::BidHighNeverFinish => "bid_high_never_finish",
            Attack::FloodBids => "flood_bids",
            Attack::MintIdentities => "mint_identities",
            Attack::ForeignLeases => "foreign_leases",
        }
    }
}

impl Scenario {
    /// The same scenario with the attackers behaving: the baseline of a byzantine run. Two
    /// scenarios that differ only in their attack have the same baseline.
    pub fn honest_baseline(&self) -> Scenario {
        let mut s = self.clone();
        s.byzantine = Byzantine { fraction: self.byzantine.fraction, honest: true, ..Byzantine::default() };
        s
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut s: Scenario =
            toml::from_str(&text).with_context(|| format!("invalid scenario {}", path.display()))?;
        // A trace path is relative to the scenario file.
        if let (Some(trace), Some(dir)) = (&s.workload.trace, path.parent()) {
            s.workload.trace = Some(dir.join(trace).to_string_lossy().into_owned());
        }
        Ok(s)
    }

    /// Parses a scenario from text (tests).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }
}
