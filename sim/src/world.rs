//! The simulated world: every node's real `Membership`, `Negotiator` and `Host`, driven the way
//! `node/src/actor` drives them, over the virtual network, with faults and a workload, and the
//! checkers that watch it. One seed, one run: all randomness comes from ChaCha streams derived
//! from the seed, one per purpose, and every ordering comes from the event queue.

use std::collections::BTreeMap;

use orgmesh_protocol::membership::{Membership, MembershipEvent, MembershipOutput, PeerState};
use orgmesh_protocol::placement::{Host, HostConfig, Negotiator, NegotiatorOutput, PlacementEvent};
use orgmesh_protocol::record::InsecureTestKeyring;
use orgmesh_protocol::task::Constraints;
use orgmesh_protocol::wire::gossip::{GossipRequest, GossipResponse};
use orgmesh_protocol::wire::place::{
    BidResponse, CommitResponse, DeclineReason, PlaceRequest, PlaceResponse,
};
use orgmesh_protocol::wire::task::{TaskRequest, TaskResponse};
use orgmesh_protocol::wire::{self, limits};
use orgmesh_protocol::{
    AcceptPolicy, Attempt, NodeRecord, Org, PeerId, RecordVersion, Resources, TaskId, TaskSpec, Time,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::net::{Network, Transit};
use crate::pool::RecordPool;
use crate::queue::EventQueue;
use crate::report::{Report, Violation};
use crate::scenario::Scenario;
use crate::stats::Stats;
use crate::tasks::{Executor, Origin, Status};
use crate::workload::{self, Arrival, NodeShape};

/// Unix ms at simulated time zero (wall clocks add each node's skew).
const WALL_BASE_MS: u64 = 1_800_000_000_000;
/// Bootstrap contacts each node starts with.
const BOOTSTRAP: usize = 3;

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
}

