//! The simulated world: every node is a `protocol::engine::Engine`, the same one the node runs,
//! and this drives it as the node's event loop does, with everything around it simulated: the
//! network (every message encoded and decoded by `protocol::wire` at its limit), each node's
//! durable store, the executor (a duration and a deterministic output), faults and the workload;
//! and the checkers that watch it all. Nothing here decides anything about a task or a peer: that
//! is the engine's, and a rule written here would be a second copy of the node. One seed, one
//! run: all randomness comes from ChaCha streams derived from the seed, one per purpose, and
//! every ordering comes from the event queue.

use std::collections::{BTreeMap, VecDeque};

use orgmesh_protocol::engine::{
    Engine, EngineCounters, EngineParts, Event, Exit, Input, LifeConfig, Now, Output, ReplyId, Request,
    RequestId, Response, Write,
};
use orgmesh_protocol::lifecycle::LeaseConfig;
use orgmesh_protocol::membership::{Membership, MembershipEvent, PeerState};
use orgmesh_protocol::placement::{Host, HostConfig, Negotiator};
use orgmesh_protocol::record::InsecureTestKeyring;
use orgmesh_protocol::task::{Constraints, TaskOrigin};
use orgmesh_protocol::wire::gossip::{GossipRequest, GossipResponse};
use orgmesh_protocol::wire::place::{PlaceRequest, PlaceResponse};
use orgmesh_protocol::wire::receipt::{ReceiptRequest, ReceiptResponse};
use orgmesh_protocol::wire::task::{TaskRequest, TaskResponse};
use orgmesh_protocol::wire::{self, limits};
use orgmesh_protocol::{
    AcceptPolicy, Attempt, NodeRecord, Org, PeerId, RecordVersion, Resources, Task, TaskId, TaskSpec,
    TaskStatus, Time, Timestamp,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod byzantine;

use crate::executor::{self, Process};
use crate::net::{Network, Transit};
use crate::pool::RecordPool;
use crate::queue::EventQueue;
use crate::report::{Report, Violation};
use crate::scenario::Scenario;
use crate::stats::Stats;
use crate::store::{self, Store};
use crate::workload::{self, Arrival, NodeShape};

/// Unix ms at simulated time zero (wall clocks add each node's skew).
const WALL_BASE_MS: u64 = 1_800_000_000_000;
/// Bootstrap contacts each node starts with.
const BOOTSTRAP: usize = 3;
/// Violations of one kind kept in the report (the first names the event to replay).
const MAX_VIOLATIONS: usize = 20;

/// Separate random streams, so that a change in one (say, more messages) does not reshuffle the
/// others (say, which nodes crash).
#[derive(Clone, Copy)]
enum Purpose {
    Network = 1,
    Workload = 2,
    Faults = 3,
    Layout = 4,
    Membership = 5,
    Negotiator = 6,
    Observers = 7,
    Lifecycle = 8,
    Outputs = 9,
    Byzantine = 10,
}

fn stream(seed: u64, purpose: Purpose, a: u64, b: u64) -> ChaCha8Rng {
    // SplitMix64 finalizer over the inputs: well-spread, independent seeds.
    let mut z =
        seed ^ (purpose as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ a.rotate_left(21) ^ b.rotate_left(42);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// The three request-response protocols, as the bytes on the wire say which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Gossip,
    Place,
    Task,
    Receipt,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Gossip => "gossip",
            Proto::Place => "place",
            Proto::Task => "task",
            Proto::Receipt => "receipt",
        }
    }

    fn limit(self) -> usize {
        match self {
            Proto::Gossip => limits::GOSSIP,
            Proto::Place => limits::PLACE,
            Proto::Task => limits::TASK,
            Proto::Receipt => limits::RECEIPT,
        }
    }
}

#[derive(Debug)]
struct Msg {
    from: usize,
    to: usize,
    proto: Proto,
    /// The requester's id for the request, which its answer (or failure) carries back.
    id: RequestId,
    /// The incarnation of the requester, so an answer to a crashed process is dropped.
    requester_inc: u32,
    sent_at: u64,
    is_request: bool,
    bytes: Vec<u8>,
}

impl Msg {
    fn requester(&self) -> usize {
        if self.is_request { self.from } else { self.to }
    }
}

#[derive(Debug)]
enum Ev {
    Timer {
        node: usize,
        inc: u32,
    },
    Deliver(Box<Msg>),
    Failed {
        node: usize,
        inc: u32,
        id: RequestId,
    },
    Arrival(usize),
    /// The user asks the origin to cancel the task (through its API, so it waits for a paused
    /// process, and is refused by a down one).
    Cancel {
        node: usize,
        task: TaskId,
    },
    TaskEnd {
        node: usize,
        inc: u32,
        task: TaskId,
        attempt: Attempt,
    },
    Crash {
        node: Option<usize>,
        down_us: Option<u64>,
    },
    Restart {
        node: usize,
    },
    PartitionOpen(usize),
    PartitionHeal,
    Pause {
        count: usize,
        pause_us: u64,
    },
    Churn,
    EndOfFaults,
    Sample,
    /// An attacker injects its next scripted message (`world/byzantine.rs`).
    Adversary {
        node: usize,
    },
}

impl Ev {
    /// The node an event happens at, if it is one node's.
    fn node(&self) -> Option<usize> {
        match self {
            Ev::Timer { node, .. }
            | Ev::Failed { node, .. }
            | Ev::TaskEnd { node, .. }
            | Ev::Cancel { node, .. } => Some(*node),
            Ev::Deliver(m) => Some(m.to),
            Ev::Restart { node } | Ev::Adversary { node } => Some(*node),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Ev::Timer { .. } => "timer",
            Ev::Deliver(m) => match (m.proto, m.is_request) {
                (Proto::Gossip, true) => "gossip-request",
                (Proto::Gossip, false) => "gossip-response",
                (Proto::Place, true) => "place-request",
                (Proto::Place, false) => "place-response",
                (Proto::Task, true) => "task-request",
                (Proto::Task, false) => "task-response",
                (Proto::Receipt, true) => "receipt-request",
                (Proto::Receipt, false) => "receipt-response",
            },
            Ev::Failed { .. } => "request-failed",
            Ev::Arrival(_) => "arrival",
            Ev::Cancel { .. } => "cancel",
            Ev::TaskEnd { .. } => "task-end",
            Ev::Crash { .. } => "crash",
            Ev::Restart { .. } => "restart",
            Ev::PartitionOpen(_) => "partition",
            Ev::PartitionHeal => "heal",
            Ev::Pause { .. } => "pause",
            Ev::Churn => "churn",
            Ev::EndOfFaults => "end-of-faults",
            Ev::Sample => "sample",
            Ev::Adversary { .. } => "adversary",
        }
    }
}

/// What one step of a node's engine is fed.
#[derive(Debug)]
// Fed once each, out of a short queue drained at once (as the engine's own `Input`).
#[allow(clippy::large_enum_variant)]
enum Feed {
    Input(Input),
    Timeout,
    Cancel(TaskId),
}

/// A peer's request the engine has not answered yet: where the answer goes.
#[derive(Debug)]
struct Reply {
    to: usize,
    proto: Proto,
    id: RequestId,
    requester_inc: u32,
}

/// The parts of a node that die with its process.
struct Live {
    engine: Engine<ChaCha8Rng>,
    replies: BTreeMap<ReplyId, Reply>,
    next_reply: u64,
    /// Attempts whose process runs here.
    processes: BTreeMap<(TaskId, Attempt), Process>,
    /// When each task's first negotiation since the last placement started (global µs), for
    /// placement latency.
    place_started: BTreeMap<TaskId, u64>,
}

struct SimNode {
    id: PeerId,
    org: Org,
    labels: BTreeMap<String, String>,
    host_config: HostConfig,
    /// Local monotonic clock = global ms + `offset_ms`.
    offset_ms: u64,
    /// Wall clock = base + global ms + `skew_ms`.
    skew_ms: i64,
    inc: u32,
    live: Option<Live>,
    /// Durable: survives crashes, as the node's redb and spool files do.
    store: Store,
    /// Counters of the engines this node ran before its last crash.
    counters: EngineCounters,
    bootstrap: Vec<usize>,
    timer_at: Option<u64>,
    paused_until: u64,
}

/// Where a task's ground truth stands.
#[derive(Debug, Default)]
struct Truth {
    origin: usize,
    arrival: usize,
    submitted_us: u64,
    first_start_us: Option<u64>,
    /// When each attempt started.
    starts: BTreeMap<Attempt, u64>,
    result: Option<(Attempt, u64)>,
    /// A terminal status was written (the first one, which must be the last).
    ended: Option<TaskStatus>,
    /// Attempts whose run a crash destroyed: (event index, time, host).
    lost_runs: BTreeMap<Attempt, (u64, u64, usize)>,
}

/// Cancels asked for through the workload, and what came of them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cancels {
    /// Asked of an origin that was up.
    pub(crate) requested: u64,
    /// The engine took them (the task had not ended).
    pub(crate) accepted: u64,
    /// Asked of an origin that was down.
    pub(crate) refused: u64,
}

/// A run in progress.
pub(crate) struct World {
    s: Scenario,
    seed: u64,
    q: EventQueue<Ev>,
    now: u64,
    event_index: u64,
    /// Events handled (stops short of `--until-event`).
    handled: u64,
    nodes: Vec<SimNode>,
    index: BTreeMap<PeerId, usize>,
    net: Network,
    faults_rng: ChaCha8Rng,
    arrivals: Vec<Arrival>,
    shapes: Vec<NodeShape>,
    truths: BTreeMap<TaskId, Truth>,
    task_of_arrival: Vec<Option<TaskId>>,
    cpu_us_in_window: f64,
    pub(crate) stats: Stats,
    cancels: Cancels,
    /// Log bytes checked against what the accepted attempts printed.
    log_bytes_checked: u64,
    violations: Vec<Violation>,
    observers: Vec<usize>,
    trace: bool,
    end_us: u64,
    faults_end_us: u64,
    /// Every message is still encoded and decoded in full; decoded records are then shared.
    records: RecordPool,
    /// The hostile nodes and what they did (none in most scenarios).
    adv: byzantine::Adversary,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("seed", &self.seed).field("now", &self.now).finish_non_exhaustive()
    }
}

fn peer_id(i: usize) -> PeerId {
    // Base58 has no '0': spell the digits as letters, padded to the width of 99,999 nodes.
    let tag: String = format!("{i:05}").bytes().map(|d| char::from(b'a' + (d - b'0'))).collect();
    PeerId::new(format!("12D3KooWsim{tag}")).unwrap_or_else(|_| unreachable!("letters are base58"))
}