fn stream(seed: u64, purpose: Purpose, a: u64, b: u64) -> ChaCha8Rng {
    // SplitMix64 finalizer over the inputs: well-spread, independent seeds.
    let mut z =
        seed ^ (purpose as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ a.rotate_left(21) ^ b.rotate_left(42);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// Which placement request a message carries, to route its answer.
#[derive(Clone, Copy, Debug)]
enum PlaceOut {
    Bid(TaskId, Attempt),
    Commit(TaskId, Attempt),
    Release,
}

/// Which task-protocol request a message carries, to route its answer.
#[derive(Clone, Copy, Debug)]
enum TaskOut {
    Report { task: TaskId, attempt: Attempt, finished: bool },
    Renew,
}

#[derive(Debug)]
enum Body {
    GossipReq(Vec<u8>),
    GossipResp(Vec<u8>),
    PlaceReq(Vec<u8>, PlaceOut),
    PlaceResp(Vec<u8>, PlaceOut),
    TaskReq(Vec<u8>, TaskOut),
    TaskResp(Vec<u8>, TaskOut),
}

#[derive(Debug)]
struct Msg {
    from: usize,
    to: usize,
    /// The incarnation of the requester, so an answer to a crashed process is dropped.
    requester_inc: u32,
    sent_at: u64,
    body: Body,
}

#[derive(Clone, Copy, Debug)]
enum Pending {
    Gossip,
    Place(PlaceOut),
    Task(TaskOut),
}

#[derive(Debug)]
enum Ev {
    Timer { node: usize, inc: u32 },
    Deliver(Box<Msg>),
    Failed { node: usize, inc: u32, to: usize, what: Pending },
    Arrival(usize),
    TaskEnd { node: usize, inc: u32, task: TaskId, attempt: Attempt },
    Crash { node: Option<usize>, down_us: Option<u64> },
    Restart { node: usize },
    PartitionOpen(usize),
    PartitionHeal,
    Pause { count: usize, pause_us: u64 },
    Churn,
    EndOfFaults,
    Sample,
}

impl Ev {
    /// The node an event happens at, if it is one node's.
    fn node(&self) -> Option<usize> {
        match self {
            Ev::Timer { node, .. } | Ev::Failed { node, .. } | Ev::TaskEnd { node, .. } => Some(*node),
            Ev::Deliver(m) => Some(m.to),
            Ev::Restart { node } => Some(*node),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Ev::Timer { .. } => "timer",
            Ev::Deliver(m) => match m.body {
                Body::GossipReq(_) => "gossip-request",
                Body::GossipResp(_) => "gossip-response",
                Body::PlaceReq(..) => "place-request",
                Body::PlaceResp(..) => "place-response",
                Body::TaskReq(..) => "task-request",
                Body::TaskResp(..) => "task-response",
            },
            Ev::Failed { .. } => "request-failed",
            Ev::Arrival(_) => "arrival",
            Ev::TaskEnd { .. } => "task-end",
            Ev::Crash { .. } => "crash",
            Ev::Restart { .. } => "restart",
            Ev::PartitionOpen(_) => "partition",
            Ev::PartitionHeal => "heal",
            Ev::Pause { .. } => "pause",
            Ev::Churn => "churn",
            Ev::EndOfFaults => "end-of-faults",
            Ev::Sample => "sample",
        }
    }
}

/// The parts of a node that die with its process.
struct Live {
    membership: Membership<ChaCha8Rng>,
    negotiator: Negotiator<ChaCha8Rng>,
    host: Host,
    /// Back-off of tasks placed again.
    rng: ChaCha8Rng,
    /// When each negotiation in flight started (global µs), for placement latency.
    place_started: BTreeMap<TaskId, u64>,
    wake_waiting: bool,
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
    /// Durable: survives crashes, as the store does.
    origin: Origin,
    /// Durable too: the node's store keeps its runs, so a restart reports the killed ones lost.
    executor: Executor,
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
    result: Option<(Attempt, u64)>,
    /// Attempts whose run a crash destroyed: (event index, time, host).
    lost_runs: BTreeMap<Attempt, (u64, u64, usize)>,
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
    /// Runs as they really happened: (cpu, start, end) once ended; open ones by key.
    open_runs: BTreeMap<(TaskId, Attempt, usize), (u64, u32)>,
    cpu_us_in_window: f64,
    pub(crate) stats: Stats,
    violations: Vec<Violation>,
    observers: Vec<usize>,
    trace: bool,
    end_us: u64,
    faults_end_us: u64,
    /// Every message is still encoded and decoded in full; decoded records are then shared.
    records: RecordPool,
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
                origin: Origin::default(),
                executor: Executor::default(),
                bootstrap,
                timer_at: None,
                paused_until: 0,
            });
        }
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect();
        let net =
            Network::new(s.network.clone(), s.regions.len(), region_of, stream(seed, Purpose::Network, 0, 0));
        let arrivals = workload::arrivals(&s, &shapes, &mut stream(seed, Purpose::Workload, 0, 0))?;
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
            open_runs: BTreeMap::new(),
            cpu_us_in_window: 0.0,
            stats: Stats::new(n, (s.warmup_s * 1e6) as u64),
            violations: Vec::new(),
            observers: obs,
            trace,
            end_us,
            faults_end_us,
            records: RecordPool::default(),
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
        Ok(w)
    }

    fn local_now(&self, i: usize) -> Time {
        Time(self.now / 1000 + self.nodes[i].offset_ms)
    }

    fn wall_ms(&self, i: usize) -> u64 {
        (WALL_BASE_MS as i64 + (self.now / 1000) as i64 + self.nodes[i].skew_ms) as u64
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].live.is_some()
    }

    /// Starts (or restarts) node `i`'s process: fresh membership with a new generation (its
    /// wall clock at start, as `node/src/run.rs` does), fresh negotiator and ledger; its durable
    /// task table is recovered.
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
        let mut membership = Membership::new(
            record,
            keyring,
            config,
            stream(self.seed, Purpose::Membership, i as u64, u64::from(inc)),
            now,
        );
        for &b in &node.bootstrap {
            membership.add_contact(self.nodes[b].id.clone(), now);
        }
        let negotiator = Negotiator::new(
            node.id.clone(),
            node.org.clone(),
            self.s.placement.to_config(),
            stream(self.seed, Purpose::Negotiator, i as u64, u64::from(inc)),
        );
        let live = Live {
            membership,
            negotiator,
            host,
            rng: stream(self.seed, Purpose::Lifecycle, i as u64, u64::from(inc)),
            place_started: BTreeMap::new(),
            wake_waiting: true,
        };
        let node = &mut self.nodes[i];
        node.live = Some(live);
        node.origin.recover(now);
        node.executor.recover(now);
        self.stats.generation_started(i, wall, self.now);
        self.drive(i);
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
                if self.nodes[node].inc != inc || self.nodes[node].timer_at != Some(self.now) {
                    return;
                }
                self.nodes[node].timer_at = None;
                self.on_timer(node);
            }
            Ev::Deliver(msg) => self.on_deliver(*msg),
            Ev::Failed { node, inc, to, what } => {
                if self.nodes[node].inc == inc && self.up(node) {
                    self.on_failed(node, to, what);
                }
            }
            Ev::Arrival(k) => self.on_arrival(k),
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

    /// The process dies: membership, negotiations, ledger and running attempts go with it.
    fn crash(&mut self, i: usize) {
        if self.nodes[i].live.take().is_none() {
            return;
        }
        self.nodes[i].inc += 1;
        self.nodes[i].timer_at = None;
        let killed: Vec<(TaskId, Attempt)> = self.nodes[i].executor.running().collect();
        for (task, attempt) in killed {
            if let Some(t) = self.truths.get_mut(&task) {
                t.lost_runs.insert(attempt, (self.event_index, self.now, i));
            }
            if let Some((start, cpu)) = self.open_runs.remove(&(task, attempt, i)) {
                self.account_run(start, self.now, cpu);
            }
        }
        self.stats.crashed(i, self.now);
    }

    fn account_run(&mut self, start: u64, end: u64, cpu: u32) {
        let window = ((self.s.warmup_s * 1e6) as u64, self.faults_end_us);
        let overlap = end.min(window.1).saturating_sub(start.max(window.0));
        self.cpu_us_in_window += f64::from(cpu) * overlap as f64;
    }

    // ---- network ----

    fn send(&mut self, from: usize, to: usize, body: Body) {
        let bytes = match &body {
            Body::GossipReq(b) | Body::GossipResp(b) => b.len(),
            Body::PlaceReq(b, _) | Body::PlaceResp(b, _) => b.len(),
            Body::TaskReq(b, _) | Body::TaskResp(b, _) => b.len(),
        };
        self.stats.sent(from, body_kind(&body), bytes, self.now);
        let is_request = matches!(body, Body::GossipReq(_) | Body::PlaceReq(..) | Body::TaskReq(..));
        let requester_inc = if is_request { self.nodes[from].inc } else { self.nodes[to].inc };
        let msg = Msg { from, to, requester_inc, sent_at: self.now, body };
        match self.net.send(from, to, bytes, self.now) {
            Transit::Arrives(at) => self.q.push(at, Ev::Deliver(Box::new(msg))),
            Transit::Lost => self.fail_later(msg),
        }
    }

    /// A request or its answer went missing: the requester hears of it at its timeout.
    fn fail_later(&mut self, msg: Msg) {
        let (requester, peer) = match msg.body {
            Body::GossipReq(_) | Body::PlaceReq(..) | Body::TaskReq(..) => (msg.from, msg.to),
            _ => (msg.to, msg.from),
        };
        let what = match msg.body {
            Body::GossipReq(_) | Body::GossipResp(_) => Pending::Gossip,
            Body::PlaceReq(_, o) | Body::PlaceResp(_, o) => Pending::Place(o),
            Body::TaskReq(_, o) | Body::TaskResp(_, o) => Pending::Task(o),
        };
        let at = (msg.sent_at + self.net.request_timeout_us()).max(self.now);
        self.q.push(at, Ev::Failed { node: requester, inc: msg.requester_inc, to: peer, what });
    }

    fn on_deliver(&mut self, msg: Msg) {
        let (from, to) = (msg.from, msg.to);
        let is_request = matches!(msg.body, Body::GossipReq(_) | Body::PlaceReq(..) | Body::TaskReq(..));
        if is_request && !self.up(to) {
            // Connection refused: the requester learns after a round trip.
            let back = self.net.latency_us(to, from);
            let what = match msg.body {
                Body::GossipReq(_) => Pending::Gossip,
                Body::PlaceReq(_, o) => Pending::Place(o),
                Body::TaskReq(_, o) => Pending::Task(o),
                _ => return,
            };
            self.q.push(self.now + back, Ev::Failed { node: from, inc: msg.requester_inc, to, what });
            return;
        }
        if !is_request && (self.nodes[to].inc != msg.requester_inc || !self.up(to)) {
            return; // the process that asked is gone
        }
        self.stats.received(to, body_kind(&msg.body), self.now);
        let now = self.local_now(to);
        let from_id = self.nodes[from].id.clone();
        match msg.body {
            Body::GossipReq(bytes) => {
                let Ok(mut request) = wire::decode::<GossipRequest>(&bytes, limits::GOSSIP) else {
                    return self.stats.malformed();
                };
                if let GossipRequest::Push { updates } = &mut request {
                    self.stats.records_received(updates.len(), self.now);
                    self.records.share(updates);
                }
                let Some(live) = self.nodes[to].live.as_mut() else { return };
                let response = live.membership.handle_request(&from_id, request, now);
                match wire::encode(&response, limits::GOSSIP) {
                    Ok(b) => self.send(to, from, Body::GossipResp(b)),
                    Err(_) => self.stats.oversized(),
                }
            }
            Body::GossipResp(bytes) => {
                let Ok(mut response) = wire::decode::<GossipResponse>(&bytes, limits::GOSSIP) else {
                    return self.stats.malformed();
                };
                if let GossipResponse::Ack { updates, .. } = &mut response {
                    self.stats.records_received(updates.len(), self.now);
                    self.records.share(updates);
                }
                let Some(live) = self.nodes[to].live.as_mut() else { return };
                live.membership.handle_response(&from_id, response, now);
            }
            Body::PlaceReq(bytes, out) => {
                let Ok(request) = wire::decode::<PlaceRequest>(&bytes, limits::PLACE) else {
                    return self.stats.malformed();
                };
                let response = self.handle_place_request(to, from, request);
                match wire::encode(&response, limits::PLACE) {
                    Ok(b) => self.send(to, from, Body::PlaceResp(b, out)),
                    Err(_) => self.stats.oversized(),
                }
            }
            Body::PlaceResp(bytes, out) => {
                let Ok(response) = wire::decode::<PlaceResponse>(&bytes, limits::PLACE) else {
                    return self.stats.malformed();
                };
                self.handle_place_response(to, from, out, response);
            }
            Body::TaskReq(bytes, out) => {
                let Ok(request) = wire::decode::<TaskRequest>(&bytes, limits::TASK) else {
                    return self.stats.malformed();
                };
                let response = self.handle_report(to, from, &request);
                match wire::encode(&response, limits::TASK) {
                    Ok(b) => self.send(to, from, Body::TaskResp(b, out)),
                    Err(_) => self.stats.oversized(),
                }
            }
            Body::TaskResp(bytes, out) => {
                let Ok(response) = wire::decode::<TaskResponse>(&bytes, limits::TASK) else {
                    return self.stats.malformed();
                };
                if self.nodes[to].live.is_some() {
                    self.on_task_answer(to, out, response, now);
                }
            }
        }
        self.drive(to);
    }

    fn on_failed(&mut self, i: usize, to: usize, what: Pending) {
        let now = self.local_now(i);
        let to_id = self.nodes[to].id.clone();
        let Some(live) = self.nodes[i].live.as_mut() else { return };
        match what {
            Pending::Gossip => live.membership.handle_send_failed(&to_id, now),
            Pending::Place(PlaceOut::Bid(task, attempt) | PlaceOut::Commit(task, attempt)) => {
                live.negotiator.handle_request_failed(&to_id, task, attempt, now);
            }
            Pending::Place(PlaceOut::Release) => {}
            Pending::Task(TaskOut::Report { task, attempt, finished }) => {
                self.nodes[i].executor.on_answer(task, attempt, finished, None, now);
            }
            Pending::Task(TaskOut::Renew) => {}
        }
        self.drive(i);
    }

    // ---- one node, as node/src/actor drives it ----

    fn on_timer(&mut self, i: usize) {
        let now = self.local_now(i);
        let Some(live) = self.nodes[i].live.as_mut() else { return };
        live.membership.handle_timeout(now);
        live.negotiator.handle_timeout(now);
        live.host.handle_timeout(now);
        live.wake_waiting = true;
        self.nodes[i].origin.leases.handle_timeout(now);
        self.drive(i);
    }

    /// Flushes every machine's outputs until all are quiet (the node's `drive`), then sends due
    /// reports and arms the next timer.
    fn drive(&mut self, i: usize) {
        if self.nodes[i].live.is_none() {
            return;
        }
        loop {
            let now = self.local_now(i);
            let wall = self.wall_ms(i);
            let node = &mut self.nodes[i];
            let Some(live) = node.live.as_mut() else { return };
            // Lease verdicts first: a task placed again waits its back-off in the queue.
            node.origin.pump_leases(now, &mut live.rng);
            if std::mem::take(&mut live.wake_waiting) {
                let negotiator = &live.negotiator;
                let due = node.origin.due(now, wall, |id| negotiator.is_placing(id));
                for id in due {
                    self.place(i, id);
                }
            }
            let node = &mut self.nodes[i];
            if let Some(live) = node.live.as_ref() {
                let negotiator = &live.negotiator;
                for id in node.origin.take_freed(|id| negotiator.is_placing(id)) {
                    self.place(i, id);
                }
            }
            let node = &mut self.nodes[i];
            let Some(live) = node.live.as_mut() else { return };
            let capacity = live.host.capacity();
            if live.membership.local().capacity != capacity {
                live.membership.update_local(|r| r.capacity = capacity, now);
            }
            let mut progressed = false;
            while let Some(out) = self.nodes[i].live.as_mut().and_then(|l| l.membership.poll_output()) {
                progressed = true;
                self.on_membership_output(i, out);
            }
            while let Some(out) = self.nodes[i].live.as_mut().and_then(|l| l.negotiator.poll_output()) {
                progressed = true;
                self.on_negotiator_output(i, out);
            }
            let wake = self.nodes[i].live.as_ref().is_some_and(|l| l.wake_waiting);
            if !progressed && !wake {
                break;
            }
        }
        // Reports to origins, one in flight per attempt, then lease renewals when due.
        let now = self.local_now(i);
        let renew_every = self.nodes[i].origin.leases.config().renew_every;
        let executor = &mut self.nodes[i].executor;
        let mut due = executor.due_reports(now);
        due.extend(executor.due_renewals(now, renew_every));
        for (origin, request) in due {
            let out = match &request {
                TaskRequest::Started { task, attempt } => {
                    TaskOut::Report { task: *task, attempt: *attempt, finished: false }
                }
                TaskRequest::Finished { task, attempt, .. } => {
                    TaskOut::Report { task: *task, attempt: *attempt, finished: true }
                }
                TaskRequest::Renew { .. } => TaskOut::Renew,
                TaskRequest::Log { .. } | TaskRequest::Cancel { .. } => continue,
            };
            let Some(&o) = self.index.get(&origin) else { continue };
            if o == i {
                // The origin ran its own task: answered in-process.
                let response = self.handle_report(i, i, &request);
                self.on_task_answer(i, out, response, now);
                // Its next report (Finished after Started) goes on the next pass.
                if let Some(l) = self.nodes[i].live.as_mut() {
                    l.wake_waiting = true;
                }
                continue;
            }
            match wire::encode(&request, limits::TASK) {
                Ok(b) => self.send(i, o, Body::TaskReq(b, out)),
                Err(_) => self.stats.oversized(),
            }
        }
        if self.nodes[i].live.as_ref().is_some_and(|l| l.wake_waiting) {
            // An in-process report changed something: go round once more.
            return self.drive(i);
        }
        self.arm_timer(i);
    }

    fn arm_timer(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(live) = node.live.as_ref() else { return };
        let deadline = [
            live.membership.poll_timeout(),
            live.negotiator.poll_timeout(),
            live.host.poll_timeout(),
            node.origin.next_retry(),
            node.origin.leases.poll_timeout(),
            node.executor.next_retry(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(deadline) = deadline else { return };
        let at = deadline.0.saturating_sub(node.offset_ms).saturating_mul(1000).max(self.now);
        if node.timer_at.is_none_or(|t| at < t) {
            let inc = node.inc;
            self.nodes[i].timer_at = Some(at);
            self.q.push(at, Ev::Timer { node: i, inc });
        }
    }

    fn on_membership_output(&mut self, i: usize, out: MembershipOutput) {
        match out {
            MembershipOutput::Send { to, request } => {
                if let GossipRequest::Syn { digest } = &request {
                    self.stats.digest(digest.len());
                }
                let Some(&j) = self.index.get(&to) else { return };
                match wire::encode(&request, limits::GOSSIP) {
                    Ok(b) => self.send(i, j, Body::GossipReq(b)),
                    Err(_) => self.stats.oversized(),
                }
            }
            MembershipOutput::Event(event) => match event {
                MembershipEvent::Joined { .. } | MembershipEvent::Updated { .. } => {
                    self.stats.record_applied(self.now);
                    if let Some(l) = self.nodes[i].live.as_mut() {
                        l.wake_waiting = true;
                    }
                }
                MembershipEvent::StateChanged { peer, to, .. } => {
                    self.stats.state_change(to, self.process_judged_is_up(i, &peer));
                    if to == PeerState::Dead {
                        let now = self.local_now(i);
                        self.nodes[i].origin.host_dead(&peer, now);
                    }
                    if to == PeerState::Alive
                        && let Some(l) = self.nodes[i].live.as_mut()
                    {
                        l.wake_waiting = true;
                    }
                }
                MembershipEvent::Rejected { .. } => self.stats.rejected_record(),
            },
        }
    }

    /// Whether the process observer `i` just gave a verdict on is up: `peer` is up *and* `i`
    /// holds its current generation. A verdict on the generation before a restart is about a
    /// process that did die, even if its successor already runs.
    fn process_judged_is_up(&self, i: usize, peer: &PeerId) -> bool {
        let Some(&j) = self.index.get(peer) else { return false };
        let Some(running) = self.nodes[j].live.as_ref().map(|l| l.membership.local().version.generation)
        else {
            return false; // down
        };
        let held = self.nodes[i].live.as_ref().and_then(|l| l.membership.peer_view(peer));
        held.is_some_and(|(v, _)| v.generation >= running)
    }

    /// Starts a negotiation with the current view (alive peers plus itself), as the node does.
    fn place(&mut self, i: usize, id: TaskId) {
        let now = self.local_now(i);
        let node = &mut self.nodes[i];
        let Some(live) = node.live.as_mut() else { return };
        let Some((attempt, spec)) = node.origin.begin_placement(id, now) else { return };
        let mut local = live.membership.local().clone();
        local.capacity = live.host.capacity();
        live.place_started.entry(id).or_insert(self.now);
        let candidates = live.membership.alive_records().chain(std::iter::once(&local));
        live.negotiator.place(id, attempt, &spec, candidates, now);
    }

    fn on_negotiator_output(&mut self, i: usize, out: NegotiatorOutput) {
        match out {
            NegotiatorOutput::Send { to, task, attempt, request } => {
                if let PlaceRequest::Commit(_) = &request {
                    self.nodes[i].origin.note_commit(task, attempt, &to);
                }
                let kind = match &request {
                    PlaceRequest::Bid(_) => PlaceOut::Bid(task, attempt),
                    PlaceRequest::Commit(_) => PlaceOut::Commit(task, attempt),
                    PlaceRequest::Release { .. } => PlaceOut::Release,
                };
                let Some(&j) = self.index.get(&to) else { return };
                if j == i {
                    let response = self.handle_place_request(i, i, request);
                    self.handle_place_response(i, i, kind, response);
                    return;
                }
                match wire::encode(&request, limits::PLACE) {
                    Ok(b) => self.send(i, j, Body::PlaceReq(b, kind)),
                    Err(_) => self.stats.oversized(),
                }
            }
            NegotiatorOutput::Event(event) => match event {
                PlacementEvent::Placed { task, attempt, host } => {
                    let now = self.local_now(i);
                    if self.nodes[i].origin.placed(task, attempt, &host.peer, now)
                        && let Some(start) =
                            self.nodes[i].live.as_mut().and_then(|l| l.place_started.remove(&task))
                    {
                        self.stats.placement_latency(self.now - start);
                    }
                }
                PlacementEvent::Unplaceable { task, attempt, reason } => {
                    let origin = &mut self.nodes[i].origin;
                    if origin.tasks.get(&task).is_some_and(|t| t.attempt == attempt) {
                        origin.fail(task, reason);
                    }
                    self.nodes[i].live.as_mut().map(|l| l.place_started.remove(&task));
                }
                PlacementEvent::Waiting { task, attempt, .. } => {
                    let now = self.local_now(i);
                    self.nodes[i].origin.waiting(task, attempt, now);
                }
            },
        }
    }

    /// A candidate's answer to a placement request (the node's `handle_place_request`).
    fn handle_place_request(&mut self, i: usize, from: usize, request: PlaceRequest) -> PlaceResponse {
        let now = self.local_now(i);
        let from_id = self.nodes[from].id.clone();
        let Some(live) = self.nodes[i].live.as_mut() else {
            return PlaceResponse::Bid(BidResponse::Decline { reason: DeclineReason::Busy });
        };
        match request {
            PlaceRequest::Bid(bid) => {
                if from != i {
                    // The bid's origin org is a claim; the sender's signed record is the truth.
                    let known = live.membership.signed_record(&from_id).map(|r| r.record.org.clone());
                    if known.as_ref() != Some(&bid.origin_org) {
                        let reason =
                            if known.is_none() { DeclineReason::Busy } else { DeclineReason::Policy };
                        return PlaceResponse::Bid(BidResponse::Decline { reason });
                    }
                }
                PlaceResponse::Bid(live.host.handle_bid(&from_id, &bid, now))
            }
            PlaceRequest::Commit(commit) => {
                if let Err(e) = commit.spec.validate() {
                    return PlaceResponse::Commit(CommitResponse::Rejected {
                        reason: format!("invalid spec: {e}"),
                    });
                }
                let response = live.host.handle_commit(&from_id, &commit, now);
                if response == CommitResponse::Accepted
                    && self.nodes[i].executor.start(from_id, commit.task, commit.attempt)
                {
                    self.run_started(i, commit.task, commit.attempt, commit.spec.resources.cpu_millis);
                }
                PlaceResponse::Commit(response)
            }
            PlaceRequest::Release { reservation } => {
                live.host.handle_release(&from_id, reservation, now);
                PlaceResponse::Released
            }
        }
    }

    fn handle_place_response(&mut self, i: usize, from: usize, out: PlaceOut, response: PlaceResponse) {
        let now = self.local_now(i);
        let from_id = self.nodes[from].id.clone();
        let Some(live) = self.nodes[i].live.as_mut() else { return };
        match (out, response) {
            (PlaceOut::Bid(task, attempt), PlaceResponse::Bid(r)) => {
                live.negotiator.handle_bid_response(&from_id, task, attempt, r, now);
            }
            (PlaceOut::Commit(task, attempt), PlaceResponse::Commit(r)) => {
                live.negotiator.handle_commit_response(&from_id, task, attempt, r, now);
            }
            (PlaceOut::Release, _) => {}
            (PlaceOut::Bid(task, attempt) | PlaceOut::Commit(task, attempt), _) => {
                live.negotiator.handle_request_failed(&from_id, task, attempt, now);
            }
        }
    }

    /// A host started an attempt: it runs for its task's duration.
    fn run_started(&mut self, i: usize, task: TaskId, attempt: Attempt, cpu: u32) {
        let Some(t) = self.truths.get_mut(&task) else { return };
        t.first_start_us.get_or_insert(self.now);
        let k = self.arrival_of(task);
        let duration = k.map_or(1_000_000, |k| self.arrivals[k].duration_us);
        self.open_runs.insert((task, attempt, i), (self.now, cpu));
        let inc = self.nodes[i].inc;
        self.q.push(self.now + duration, Ev::TaskEnd { node: i, inc, task, attempt });
    }

    fn arrival_of(&self, task: TaskId) -> Option<usize> {
        self.truths.get(&task).map(|t| t.arrival)
    }

    fn on_task_end(&mut self, i: usize, task: TaskId, attempt: Attempt) {
        let Some(live) = self.nodes[i].live.as_mut() else { return };
        live.host.finished(task, attempt);
        live.wake_waiting = true;
        self.nodes[i].executor.ended(task, attempt);
        if let Some((start, cpu)) = self.open_runs.remove(&(task, attempt, i)) {
            self.account_run(start, self.now, cpu);
        }
        self.drive(i);
    }

    /// An origin's answer to host `i`'s report or renewal; attempts it no longer wants stop.
    fn on_task_answer(&mut self, i: usize, out: TaskOut, response: TaskResponse, now: Time) {
        let executor = &mut self.nodes[i].executor;
        let stopped = match out {
            TaskOut::Report { task, attempt, finished } => {
                executor.on_answer(task, attempt, finished, Some(response), now).into_iter().collect()
            }
            TaskOut::Renew => executor.on_leases(&response),
        };
        for (task, attempt) in stopped {
            self.stop_run(i, task, attempt);
        }
    }

    /// The origin no longer wants an attempt still running on host `i`: it is stopped (the node
    /// kills its process), and its slot is free at once.
    fn stop_run(&mut self, i: usize, task: TaskId, attempt: Attempt) {
        if let Some(live) = self.nodes[i].live.as_mut() {
            live.host.finished(task, attempt);
            live.wake_waiting = true;
        }
        if let Some((start, cpu)) = self.open_runs.remove(&(task, attempt, i)) {
            self.account_run(start, self.now, cpu);
        }
    }

    /// A report reaches the origin `i` from host `from`; fencing decides; the checker watches.
    fn handle_report(&mut self, i: usize, from: usize, request: &TaskRequest) -> TaskResponse {
        let from_id = self.nodes[from].id.clone();
        let now = self.local_now(i);
        let node = &mut self.nodes[i];
        let Some(live) = node.live.as_mut() else { return TaskResponse::Unknown };
        let (response, result) = node.origin.on_report(&from_id, request, now, &mut live.rng);
        if let Some(r) = result {
            let (now, index) = (self.now, self.event_index);
            if let Some(t) = self.truths.get_mut(&r.task) {
                match t.result {
                    Some((a, _)) if a != r.attempt => self.violations.push(Violation {
                        kind: "result-from-two-attempts".into(),
                        event: index,
                        time_s: now as f64 / 1e6,
                        node: Some(i),
                        detail: format!("task {} accepted results of {a} and {}", r.task, r.attempt),
                    }),
                    Some(_) => {}
                    None => t.result = Some((r.attempt, now)),
                }
            }
        }
        response
    }

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
        let deadline = wall + spec.queue_timeout_s * 1000;
        self.nodes[i].origin.submit(id, k, spec, deadline);
        self.task_of_arrival[k] = Some(id);
        self.truths.insert(id, Truth { origin: i, arrival: k, submitted_us: self.now, ..Truth::default() });
        self.place(i, id);
        self.drive(i);
    }

    // ---- checkers ----

    /// Compares what the observers believe with the truth (cheaply: by record version and verdict).
    fn sample(&mut self) {
        let now = self.now;
        let obs: Vec<usize> = self.observers.iter().copied().filter(|&o| self.up(o)).collect();
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
        let versions: Vec<Option<RecordVersion>> =
            self.nodes.iter().map(|n| n.live.as_ref().map(|l| l.membership.local().version)).collect();
        let want_full = self.stats.needs_full_check(now);
        let (mut pairs, mut fresh, mut alive_ok, mut generation_ok) = (0u64, 0u64, 0u64, 0u64);
        if want_full {
            for &o in &obs {
                let Some(m) = self.nodes[o].live.as_ref().map(|l| &l.membership) else { continue };
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
        let view =
            |o: usize, j: usize| nodes[o].live.as_ref().and_then(|l| l.membership.peer_view(&nodes[j].id));
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
        let open: Vec<_> = self.open_runs.iter().map(|(_, &(s, c))| (s, c)).collect();
        for (start, cpu) in open {
            self.account_run(start, self.now, cpu);
        }
        // Lost: not ended, and nothing will ever make it end. Its origin counts on an attempt on
        // host h, h is down or its executor (durable, as its store is) holds no such attempt, so
        // no report of it may come; and the origin holds no lease for it either, so it will never
        // give the attempt up and place the task again. With a lease still held it only awaits
        // detection: the lease runs out (or is answered) and the task is placed again.
        let (mut lost, mut never_finished, mut stranded, mut awaiting_detection) = (0u64, 0u64, 0u64, 0u64);
        for (id, t) in &self.truths {
            let node = &self.nodes[t.origin];
            let Some(ot) = node.origin.tasks.get(id) else { continue };
            if ot.status.is_terminal() {
                continue;
            }
            never_finished += 1;
            if !self.up(t.origin) {
                stranded += 1;
                continue;
            }
            if !matches!(ot.status, Status::Placed | Status::Running | Status::Unreachable) {
                continue;
            }
            let Some(&h) = ot.placement.as_ref().and_then(|p| self.index.get(p)) else { continue };
            if self.up(h) && self.nodes[h].executor.runs.contains_key(&(*id, ot.attempt)) {
                continue;
            }
            if node.origin.leases.holder(*id).is_some_and(|(a, _)| a == ot.attempt) {
                awaiting_detection += 1;
                continue;
            }
            lost += 1;
            let (event, time_us, node_at) =
                t.lost_runs.get(&ot.attempt).copied().unwrap_or((self.event_index, self.now, h));
            if self.violations.iter().filter(|v| v.kind == "task-lost").count() < 20 {
                self.violations.push(Violation {
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
        let stale: u64 = self.nodes.iter().map(|n| n.origin.stale_reports).sum();
        let finished = self.truths.values().filter(|t| t.result.is_some()).count() as u64;
        let failed = self
            .truths
            .iter()
            .filter(|(id, t)| {
                self.nodes[t.origin]
                    .origin
                    .tasks
                    .get(id)
                    .is_some_and(|o| matches!(o.status, Status::Failed(_)))
            })
            .count() as u64;
        Report::build(crate::report::Inputs {
            scenario: &self.s,
            seed: self.seed,
            events: self.handled,
            sim_seconds: self.now as f64 / 1e6,
            wall,
            stats: &self.stats,
            submitted: self.truths.len() as u64,
            finished,
            failed,
            never_finished,
            stranded,
            awaiting_detection,
            attempts_lost: self.nodes.iter().map(|n| n.origin.attempts_lost).sum(),
            attempts_expired: self.nodes.iter().map(|n| n.origin.attempts_expired).sum(),
            lost,
            stale_reports: stale,
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
        })
    }
}

fn body_kind(b: &Body) -> &'static str {
    match b {
        Body::GossipReq(_) | Body::GossipResp(_) => "gossip",
        Body::PlaceReq(..) | Body::PlaceResp(..) => "place",
        Body::TaskReq(..) | Body::TaskResp(..) => "task",
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