impl World {
    /// Sets up the mesh, the workload and the faults of `s` for `seed`.
    pub(crate) fn new(s: Scenario, seed: u64, trace: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(s.nodes >= 1, "a scenario needs at least one node");
        anyhow::ensure!(!s.node_classes.is_empty() && !s.regions.is_empty(), "node classes and regions");
        let mut layout = stream(seed, Purpose::Layout, 0, 0);
        let n = s.nodes;
        let orgs: Vec<Org> = s
            .orgs
            .iter()
            .map(|o| Org::new(o.clone()))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!orgs.is_empty(), "a scenario needs at least one org");
        let mut nodes = Vec::with_capacity(n);
        let mut region_of = Vec::with_capacity(n);
        let mut shapes = Vec::with_capacity(n);
        let class_w: f64 = s.node_classes.iter().map(|c| c.weight).sum();
        let region_w: f64 = s.regions.iter().map(|r| r.weight).sum();
        for i in 0..n {
            let pick = |rng: &mut ChaCha8Rng, total: f64, ws: &mut dyn Iterator<Item = f64>| {
                let mut x = rng.random::<f64>() * total;
                let mut k = 0;
                for (j, w) in ws.enumerate() {
                    k = j;
                    x -= w;
                    if x < 0.0 {
                        break;
                    }
                }
                k
            };
            let class =
                &s.node_classes[pick(&mut layout, class_w, &mut s.node_classes.iter().map(|c| c.weight))];
            let region = pick(&mut layout, region_w, &mut s.regions.iter().map(|r| r.weight));
            let skew_ms = if s.network.clock_skew_ms > 0 {
                layout.random_range(-(s.network.clock_skew_ms as i64)..=s.network.clock_skew_ms as i64)
            } else {
                0
            };
            let mut labels = class.labels.clone();
            labels.insert("region".into(), s.regions[region].name.clone());
            let host_config = HostConfig {
                cpu_millis: class.cpu_millis,
                memory_mb: class.memory_mb,
                gpus: 0,
                slots: class.slots,
                reservation_ttl: s.placement.reservation_ttl(),
            };
            shapes.push(NodeShape {
                cpu_millis: class.cpu_millis,
                memory_mb: class.memory_mb,
                slots: class.slots,
                org: i % orgs.len(),
                labels: labels.clone(),
            });
            let mut bootstrap: Vec<usize> = Vec::new();
            if n > 1 {
                while bootstrap.len() < BOOTSTRAP.min(n - 1) {
                    let j = layout.random_range(0..n);
                    if j != i && !bootstrap.contains(&j) {
                        bootstrap.push(j);
                    }
                }
            }
            region_of.push(region);
            nodes.push(SimNode {
                id: peer_id(i),
                org: orgs[i % orgs.len()].clone(),
                labels,
                host_config,
                offset_ms: 1_000_000,
                skew_ms,
                inc: 0,
                live: None,
                store: Store::default(),
                counters: EngineCounters::default(),
                bootstrap,
                timer_at: None,
                paused_until: 0,
            });
        }
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();
        let net =
            Network::new(s.network.clone(), s.regions.len(), region_of, stream(seed, Purpose::Network, 0, 0));
        let mut arrivals = workload::arrivals(&s, &shapes, &mut stream(seed, Purpose::Workload, 0, 0))?;
        workload::outputs_and_cancels(&s, &mut arrivals, &mut stream(seed, Purpose::Outputs, 0, 0));
        let mut obs: Vec<usize> = (0..n).collect();
        obs.shuffle(&mut stream(seed, Purpose::Observers, 0, 0));
        obs.truncate(s.observers.max(1));
        obs.sort_unstable();
        let end_us = ((s.duration_s + s.drain_s) * 1e6) as u64;
        let faults_end_us = (s.duration_s * 1e6) as u64;
        let mut w = World {
            seed,
            q: EventQueue::new(),
            now: 0,
            event_index: 0,
            handled: 0,
            index,
            net,
            faults_rng: stream(seed, Purpose::Faults, 0, 0),
            task_of_arrival: vec![None; arrivals.len()],
            arrivals,
            shapes,
            truths: BTreeMap::new(),
            cpu_us_in_window: 0.0,
            stats: Stats::new(n, (s.warmup_s * 1e6) as u64),
            cancels: Cancels::default(),
            log_bytes_checked: 0,
            violations: Vec::new(),
            observers: obs,
            trace,
            end_us,
            faults_end_us,
            records: RecordPool::default(),
            adv: byzantine::Adversary::new(
                s.byzantine.attack.filter(|_| !s.byzantine.honest),
                s.byzantine.fraction,
                s.byzantine.attack.is_some() || s.byzantine.honest,
                n,
                stream(seed, Purpose::Byzantine, 0, 0),
            ),
            nodes,
            s,
        };
        for i in 0..n {
            w.start_node(i);
        }
        for (k, a) in w.arrivals.iter().enumerate() {
            w.q.push(a.at_us, Ev::Arrival(k));
        }
        let faults = w.s.faults.clone();
        for c in &faults.crashes {
            for _ in 0..c.count {
                let down_us = c.down_s.map(|d| (d * 1e6) as u64);
                w.q.push((c.at_s * 1e6) as u64, Ev::Crash { node: None, down_us });
            }
        }
        for (k, p) in faults.partitions.iter().enumerate() {
            w.q.push((p.at_s * 1e6) as u64, Ev::PartitionOpen(k));
            w.q.push((p.heal_s * 1e6) as u64, Ev::PartitionHeal);
        }
        for p in &faults.pauses {
            w.q.push((p.at_s * 1e6) as u64, Ev::Pause { count: p.count, pause_us: (p.pause_s * 1e6) as u64 });
        }
        if let Some(c) = &faults.churn {
            w.q.push((c.start_s * 1e6) as u64, Ev::Churn);
        }
        w.q.push(faults_end_us, Ev::EndOfFaults);
        w.q.push(0, Ev::Sample);
        w.schedule_adversary();
        Ok(w)
    }

    fn local_now(&self, i: usize) -> Now {
        let time = Time(self.now / 1000 + self.nodes[i].offset_ms);
        Now { time, wall: Timestamp(self.wall_ms(i)) }
    }

    fn wall_ms(&self, i: usize) -> u64 {
        (WALL_BASE_MS as i64 + (self.now / 1000) as i64 + self.nodes[i].skew_ms) as u64
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].live.is_some()
    }

    /// Starts (or restarts) node `i`'s process: a new engine with a new generation (its wall
    /// clock at start, as `node/src/run.rs` does), the shipped lease and life timing, taking
    /// over what its store kept.
    fn start_node(&mut self, i: usize) {
        let inc = self.nodes[i].inc;
        let wall = self.wall_ms(i);
        let config = self.s.membership.to_config();
        let node = &self.nodes[i];
        let host =
            Host::new(node.host_config.clone(), node.org.clone(), node.labels.clone(), AcceptPolicy::AnyOrg);
        let record = NodeRecord {
            peer_id: node.id.clone(),
            org: node.org.clone(),
            name: format!("n{i}"),
            addrs: vec![format!("/ip4/10.{}.{}.{}/tcp/4001", i >> 16, (i >> 8) & 255, i & 255)],
            labels: node.labels.clone(),
            capacity: host.capacity(),
            accepts: AcceptPolicy::AnyOrg,
            draining: false,
            isolation: Default::default(),
            software: "sim".into(),
            version: RecordVersion { generation: wall, version: 1 },
        };
        let now = self.local_now(i);
        let keyring = Box::new(InsecureTestKeyring::new(node.id.clone()));
        let membership = Membership::new(
            record,
            keyring,
            config,
            stream(self.seed, Purpose::Membership, i as u64, u64::from(inc)),
            now.time,
        );
        let negotiator = Negotiator::new(
            node.id.clone(),
            node.org.clone(),
            self.s.placement.to_config(),
            stream(self.seed, Purpose::Negotiator, i as u64, u64::from(inc)),
        );
        let parts = EngineParts {
            membership,
            negotiator,
            host,
            leases: LeaseConfig::default(),
            life: LifeConfig::default(),
            rng: stream(self.seed, Purpose::Lifecycle, i as u64, u64::from(inc)),
            keyring: Box::new(InsecureTestKeyring::new(node.id.clone())),
        };
        let (tasks, runs) = node.store.recovered();
        let mut engine = Engine::new(parts, tasks, runs, now);
        for &b in &node.bootstrap {
            engine.add_contact(self.nodes[b].id.clone(), now, &node.store);
        }
        self.nodes[i].live = Some(Live {
            engine,
            replies: BTreeMap::new(),
            next_reply: 0,
            processes: BTreeMap::new(),
            place_started: BTreeMap::new(),
        });
        self.stats.generation_started(i, wall, self.now);
        self.feed(i, []);
    }

    /// Runs to the end (or to event `until`); returns the report.
    pub(crate) fn run(mut self, until: Option<u64>, progress_s: Option<f64>) -> Report {
        let wall = std::time::Instant::now();
        // (every, next line due), both in simulated µs.
        let mut progress = progress_s.filter(|s| *s > 0.0).map(|s| ((s * 1e6) as u64).max(1)).map(|e| (e, e));
        while let Some((at, index, ev)) = self.q.pop() {
            if at > self.end_us || until.is_some_and(|u| index >= u) {
                break;
            }
            while let Some((every, due)) = progress.as_mut().filter(|(_, due)| at >= *due) {
                eprintln!(
                    "progress: t={:.0}s events={index} wall={:.1}s cpu={}",
                    *due as f64 / 1e6,
                    wall.elapsed().as_secs_f64(),
                    cpu_seconds().map_or("?".into(), |c| format!("{c:.1}s")),
                );
                *due += *every;
            }
            self.now = at;
            self.event_index = index;
            self.handled = index + 1;
            // A frozen process handles nothing until it thaws; what arrives waits, in order.
            if let Some(i) = ev.node()
                && self.nodes[i].paused_until > at
            {
                let until = self.nodes[i].paused_until;
                self.q.push(until, ev);
                continue;
            }
            if self.trace {
                eprintln!("#{index} t={:.6}s node={:?} {}", at as f64 / 1e6, ev.node(), ev.kind());
            }
            self.handle(ev);
        }
        if until.is_none() {
            self.now = self.now.max(self.end_us);
        }
        self.finish(wall.elapsed())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Timer { node, inc } => {
                // The armed timer, or one a pause held back past its time; an event of a timer
                // since re-armed later is stale.
                if self.nodes[node].inc != inc || self.nodes[node].timer_at.is_none_or(|t| t > self.now) {
                    return;
                }
                self.nodes[node].timer_at = None;
                self.feed(node, [Feed::Timeout]);
            }
            Ev::Deliver(msg) => self.on_deliver(*msg),
            Ev::Failed { node, inc, id } => {
                if self.nodes[node].inc == inc && self.up(node) {
                    self.feed(node, [Feed::Input(Input::RequestFailed { id })]);
                }
            }
            Ev::Arrival(k) => self.on_arrival(k),
            Ev::Cancel { node, task } => {
                if self.up(node) {
                    self.cancels.requested += 1;
                    self.feed(node, [Feed::Cancel(task)]);
                } else {
                    self.cancels.refused += 1;
                }
            }
            Ev::TaskEnd { node, inc, task, attempt } => {
                if self.nodes[node].inc == inc && self.up(node) {
                    self.on_task_end(node, task, attempt);
                }
            }
            Ev::Crash { node, down_us } => {
                let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
                let target =
                    node.or_else(|| (!up.is_empty()).then(|| up[self.faults_rng.random_range(0..up.len())]));
                if let Some(i) = target.filter(|&i| self.up(i)) {
                    self.crash(i);
                    if let Some(d) = down_us {
                        self.q.push(self.now + d, Ev::Restart { node: i });
                    }
                }
            }
            Ev::Restart { node } => {
                if !self.up(node) {
                    if self.s.network.skew_on_restart && self.s.network.clock_skew_ms > 0 {
                        let m = self.s.network.clock_skew_ms as i64;
                        self.nodes[node].skew_ms = self.faults_rng.random_range(-m..=m);
                    }
                    self.start_node(node);
                }
            }
            Ev::PartitionOpen(k) => self.open_partition(k),
            Ev::PartitionHeal => {
                self.net.heal();
                self.stats.healed(self.now);
            }
            Ev::Pause { count, pause_us } => {
                let mut up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
                up.shuffle(&mut self.faults_rng);
                for &i in up.iter().take(count) {
                    self.nodes[i].paused_until = self.now + pause_us;
                    self.stats.paused(i, self.now, pause_us);
                }
            }
            Ev::Churn => self.churn(),
            Ev::EndOfFaults => {
                self.net.heal();
            }
            Ev::Sample => {
                self.sample();
                self.q.push(self.now + self.s.sample_ms * 1000, Ev::Sample);
            }
            Ev::Adversary { node } => self.on_adversary(node),
        }
    }

    fn churn(&mut self) {
        let Some(c) = self.s.faults.churn.clone() else { return };
        if self.now >= (c.end_s * 1e6) as u64 || self.now >= self.faults_end_us {
            return;
        }
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
        // Never take down the last live node: a mesh of none measures nothing.
        if up.len() > 1 {
            let i = up[self.faults_rng.random_range(0..up.len())];
            self.crash(i);
            if c.down_max_s >= 0.0 {
                let d = c.down_min_s + (c.down_max_s - c.down_min_s) * self.faults_rng.random::<f64>();
                self.q.push(self.now + (d * 1e6) as u64, Ev::Restart { node: i });
            }
        }
        let gap = -(1.0 - self.faults_rng.random::<f64>()).ln() / c.rate_per_s;
        self.q.push(self.now + (gap * 1e6) as u64, Ev::Churn);
    }

    fn open_partition(&mut self, k: usize) {
        let p = self.s.faults.partitions[k].clone();
        let mut cut: Vec<usize> = if p.regions.is_empty() {
            let mut all: Vec<usize> = (0..self.nodes.len()).collect();
            all.shuffle(&mut self.faults_rng);
            all.truncate((p.fraction * self.nodes.len() as f64).round() as usize);
            all
        } else {
            (0..self.nodes.len())
                .filter(|&i| p.regions.contains(&self.s.regions[self.net.region(i)].name))
                .collect()
        };
        cut.sort_unstable();
        self.net.partition(&cut);
        self.stats.partitioned(self.now, cut.len());
    }

    /// The process dies: its engine (membership, negotiations, ledger, task table, reporter) and
    /// every attempt's process go with it; its store stays.
    fn crash(&mut self, i: usize) {
        let Some(live) = self.nodes[i].live.take() else { return };
        let c = live.engine.counters();
        let total = &mut self.nodes[i].counters;
        total.stale_reports += c.stale_reports;
        total.attempts_lost += c.attempts_lost;
        total.attempts_expired += c.attempts_expired;
        total.attempts_overdue += c.attempts_overdue;
        total.foreign_entries += c.foreign_entries;
        total.forged_heartbeats += c.forged_heartbeats;
        self.nodes[i].inc += 1;
        self.nodes[i].timer_at = None;
        for ((task, attempt), p) in live.processes {
            if let Some(t) = self.truths.get_mut(&task) {
                t.lost_runs.insert(attempt, (self.event_index, self.now, i));
            }
            // What it printed so far stays in its spool, as a file does.
            self.nodes[i].store.spools.insert((task, attempt), p.spooled_by(self.now));
            self.account_run(p.started_us, self.now, p.cpu_millis);
        }
        self.stats.crashed(i, self.now);
    }

    fn account_run(&mut self, start: u64, end: u64, cpu: u32) {
        let window = ((self.s.warmup_s * 1e6) as u64, self.faults_end_us);
        let overlap = end.min(window.1).saturating_sub(start.max(window.0));
        self.cpu_us_in_window += f64::from(cpu) * overlap as f64;
    }

    // ---- the node's event loop: one step of the engine, and its outputs carried out ----

    /// Feeds node `i`'s engine, then carries out every output, feeding back what they produce
    /// (durable writes, started attempts, spool reads, failed sends) until the engine is quiet;
    /// then arms its timer at the engine's earliest deadline.
    fn feed(&mut self, i: usize, first: impl IntoIterator<Item = Feed>) {
        let mut queue: VecDeque<Feed> = first.into_iter().collect();
        let mut timed_out = false;
        loop {
            while let Some(out) = self.nodes[i].live.as_mut().and_then(|l| l.engine.poll_output()) {
                self.on_output(i, out, &mut queue);
            }
            let Some(feed) = queue.pop_front() else { break };
            let now = self.local_now(i);
            let node = &mut self.nodes[i];
            let Some(live) = node.live.as_mut() else { return };
            match feed {
                Feed::Input(input) => live.engine.handle(input, now, &node.store),
                Feed::Timeout => {
                    timed_out = true;
                    live.engine.handle_timeout(now, &node.store);
                }
                Feed::Cancel(task) => {
                    if live.engine.cancel(task, now, &node.store) {
                        self.cancels.accepted += 1;
                    }
                }
            }
        }
        self.arm_timer(i, timed_out);
    }

    /// Arms node `i`'s timer at its engine's earliest deadline. A deadline the timeout just
    /// handled left due (a batch of waiting tasks larger than one pass takes) fires a
    /// millisecond later, the timer's resolution, rather than again at the same instant.
    fn arm_timer(&mut self, i: usize, timed_out: bool) {
        let node = &self.nodes[i];
        let Some(deadline) = node.live.as_ref().and_then(|l| l.engine.poll_timeout()) else { return };
        let mut at = deadline.0.saturating_sub(node.offset_ms).saturating_mul(1000).max(self.now);
        if timed_out && at <= self.now {
            at = self.now + 1000;
        }
        if node.timer_at.is_none_or(|t| at < t) {
            let inc = node.inc;
            self.nodes[i].timer_at = Some(at);
            self.q.push(at, Ev::Timer { node: i, inc });
        }
    }

    fn on_output(&mut self, i: usize, out: Output, queue: &mut VecDeque<Feed>) {
        match out {
            Output::Send { to, id, request } => self.send_request(i, &to, id, request, queue),
            Output::Respond { reply, response } => self.respond(i, reply, response),
            Output::Persist { id, write } => {
                let result = self.persist(i, write);
                if let Some(id) = id {
                    queue.push_back(Feed::Input(Input::Persisted { id, result }));
                }
            }
            Output::StartAttempt { task, attempt, spec, .. } => {
                let k = self.truths.get(&task).map(|t| t.arrival);
                let (duration_us, output_bytes) = k.map_or((1_000_000, 0), |k| {
                    (self.arrivals[k].duration_us, self.arrivals[k].output_bytes)
                });
                if let Some(t) = self.truths.get_mut(&task) {
                    t.first_start_us.get_or_insert(self.now);
                    t.starts.insert(attempt, self.now);
                }
                self.attempt_started(i, task);
                let never_finishes = self.never_finishes(i);
                let process = Process {
                    started_us: self.now,
                    duration_us,
                    cpu_millis: spec.resources.cpu_millis,
                    output_bytes,
                };
                let node = &mut self.nodes[i];
                let Some(live) = node.live.as_mut() else { return };
                live.processes.insert((task, attempt), process);
                node.store.spools.insert((task, attempt), 0);
                let inc = node.inc;
                if !never_finishes {
                    self.q.push(self.now + duration_us, Ev::TaskEnd { node: i, inc, task, attempt });
                }
                queue.push_back(Feed::Input(Input::AttemptStarted { task, attempt, pgid: None }));
            }
            Output::StopAttempt { task, attempt } => {
                if self.ignores_stop(i, task, attempt) {
                    return;
                }
                let node = &mut self.nodes[i];
                let Some(p) = node.live.as_mut().and_then(|l| l.processes.remove(&(task, attempt))) else {
                    return; // ended already: its exit was reported
                };
                let output_len = p.spooled_by(self.now);
                node.store.spools.insert((task, attempt), output_len);
                self.account_run(p.started_us, self.now, p.cpu_millis);
                // No digest: simulated output is never hashed, so hosts send no receipts here.
                let exit = Exit::plain(None, Some("cancelled".into()), true);
                queue.push_back(Feed::Input(Input::AttemptExited { task, attempt, exit, output_len }));
            }
            Output::ReadLog { task, attempt, offset, max } => {
                let data = self.nodes[i]
                    .store
                    .spools
                    .get(&(task, attempt))
                    .map(|&len| executor::read(task, attempt, len, offset, max));
                queue.push_back(Feed::Input(Input::LogRead { task, attempt, offset, data }));
            }
            Output::ForgetAttempt { task, attempt } => {
                self.nodes[i].store.spools.remove(&(task, attempt));
            }
            Output::Event(event) => self.on_event(i, event),
        }
    }

    /// The attempt's process ran its whole duration and exited 0.
    fn on_task_end(&mut self, i: usize, task: TaskId, attempt: Attempt) {
        let node = &mut self.nodes[i];
        let Some(p) = node.live.as_mut().and_then(|l| l.processes.remove(&(task, attempt))) else {
            return; // stopped before its end
        };
        node.store.spools.insert((task, attempt), p.output_bytes);
        self.account_run(p.started_us, self.now, p.cpu_millis);
        let len = p.output_bytes;
        let exit = Exit::plain(Some(0), None, false);
        self.feed(
            i,
            [
                Feed::Input(Input::AttemptOutput { task, attempt, len }),
                Feed::Input(Input::AttemptExited { task, attempt, exit, output_len: len }),
            ],
        );
    }

    /// Applies a write to node `i`'s store, checking what it says about its task.
    fn persist(&mut self, i: usize, write: Write) -> orgmesh_protocol::engine::Persisted {
        let ended = match &write {
            Write::Task { task, .. } => self.check_task_write(i, task),
            _ => None,
        };
        let result = self.nodes[i].store.apply(write);
        if let Some(task) = ended {
            self.check_log(i, &task);
            self.nodes[i].store.drop_log(task.id);
            if let Some(l) = self.nodes[i].live.as_mut() {
                l.place_started.remove(&task.id);
            }
        }
        result
    }

    /// A task's status, once terminal, never changes. Returns the task if this write ends it.
    fn check_task_write(&mut self, i: usize, task: &Task) -> Option<Task> {
        let t = self.truths.get_mut(&task.id)?;
        match t.ended {
            Some(status) if status != task.status => {
                let detail = format!("task {} ended {status:?}, then was written {:?}", task.id, task.status);
                self.violation("terminal-status-changed", Some(i), detail);
                None
            }
            Some(_) => None,
            None if task.status.is_terminal() => {
                t.ended = Some(task.status);
                Some(task.clone())
            }
            None => None,
        }
    }

    /// The log of a task that ended holds, from its last attempt's first byte, exactly what that
    /// attempt printed: all of it if the task succeeded, a prefix otherwise.
    fn check_log(&mut self, i: usize, task: &Task) {
        let Some(k) = self.truths.get(&task.id).map(|t| t.arrival) else { return };
        let Some(last) = task.history.last() else { return };
        let log = self.nodes[i].store.log(task.id);
        let from = usize::try_from(last.log_start).unwrap_or(usize::MAX).min(log.len());
        let got = &log[from..];
        let want = executor::output(task.id, last.attempt, self.arrivals[k].output_bytes);
        let ok = if task.status == TaskStatus::Succeeded { got == want } else { want.starts_with(got) };
        self.log_bytes_checked += got.len() as u64;
        if !ok {
            let detail = format!(
                "task {} ended {:?} with {} log bytes from {} that are not what attempt {} printed ({} bytes)",
                task.id,
                task.status,
                got.len(),
                last.log_start,
                last.attempt,
                want.len()
            );
            self.violation("log-mismatch", Some(i), detail);
        }
    }

    fn violation(&mut self, kind: &str, node: Option<usize>, detail: String) {
        if self.violations.iter().filter(|v| v.kind == kind).count() >= MAX_VIOLATIONS {
            return;
        }
        self.violations.push(Violation {
            kind: kind.into(),
            event: self.event_index,
            time_s: self.now as f64 / 1e6,
            node,
            detail,
        });
    }

    fn on_event(&mut self, i: usize, event: Event) {
        match event {
            Event::Membership(event) => match event {
                MembershipEvent::Joined { .. } | MembershipEvent::Updated { .. } => {
                    self.stats.record_applied(self.now)
                }
                MembershipEvent::StateChanged { peer, to, .. } => {
                    let up = self.process_judged_is_up(i, &peer);
                    self.stats.state_change(to, up);
                    if up && matches!(to, PeerState::Suspect | PeerState::Dead) {
                        self.verdict(i, &peer, to == PeerState::Dead);
                    }
                }
                MembershipEvent::Rejected { .. } => self.stats.rejected_record(),
                MembershipEvent::Evicted { .. } => {}
            },
            Event::Placing { task, .. } => {
                let now = self.now;
                if let Some(l) = self.nodes[i].live.as_mut() {
                    l.place_started.entry(task).or_insert(now);
                }
            }
            Event::Placed { task, .. } => {
                if let Some(start) = self.nodes[i].live.as_mut().and_then(|l| l.place_started.remove(&task)) {
                    self.stats.placement_latency(self.now - start);
                }
            }
            Event::ResultAccepted { task, attempt } => {
                let now = self.now;
                let Some(t) = self.truths.get_mut(&task) else { return };
                match t.result {
                    Some((a, _)) if a != attempt => {
                        let detail = format!("task {task} accepted results of {a} and {attempt}");
                        self.violation("result-from-two-attempts", Some(i), detail);
                    }
                    Some(_) => {}
                    None => t.result = Some((attempt, now)),
                }
            }
            Event::Declined { .. } => {}
        }
    }

    // ---- network ----

    /// Sends the engine's request; one that cannot go (unknown peer, over its limit) fails.
    fn send_request(
        &mut self,
        i: usize,
        to: &PeerId,
        id: RequestId,
        mut request: Request,
        queue: &mut VecDeque<Feed>,
    ) {
        self.tamper_request(i, &mut request);
        if let Request::Gossip(GossipRequest::Syn { digest }) = &request {
            self.stats.digest(digest.len());
        }
        let (proto, bytes) = match &request {
            Request::Gossip(r) => (Proto::Gossip, wire::encode(r, limits::GOSSIP)),
            Request::Place(r) => (Proto::Place, wire::encode(r, limits::PLACE)),
            Request::Task(r) => (Proto::Task, wire::encode(r, limits::TASK)),
            Request::Receipt(r) => (Proto::Receipt, wire::encode(r, limits::RECEIPT)),
        };
        let Ok(bytes) = bytes.inspect_err(|_| self.stats.oversized()) else {
            queue.push_back(Feed::Input(Input::RequestFailed { id }));
            return;
        };
        let Some(&j) = self.index.get(to) else {
            // A peer no simulated process is (a minted identity): its address leads nowhere, so
            // the dial fails at the request timeout, as a real one would.
            let inc = self.nodes[i].inc;
            self.q.push(self.now + self.net.request_timeout_us(), Ev::Failed { node: i, inc, id });
            return;
        };
        let inc = self.nodes[i].inc;
        self.send(Msg {
            from: i,
            to: j,
            proto,
            id,
            requester_inc: inc,
            sent_at: self.now,
            is_request: true,
            bytes,
        });
    }

    /// Answers a peer's request (or drops its stream: the requester hears at once and retries).
    fn respond(&mut self, i: usize, reply: ReplyId, mut response: Option<Response>) {
        let Some(r) = self.nodes[i].live.as_mut().and_then(|l| l.replies.remove(&reply)) else { return };
        if let Some(response) = response.as_mut() {
            self.tamper_response(i, r.to, response);
        }
        let bytes = match &response {
            Some(Response::Gossip(x)) if r.proto == Proto::Gossip => wire::encode(x, limits::GOSSIP).ok(),
            Some(Response::Place(x)) if r.proto == Proto::Place => wire::encode(x, limits::PLACE).ok(),
            Some(Response::Task(x)) if r.proto == Proto::Task => wire::encode(x, limits::TASK).ok(),
            Some(Response::Receipt(x)) if r.proto == Proto::Receipt => wire::encode(x, limits::RECEIPT).ok(),
            _ => None,
        };
        let Some(bytes) = bytes else {
            if response.is_some() {
                self.stats.oversized();
            }
            let back = self.net.latency_us(i, r.to);
            self.q.push(self.now + back, Ev::Failed { node: r.to, inc: r.requester_inc, id: r.id });
            return;
        };
        self.send(Msg {
            from: i,
            to: r.to,
            proto: r.proto,
            id: r.id,
            requester_inc: r.requester_inc,
            sent_at: self.now,
            is_request: false,
            bytes,
        });
    }

    fn send(&mut self, msg: Msg) {
        self.stats.sent(msg.from, msg.proto.name(), msg.bytes.len(), self.now);
        match self.net.send(msg.from, msg.to, msg.bytes.len(), self.now) {
            Transit::Arrives(at) => self.q.push(at, Ev::Deliver(Box::new(msg))),
            Transit::Lost => {
                // The requester hears of it at its timeout.
                let at = (msg.sent_at + self.net.request_timeout_us()).max(self.now);
                self.q.push(at, Ev::Failed { node: msg.requester(), inc: msg.requester_inc, id: msg.id });
            }
        }
    }

    fn on_deliver(&mut self, msg: Msg) {
        let (from, to) = (msg.from, msg.to);
        if msg.is_request && !self.up(to) {
            // Connection refused: the requester learns after a round trip.
            let back = self.net.latency_us(to, from);
            self.q.push(self.now + back, Ev::Failed { node: from, inc: msg.requester_inc, id: msg.id });
            return;
        }
        if !msg.is_request && (self.nodes[to].inc != msg.requester_inc || !self.up(to)) {
            return; // the process that asked is gone
        }
        self.stats.received(to, msg.proto.name(), self.now);
        let input = if msg.is_request {
            let Some(request) = self.decode_request(msg.proto, &msg.bytes) else {
                // Undecodable: the stream is dropped.
                self.stats.malformed();
                let back = self.net.latency_us(to, from);
                self.q.push(self.now + back, Ev::Failed { node: from, inc: msg.requester_inc, id: msg.id });
                return;
            };
            let Some(live) = self.nodes[to].live.as_mut() else { return };
            live.next_reply += 1;
            let reply = ReplyId(live.next_reply);
            let back = Reply { to: from, proto: msg.proto, id: msg.id, requester_inc: msg.requester_inc };
            live.replies.insert(reply, back);
            Input::Request { from: self.nodes[from].id.clone(), request, reply }
        } else {
            match self.decode_response(msg.proto, &msg.bytes) {
                Some(response) => Input::Response { id: msg.id, response },
                None => {
                    self.stats.malformed();
                    Input::RequestFailed { id: msg.id }
                }
            }
        };
        self.feed(to, [Feed::Input(input)]);
    }

    /// Decodes a request as the node's codec does; gossiped records then share one copy.
    fn decode_request(&mut self, proto: Proto, bytes: &[u8]) -> Option<Request> {
        let limit = proto.limit();
        Some(match proto {
            Proto::Gossip => {
                let mut request = wire::decode::<GossipRequest>(bytes, limit).ok()?;
                if let GossipRequest::Push { updates } = &mut request {
                    self.stats.records_received(updates.len(), self.now);
                    self.records.share(updates);
                }
                Request::Gossip(request)
            }
            Proto::Place => Request::Place(wire::decode::<PlaceRequest>(bytes, limit).ok()?),
            Proto::Task => Request::Task(wire::decode::<TaskRequest>(bytes, limit).ok()?),
            Proto::Receipt => Request::Receipt(wire::decode::<ReceiptRequest>(bytes, limit).ok()?),
        })
    }

    fn decode_response(&mut self, proto: Proto, bytes: &[u8]) -> Option<Response> {
        let limit = proto.limit();
        Some(match proto {
            Proto::Gossip => {
                let mut response = wire::decode::<GossipResponse>(bytes, limit).ok()?;
                if let GossipResponse::Ack { updates, .. } = &mut response {
                    self.stats.records_received(updates.len(), self.now);
                    self.records.share(updates);
                }
                Response::Gossip(response)
            }
            Proto::Place => Response::Place(wire::decode::<PlaceResponse>(bytes, limit).ok()?),
            Proto::Task => Response::Task(wire::decode::<TaskResponse>(bytes, limit).ok()?),
            Proto::Receipt => Response::Receipt(wire::decode::<ReceiptResponse>(bytes, limit).ok()?),
        })
    }

    /// Whether the process observer `i` just gave a verdict on is up: `peer` is up *and* `i`
    /// holds its current generation. A verdict on the generation before a restart is about a
    /// process that did die, even if its successor already runs.
    fn process_judged_is_up(&self, i: usize, peer: &PeerId) -> bool {
        let Some(&j) = self.index.get(peer) else { return false };
        let Some(running) =
            self.nodes[j].live.as_ref().map(|l| l.engine.membership().local().version.generation)
        else {
            return false; // down
        };
        let held = self.nodes[i].live.as_ref().and_then(|l| l.engine.membership().peer_view(peer));
        held.is_some_and(|(v, _)| v.generation >= running)
    }

    /// A task arrives at a random live node, through its "API": stored, then submitted.
    fn on_arrival(&mut self, k: usize) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
        if up.is_empty() {
            self.stats.submission_refused();
            return;
        }
        let a = self.arrivals[k].clone();
        let i = up[(a.pick % up.len() as u64) as usize];
        let wall = self.wall_ms(i);
        let id = TaskId::new(wall, k as u128);
        let mut spec = TaskSpec::new(vec!["sim-task".into()]);
        spec.resources = Resources { cpu_millis: a.cpu_millis, memory_mb: a.memory_mb, gpus: 0 };
        spec.constraints = Constraints {
            orgs: a
                .org
                .map(|o| vec![Org::new(self.s.orgs[o].clone()).unwrap_or_else(|_| self.nodes[0].org.clone())])
                .unwrap_or_default(),
            node_labels: a.label.iter().cloned().collect(),
            isolation: None,
        };
        spec.max_attempts = self.s.workload.max_attempts;
        spec.queue_timeout_s = self.s.workload.queue_timeout_s;
        spec.timeout_s = (a.duration_us / 1_000_000 + 60).max(1);
        let origin = TaskOrigin { peer_id: self.nodes[i].id.clone(), org: self.nodes[i].org.clone() };
        let task = Task::new(id, spec, origin, Timestamp(wall));
        self.nodes[i].store.tasks.insert(id, task.clone());
        self.task_of_arrival[k] = Some(id);
        self.truths.insert(id, Truth { origin: i, arrival: k, submitted_us: self.now, ..Truth::default() });
        if let Some(after) = a.cancel_after_us {
            self.q.push(self.now + after, Ev::Cancel { node: i, task: id });
        }
        self.feed(i, [Feed::Input(Input::Submitted(Box::new(task)))]);
    }

    // ---- checkers ----

    /// Compares what the observers believe with the truth (cheaply: by record version and verdict).
    fn sample(&mut self) {
        let now = self.now;
        let obs: Vec<usize> = self.observers.iter().copied().filter(|&o| self.up(o)).collect();
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
        let versions: Vec<Option<RecordVersion>> = self
            .nodes
            .iter()
            .map(|n| n.live.as_ref().map(|l| l.engine.membership().local().version))
            .collect();
        let want_full = self.stats.needs_full_check(now);
        let (mut pairs, mut fresh, mut alive_ok, mut generation_ok) = (0u64, 0u64, 0u64, 0u64);
        if want_full {
            for &o in &obs {
                let Some(m) = self.nodes[o].live.as_ref().map(|l| l.engine.membership()) else { continue };
                for &j in &up {
                    if j == o {
                        continue;
                    }
                    pairs += 1;
                    if let Some((v, state)) = m.peer_view(&self.nodes[j].id) {
                        let want = versions[j].unwrap_or_default();
                        if state == PeerState::Alive {
                            alive_ok += 1;
                            if v.generation == want.generation {
                                generation_ok += 1;
                            }
                            if v == want {
                                fresh += 1;
                            }
                        }
                    }
                }
            }
        }
        // Pending crash and join checks: only the nodes concerned, at every observer.
        let nodes = &self.nodes;
        let view = |o: usize, j: usize| {
            nodes[o].live.as_ref().and_then(|l| l.engine.membership().peer_view(&nodes[j].id))
        };
        let dead_seen = |j: usize| obs.iter().all(|&o| view(o, j).is_none_or(|(_, s)| s == PeerState::Dead));
        let join_seen = |j: usize, generation: u64| {
            obs.iter().filter(|&&o| o != j).all(|&o| {
                view(o, j).is_some_and(|(v, s)| s == PeerState::Alive && v.generation >= generation)
            })
        };
        let up_flags: Vec<bool> = (0..self.nodes.len()).map(|i| self.up(i)).collect();
        self.stats.check_pending(now, &up_flags, dead_seen, join_seen);
        if want_full {
            self.stats.full_check(now, pairs, fresh, alive_ok, generation_ok);
        }
    }

    fn finish(mut self, wall: std::time::Duration) -> Report {
        // Close the books on runs still going.
        let open: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.live.as_ref())
            .flat_map(|l| l.processes.values().map(|p| (p.started_us, p.cpu_millis)))
            .collect();
        for (start, cpu) in open {
            self.account_run(start, self.now, cpu);
        }
        // Lost: not ended, and nothing will ever make it end. Its origin counts on an attempt on
        // host h, h is down or its store holds no such attempt, so no report of it may come; and
        // the origin holds no lease for it either, so it will never give the attempt up and
        // place the task again. With a lease still held it only awaits detection: the lease
        // runs out (or is answered) and the task is placed again.
        let (mut lost, mut never_finished, mut stranded, mut awaiting_detection) = (0u64, 0u64, 0u64, 0u64);
        let mut lost_violations = Vec::new();
        for (id, t) in &self.truths {
            let node = &self.nodes[t.origin];
            let Some(ot) = node.store.tasks.get(id) else { continue };
            if ot.status.is_terminal() {
                continue;
            }
            never_finished += 1;
            let Some(live) = node.live.as_ref() else {
                stranded += 1;
                continue;
            };
            if !matches!(ot.status, TaskStatus::Placed | TaskStatus::Running | TaskStatus::Unreachable) {
                continue;
            }
            let Some(&h) = store::placed_on(ot).and_then(|p| self.index.get(p)) else { continue };
            if self.up(h) && self.nodes[h].store.runs.contains_key(&(*id, ot.attempt)) {
                continue;
            }
            if live.engine.lease_holder(*id).is_some_and(|(a, _)| a == ot.attempt) {
                awaiting_detection += 1;
                continue;
            }
            lost += 1;
            let (event, time_us, node_at) =
                t.lost_runs.get(&ot.attempt).copied().unwrap_or((self.event_index, self.now, h));
            if lost_violations.len() < MAX_VIOLATIONS {
                lost_violations.push(Violation {
                    kind: "task-lost".into(),
                    event,
                    time_s: time_us as f64 / 1e6,
                    node: Some(node_at),
                    detail: format!(
                        "task {id} (origin n{}) placed as {} on n{h}, which does not hold it, and no lease will expire",
                        t.origin, ot.attempt
                    ),
                });
            }
        }
        self.violations.extend(lost_violations);
        let window = ((self.s.warmup_s * 1e6) as u64, self.faults_end_us);
        let omni = workload::omniscient(&self.arrivals, &self.shapes, window);
        let total_cpu: f64 = self.shapes.iter().map(|n| f64::from(n.cpu_millis)).sum();
        let window_us = window.1.saturating_sub(window.0).max(1) as f64;
        let mut waits = Vec::new();
        let mut omni_waits = Vec::new();
        let mut responses = (0.0, 0.0, 0u64);
        for (k, id) in self.task_of_arrival.iter().enumerate() {
            let Some(t) = id.and_then(|id| self.truths.get(&id)) else { continue };
            let (Some(start), Some(o)) = (t.first_start_us, omni.start_us[k]) else { continue };
            let a = &self.arrivals[k];
            waits.push(start - t.submitted_us);
            omni_waits.push(o - a.at_us);
            responses.0 += (start - t.submitted_us + a.duration_us) as f64;
            responses.1 += (o - a.at_us + a.duration_us) as f64;
            responses.2 += 1;
        }
        let mut counters = EngineCounters::default();
        for n in &self.nodes {
            let live = n.live.as_ref().map(|l| l.engine.counters()).unwrap_or_default();
            counters.stale_reports += n.counters.stale_reports + live.stale_reports;
            counters.attempts_lost += n.counters.attempts_lost + live.attempts_lost;
            counters.attempts_expired += n.counters.attempts_expired + live.attempts_expired;
            counters.attempts_overdue += n.counters.attempts_overdue + live.attempts_overdue;
            counters.foreign_entries += n.counters.foreign_entries + live.foreign_entries;
            counters.forged_heartbeats += n.counters.forged_heartbeats + live.forged_heartbeats;
        }
        let byzantine = self.byzantine_report();
        // Status tallies from the origins' stores, as `GET /v1/tasks?status=` would give them.
        let status = |want: TaskStatus| {
            self.truths
                .iter()
                .filter(|(id, t)| self.nodes[t.origin].store.tasks.get(id).is_some_and(|o| o.status == want))
                .count() as u64
        };
        let finished = self.truths.values().filter(|t| t.result.is_some()).count() as u64;
        Report::build(crate::report::Inputs {
            scenario: &self.s,
            seed: self.seed,
            events: self.handled,
            sim_seconds: self.now as f64 / 1e6,
            wall,
            stats: &self.stats,
            submitted: self.truths.len() as u64,
            finished,
            succeeded: status(TaskStatus::Succeeded),
            failed: status(TaskStatus::Failed),
            cancelled: status(TaskStatus::Cancelled),
            cancels: self.cancels,
            log_bytes_checked: self.log_bytes_checked,
            never_finished,
            stranded,
            awaiting_detection,
            counters,
            lost,
            waits,
            omni_waits,
            response_ratio: if responses.2 > 0 && responses.1 > 0.0 {
                responses.0 / responses.1
            } else {
                0.0
            },
            utilization: self.cpu_us_in_window / (total_cpu * window_us),
            omni_utilization: omni.cpu_us_in_window / (total_cpu * window_us),
            violations: std::mem::take(&mut self.violations),
            byzantine,
        })
    }
}

/// This process's CPU time so far (Linux `/proc/self/schedstat`), for progress lines only.
fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn streams_differ_by_purpose_and_node() {
        let a: u64 = stream(1, Purpose::Network, 0, 0).random();
        let b: u64 = stream(1, Purpose::Workload, 0, 0).random();
        let c: u64 = stream(1, Purpose::Membership, 1, 0).random();
        let d: u64 = stream(1, Purpose::Membership, 1, 1).random();
        let again: u64 = stream(1, Purpose::Network, 0, 0).random();
        assert_eq!(a, again);
        assert!(a != b && c != d && a != c);
    }

    #[test]
    fn peer_ids_are_valid_and_distinct() {
        let ids: BTreeSet<PeerId> = (0..20_000).map(peer_id).collect();
        assert_eq!(ids.len(), 20_000);
    }
}
