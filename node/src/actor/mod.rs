//! The node's event loop: the one owner of the swarm and of the protocol state machines
//! (membership, placement negotiator, capacity ledger) and of all in-flight work. A biased
//! `select!` over shutdown, commands from the API, swarm events, executor events, store
//! completions and timers; each arm calls one `handle_*`, then `drive` flushes the machines'
//! outputs. Nothing else ever touches this state; the API talks to it through `Command`s.

mod guard;
mod host;
mod origin;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use orgmesh_api::{CancelError, Check, DrainStatus, NodeInfo, PeerEntry};
use orgmesh_discovery::Discovered;
use orgmesh_protocol::lifecycle::{LeaseConfig, Leases};
use orgmesh_protocol::membership::{Membership, MembershipEvent, MembershipOutput, PeerState, RejectReason};
use orgmesh_protocol::placement::{Host, Negotiator, NegotiatorOutput};
use orgmesh_protocol::wire::gossip::{GossipRequest, GossipResponse};
use orgmesh_protocol::wire::place::{BidResponse, DeclineReason, PlaceRequest, PlaceResponse};
use orgmesh_protocol::wire::task::{TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, Org, PeerId, Task, TaskId, Time, Timestamp};
use orgmesh_store::{HostedRun, NewEvent, Store};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::executor::ExecEvent;
use crate::identity::{to_libp2p, to_protocol};
use crate::p2p::{Behaviour, BehaviourEvent};

pub(crate) use host::Run;
pub(crate) use origin::Active;

/// A request from the API (through `NodeHandle`) to the event loop.
#[derive(Debug)]
pub enum Command {
    /// A task was committed to the store: place it.
    TaskCreated(Box<Task>),
    /// Cancel a task.
    Cancel {
        /// The task.
        id: TaskId,
        /// The answer.
        reply: oneshot::Sender<Result<(), CancelError>>,
    },
    /// Stop taking new work.
    Drain {
        /// The answer.
        reply: oneshot::Sender<DrainStatus>,
    },
    /// Stop gracefully: take no new work, let running attempts finish and deliver their results
    /// for up to `grace`, then hand back the rest. Answered when done; then cancel the shutdown
    /// token.
    Stop {
        /// How long running attempts may take.
        grace: Duration,
        /// The answer: how it went.
        reply: oneshot::Sender<StopReport>,
    },
    /// `GET /v1/node`.
    Node {
        /// The answer.
        reply: oneshot::Sender<NodeInfo>,
    },
    /// `GET /v1/peers`.
    Peers {
        /// The answer.
        reply: oneshot::Sender<Vec<PeerEntry>>,
    },
    /// `GET /readyz` checks.
    Readiness {
        /// The answer.
        reply: oneshot::Sender<Vec<Check>>,
    },
    /// Check inbound connections with tailscaled's `whois`: only tailnet nodes with `tag` may stay.
    TailnetGate {
        /// The LocalAPI client.
        client: orgmesh_discovery::TailscaleClient,
        /// The mesh tag.
        tag: String,
    },
    /// A discovery source could not answer this time.
    DiscoveryFailed {
        /// The source's name.
        source: &'static str,
        /// Why.
        error: String,
    },
    /// A discovery source's current list.
    Discovered {
        /// The source's name.
        source: &'static str,
        /// Its complete current list.
        peers: Vec<Discovered>,
    },
}

/// How a graceful stop went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Attempts still running when the grace period ended, handed back to their origins.
    pub handed_back: usize,
    /// Attempts whose result was not yet delivered at exit; the store keeps them and the next
    /// start sends them.
    pub undelivered: usize,
}

/// A graceful stop in progress.
#[derive(Debug)]
struct Stopping {
    /// Until when running attempts may finish.
    grace_until: Time,
    /// Set once the rest was handed back: until when their `lost` reports may be delivered.
    handed_back: Option<(usize, Time)>,
    reply: oneshot::Sender<StopReport>,
}

/// How long handed-back attempts have to tell their origins before the node exits anyway.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// Where the answer to a task-protocol request goes once its store write committed.
pub(crate) enum Reply {
    /// To a remote host, on its stream.
    Remote(ResponseChannel<TaskResponse>),
    /// To this node's own host side (the origin ran its own task).
    Local(TaskId, Attempt, ReportKind),
}

/// Which report a task-protocol request carried (to interpret its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportKind {
    Started,
    Log { len: usize },
    Finished,
}

/// A store write the loop waits for before answering.
pub(crate) struct Completion {
    reply: Reply,
    response: Option<TaskResponse>,
}

/// What an outbound request was for, to route its answer.
#[derive(Debug, Clone)]
enum PlaceOut {
    Bid(TaskId, Attempt),
    Commit(TaskId, Attempt),
    Release,
}

#[derive(Debug, Clone)]
enum TaskOut {
    Report(TaskId, Attempt, ReportKind),
    Cancel(TaskId),
    /// A cancel of an attempt this node gave up on (overdue): whatever the answer, the task has
    /// moved on.
    GiveUp,
    Renew,
}

/// Counters of things dropped or refused, served in `GET /v1/node` (and `/metrics` later).
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub(crate) inbound_failures: u64,
    pub(crate) malformed_frames: u64,
    pub(crate) outbound_failures: u64,
    pub(crate) rejected_records: u64,
    pub(crate) stale_reports: u64,
    pub(crate) attempts_lost: u64,
    pub(crate) attempts_overdue: u64,
    pub(crate) rate_limited_requests: u64,
    pub(crate) bans: u64,
    pub(crate) refused_connections: u64,
    pub(crate) unchecked_requests: u64,
}

impl Counters {
    fn to_map(&self) -> BTreeMap<String, u64> {
        [
            ("inbound_failures", self.inbound_failures),
            ("malformed_frames", self.malformed_frames),
            ("outbound_failures", self.outbound_failures),
            ("rejected_records", self.rejected_records),
            ("stale_reports", self.stale_reports),
            ("attempts_lost", self.attempts_lost),
            ("attempts_overdue", self.attempts_overdue),
            ("rate_limited_requests", self.rate_limited_requests),
            ("bans", self.bans),
            ("refused_connections", self.refused_connections),
            ("unchecked_requests", self.unchecked_requests),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Fixed facts about this node, set at start.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Its peer id.
    pub peer: PeerId,
    /// Its org.
    pub org: Org,
    /// Its name.
    pub name: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Where attempts get their working directories.
    pub work_root: std::path::PathBuf,
    /// SIGTERM → SIGKILL grace for tasks.
    pub kill_grace: Duration,
    /// What runs attempts.
    pub executor: crate::executor::ExecutorKind,
    /// The sandbox attempts run in; `None` when isolation is `none` (by the admin's choice, or
    /// because this host cannot build it: then `sandbox_unavailable` says why).
    pub sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    /// Why the configured sandbox could not be built, if it could not.
    pub sandbox_unavailable: Option<String>,
    /// Most output bytes kept of one attempt (and stored of one task).
    pub output_cap: u64,
    /// Where attempts' output is spooled (under the data dir, which no sandbox sees).
    pub spool: crate::spool::SpoolDir,
    /// Extra advertised addresses.
    pub external_addrs: Vec<Multiaddr>,
    /// Inbound requests per second one peer may sustain.
    pub peer_requests_per_s: u32,
    /// ... and at once.
    pub peer_burst: u32,
    /// First ban of a misbehaving peer.
    pub ban: Duration,
}

/// The event loop's state.
pub struct EventLoop {
    facts: NodeFacts,
    swarm: Swarm<Behaviour>,
    store: Store,
    membership: Membership<ChaCha8Rng>,
    negotiator: Negotiator<ChaCha8Rng>,
    host: Host,
    /// Origin side: the lease of every placed attempt of this node's tasks.
    leases: Leases,
    /// Jitter for back-offs; seeded, like every machine's randomness.
    rng: ChaCha8Rng,
    next_renewal: Time,
    /// Set while stopping gracefully.
    stopping: Option<Stopping>,
    epoch: Instant,
    commands: mpsc::Receiver<Command>,
    exec_tx: mpsc::Sender<ExecEvent>,
    exec_rx: mpsc::Receiver<ExecEvent>,
    completions: FuturesUnordered<BoxFuture<'static, Completion>>,
    place_out: HashMap<OutboundRequestId, (PeerId, PlaceOut)>,
    task_out: HashMap<OutboundRequestId, (PeerId, TaskOut)>,
    /// Origin side: tasks submitted here and not yet ended.
    active: BTreeMap<TaskId, Active>,
    /// Origin side: tasks waiting for a placement (pending, or caught mid-placement by a crash),
    /// in the order they get a freed slot: highest priority first, then oldest.
    waiting: BTreeSet<(Reverse<i32>, TaskId)>,
    /// Capacity may have freed somewhere: retry waiting tasks once, at the end of this turn.
    wake_waiting: bool,
    /// Slots this node's attempts freed since the last turn: each starts a waiting task at once,
    /// instead of at the next retry pass.
    freed_slots: usize,
    /// Host side: attempts running (or reporting) here.
    runs: BTreeMap<(TaskId, Attempt), Run>,
    /// Discovery: each source's latest complete list.
    discovered: BTreeMap<&'static str, Vec<Discovered>>,
    /// Sources whose last attempt failed, with the error (they keep their last good list).
    source_errors: BTreeMap<&'static str, String>,
    /// Peers mDNS currently sees, with their addresses.
    mdns_peers: BTreeMap<PeerId, BTreeSet<String>>,
    /// Addresses we dialled and the peer that answered there.
    addr_peers: HashMap<Multiaddr, PeerId>,
    /// Peers whose `peer.joined` event was written.
    joined: BTreeSet<PeerId>,
    /// The generation of each peer's record last written to the store.
    remembered: BTreeMap<PeerId, u64>,
    counters: Counters,
    guard: guard::Guard,
    /// When set, inbound connections must come from tailnet nodes carrying the tag.
    tailnet_gate: Option<(orgmesh_discovery::TailscaleClient, String)>,
    /// Pending inbound checks: the peer and why it must go, if it must.
    gate_checks: FuturesUnordered<BoxFuture<'static, (libp2p::PeerId, Option<String>)>>,
    /// Inbound peers whose check has not answered yet: not a contact, and not served, until it
    /// passes (otherwise a refused node's record gets into the view in the meantime).
    gate_pending: BTreeSet<PeerId>,
    next_tick: Time,
    shutdown: CancellationToken,
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("peer", &self.facts.peer).finish_non_exhaustive()
    }
}

/// How often the loop does housekeeping (retries, queue timeouts, redials).
const TICK: Duration = Duration::from_millis(250);

/// Everything the event loop is built from.
pub struct Parts {
    /// Fixed facts.
    pub facts: NodeFacts,
    /// The swarm, already listening.
    pub swarm: Swarm<Behaviour>,
    /// The store.
    pub store: Store,
    /// Membership.
    pub membership: Membership<ChaCha8Rng>,
    /// Negotiator.
    pub negotiator: Negotiator<ChaCha8Rng>,
    /// Capacity ledger.
    pub host: Host,
    /// Lease timing.
    pub leases: LeaseConfig,
    /// Seeded randomness for back-off jitter.
    pub rng: ChaCha8Rng,
    /// Attempts the store says this node was running or reporting.
    pub runs: Vec<HostedRun>,
    /// The clock's origin (`Time::ZERO`).
    pub epoch: Instant,
    /// Commands from the API.
    pub commands: mpsc::Receiver<Command>,
    /// Ends the loop.
    pub shutdown: CancellationToken,
    /// Where the loop's metrics hooks count.
    pub metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

impl EventLoop {
    /// Assembles the loop; `recovered` are the unfinished tasks found in the store at start.
    pub fn new(parts: Parts, recovered: Vec<Task>) -> Self {
        let (exec_tx, exec_rx) = mpsc::channel(256);
        let guard =
            guard::Guard::new(parts.facts.peer_requests_per_s, parts.facts.peer_burst, parts.facts.ban);
        let mut this = Self {
            guard,
            tailnet_gate: None,
            gate_checks: FuturesUnordered::new(),
            gate_pending: BTreeSet::new(),
            facts: parts.facts,
            swarm: parts.swarm,
            store: parts.store,
            membership: parts.membership,
            negotiator: parts.negotiator,
            host: parts.host,
            leases: Leases::new(parts.leases),
            rng: parts.rng,
            next_renewal: Time::ZERO,
            stopping: None,
            epoch: parts.epoch,
            commands: parts.commands,
            exec_tx,
            exec_rx,
            completions: FuturesUnordered::new(),
            place_out: HashMap::new(),
            task_out: HashMap::new(),
            active: BTreeMap::new(),
            waiting: BTreeSet::new(),
            wake_waiting: false,
            freed_slots: 0,
            runs: BTreeMap::new(),
            discovered: BTreeMap::new(),
            addr_peers: HashMap::new(),
            mdns_peers: BTreeMap::new(),
            source_errors: BTreeMap::new(),
            joined: BTreeSet::new(),
            remembered: BTreeMap::new(),
            counters: Counters::default(),
            next_tick: Time::ZERO,
            shutdown: parts.shutdown,
            metrics: parts.metrics,
        };
        let now = this.now();
        this.recover(recovered, now);
        this.recover_runs(parts.runs);
        this
    }

    fn now(&self) -> Time {
        Time(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn deadline(&self) -> Time {
        [
            self.membership.poll_timeout(),
            self.negotiator.poll_timeout(),
            self.host.poll_timeout(),
            self.leases.poll_timeout(),
            Some(self.next_tick),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_tick)
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        loop {
            let deadline = self.epoch + Duration::from_millis(self.deadline().0);
            let sleep = tokio::time::sleep_until(deadline.into());
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(cmd) = self.commands.recv() => self.handle_command(cmd),
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                Some(ev) = self.exec_rx.recv() => self.handle_exec_event(ev),
                Some(done) = self.completions.next(), if !self.completions.is_empty() => self.handle_completion(done),
                Some((peer, refusal)) = self.gate_checks.next(), if !self.gate_checks.is_empty() => {
                    self.handle_gate_check(peer, refusal);
                }
                _ = sleep => self.handle_timers(),
            }
            self.drive();
        }
        self.stop_runs();
    }

    fn handle_timers(&mut self) {
        let now = self.now();
        self.membership.handle_timeout(now);
        self.negotiator.handle_timeout(now);
        self.host.handle_timeout(now);
        self.leases.handle_timeout(now);
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick(now);
        }
    }

    /// Housekeeping: pending retries, queue timeouts, report retries, redials.
    fn tick(&mut self, now: Time) {
        for peer in self.guard.expire(now) {
            if let Some(p2p) = to_libp2p(&peer) {
                self.swarm.behaviour_mut().banned.unblock_peer(p2p);
                tracing::info!(peer = %peer.short(), "ban over");
            }
        }
        self.retry_pending(now);
        self.retry_cancels(now);
        self.pump_all_runs(now);
        if now >= self.next_renewal {
            self.next_renewal = now + self.leases.config().renew_every;
            self.renew_leases(now);
        }
        self.check_stopping(now);
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::TaskCreated(task) => self.start_task(*task, now),
            Command::Cancel { id, reply } => {
                let _ = reply.send(self.cancel_task(id, now));
            }
            Command::Drain { reply } => {
                self.start_draining(now);
                let _ = reply.send(DrainStatus { draining: true, running: self.held_attempts() });
            }
            Command::Stop { grace, reply } => {
                tracing::info!(grace_s = grace.as_secs(), running = self.runs.len(), "stopping gracefully");
                self.start_draining(now);
                self.stopping = Some(Stopping { grace_until: now + grace, handed_back: None, reply });
                self.check_stopping(now);
            }
            Command::Node { reply } => {
                let _ = reply.send(self.node_info());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_entries(now));
            }
            Command::Readiness { reply } => {
                let _ = reply.send(self.readiness());
            }
            Command::Discovered { source, peers } => {
                self.source_errors.remove(source);
                self.handle_discovered(source, peers, now);
            }
            Command::DiscoveryFailed { source, error } => {
                self.source_errors.insert(source, error);
            }
            Command::TailnetGate { client, tag } => self.tailnet_gate = Some((client, tag)),
        }
    }

    /// No new placements here: bids are declined and peers see `draining` in this node's record.
    fn start_draining(&mut self, now: Time) {
        self.host.set_draining(true);
        self.membership.update_local(|r| r.draining = true, now);
    }

    /// Attempts held here: running, or finished with a result not yet delivered.
    fn held_attempts(&self) -> u32 {
        u32::try_from(self.runs.len()).unwrap_or(u32::MAX)
    }

    /// Moves a graceful stop along: done once nothing is held; at the end of the grace period the
    /// running attempts are handed back; a little later the node stops regardless (what is left
    /// is durable and delivered after the next start).
    fn check_stopping(&mut self, now: Time) {
        let Some(stopping) = &self.stopping else { return };
        let (grace_until, handed_back) = (stopping.grace_until, stopping.handed_back);
        let done = match handed_back {
            _ if self.runs.is_empty() => true,
            None if now >= grace_until => {
                let n = self.hand_back_runs();
                tracing::warn!(attempts = n, "grace period over; handing running attempts back");
                if let Some(s) = self.stopping.as_mut() {
                    s.handed_back = Some((n, now + HAND_BACK_WAIT));
                }
                false
            }
            Some((_, until)) => now >= until,
            None => false,
        };
        if done && let Some(stopping) = self.stopping.take() {
            let report = StopReport {
                handed_back: stopping.handed_back.map_or(0, |(n, _)| n),
                undelivered: self.runs.len(),
            };
            tracing::info!(
                handed_back = report.handed_back,
                undelivered = report.undelivered,
                "ready to stop"
            );
            let _ = stopping.reply.send(report);
        }
    }

    fn handle_discovered(&mut self, source: &'static str, peers: Vec<Discovered>, now: Time) {
        for d in &peers {
            let addrs: Vec<Multiaddr> = d.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            match &d.peer {
                Some(peer) if *peer == self.facts.peer => {}
                Some(peer) => {
                    let Some(p2p) = to_libp2p(peer) else { continue };
                    for addr in addrs {
                        self.swarm.add_peer_address(p2p, addr);
                    }
                    self.membership.add_contact(peer.clone(), now);
                    if !self.swarm.is_connected(&p2p) {
                        let _ = self.swarm.dial(p2p);
                    }
                }
                // Only an address: dial it; the peer id arrives with the connection.
                None => {
                    for addr in addrs {
                        let connected = self
                            .addr_peers
                            .get(&addr)
                            .and_then(to_libp2p)
                            .is_some_and(|p| self.swarm.is_connected(&p));
                        if !connected {
                            let _ = self.swarm.dial(
                                libp2p::swarm::dial_opts::DialOpts::unknown_peer_id().address(addr).build(),
                            );
                        }
                    }
                }
            }
        }
        self.discovered.insert(source, peers);
    }

    /// mDNS reports changes, not lists: keep the current list and hand it on like any source's.
    fn handle_mdns_event(&mut self, ev: libp2p::mdns::Event, now: Time) {
        match ev {
            libp2p::mdns::Event::Discovered(found) => {
                for (peer, addr) in found {
                    self.mdns_peers.entry(to_protocol(&peer)).or_default().insert(addr.to_string());
                }
            }
            libp2p::mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    let peer = to_protocol(&peer);
                    if let Some(addrs) = self.mdns_peers.get_mut(&peer) {
                        addrs.remove(&addr.to_string());
                        if addrs.is_empty() {
                            self.mdns_peers.remove(&peer);
                        }
                    }
                }
            }
        }
        let list = self
            .mdns_peers
            .iter()
            .map(|(peer, addrs)| Discovered {
                peer: Some(peer.clone()),
                addrs: addrs.iter().cloned().collect(),
            })
            .collect();
        self.handle_discovered("mdns", list, now);
    }

    /// Which discovery sources found `peer` (by id, or by an address we reached it at), plus
    /// `gossip` when its record came through gossip.
    fn sources_of(&self, peer: &PeerId) -> Vec<String> {
        let mut out: Vec<String> = self
            .discovered
            .iter()
            .filter(|(_, list)| {
                list.iter().any(|d| {
                    d.peer.as_ref() == Some(peer)
                        || d.addrs
                            .iter()
                            .filter_map(|a| a.parse::<Multiaddr>().ok())
                            .any(|a| self.addr_peers.get(&a) == Some(peer))
                })
            })
            .map(|(name, _)| name.to_string())
            .collect();
        if self.membership.peer(peer).is_some() {
            out.push("gossip".into());
        }
        out
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.swarm_event(&event);
        let now = self.now();
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(ev)) => self.handle_gossip_event(ev, now),
            SwarmEvent::Behaviour(BehaviourEvent::Place(ev)) => self.handle_place_event(ev, now),
            SwarmEvent::Behaviour(BehaviourEvent::Task(ev)) => self.handle_task_event(ev, now),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(ev)) => self.handle_mdns_event(ev, now),
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                // Whoever connects gets gossiped with, so inbound-only peers converge fast too.
                let peer = to_protocol(&peer_id);
                if let (libp2p::core::ConnectedPoint::Listener { send_back_addr, .. }, Some((client, tag))) =
                    (&endpoint, &self.tailnet_gate)
                {
                    self.check_tailnet_peer(peer_id, send_back_addr, client.clone(), tag.clone());
                    // A stranger becomes a contact once its check passes; a peer already in the
                    // view (a second connection, a redial) keeps being served while rechecked.
                    if self.membership.peer(&peer).is_none() {
                        self.gate_pending.insert(peer);
                        return;
                    }
                }
                if let libp2p::core::ConnectedPoint::Dialer { address, .. } = endpoint {
                    // Remembered so address-only discoveries can be attributed to their peer.
                    let bare: Multiaddr = address
                        .iter()
                        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                        .collect();
                    self.addr_peers.insert(bare, peer.clone());
                }
                self.membership.add_contact(peer, now);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                let addrs = self.advertised_addrs();
                self.membership.update_local(|r| r.addrs = addrs, now);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                // Wrong mesh key, garbage bytes, a refused (untrusted or banned) peer.
                self.counters.refused_connections += 1;
                tracing::debug!(%error, "inbound connection failed");
            }
            _ => {}
        }
    }

    fn advertised_addrs(&self) -> Vec<String> {
        self.swarm.listeners().chain(&self.facts.external_addrs).map(ToString::to_string).collect()
    }

    fn handle_gossip_event(&mut self, ev: request_response::Event<GossipRequest, GossipResponse>, now: Time) {
        match ev {
            request_response::Event::Message { peer, message, .. } => {
                let from = to_protocol(&peer);
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        if !self.admit(&from, now) {
                            return;
                        }
                        let response = self.membership.handle_request(&from, request, now);
                        let _ = self.swarm.behaviour_mut().gossip.send_response(channel, response);
                    }
                    request_response::Message::Response { response, .. } => {
                        self.membership.handle_response(&from, response, now);
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.counters.outbound_failures += 1;
                tracing::debug!(peer = %peer, %error, "gossip request failed");
                self.membership.handle_send_failed(&to_protocol(&peer), now);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(peer = %peer, %error, "inbound gossip failed");
                self.inbound_failure(&peer, &error, now);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn handle_place_event(&mut self, ev: request_response::Event<PlaceRequest, PlaceResponse>, now: Time) {
        match ev {
            request_response::Event::Message { peer, message, .. } => {
                let from = to_protocol(&peer);
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        if !self.admit(&from, now) {
                            return;
                        }
                        let response = self.handle_place_request(&from, request, now);
                        let _ = self.swarm.behaviour_mut().place.send_response(channel, response);
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some((_, out)) = self.place_out.remove(&request_id) {
                            self.handle_place_response(&from, out, response, now);
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                self.counters.outbound_failures += 1;
                tracing::debug!(peer = %peer, %error, "placement request failed");
                if let Some((to, out)) = self.place_out.remove(&request_id) {
                    match out {
                        PlaceOut::Bid(task, attempt) | PlaceOut::Commit(task, attempt) => {
                            self.negotiator.handle_request_failed(&to, task, attempt, now);
                        }
                        PlaceOut::Release => {}
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(peer = %peer, %error, "inbound placement request failed");
                self.inbound_failure(&peer, &error, now);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A candidate's answer to a placement request, local or remote alike.
    fn handle_place_request(&mut self, from: &PeerId, request: PlaceRequest, now: Time) -> PlaceResponse {
        match request {
            PlaceRequest::Bid(bid) => {
                // The bid's origin org is a claim; the sender's signed gossip record is the truth.
                if *from != self.facts.peer {
                    let known_org = self.membership.peer(from).map(|p| p.record.org);
                    if known_org.as_ref() != Some(&bid.origin_org) {
                        tracing::info!(peer = %from.short(), claimed = %bid.origin_org, ?known_org, "bid declined: org claim unverified");
                        let reason = match known_org {
                            // Not gossiped yet: a retry after the next round may succeed.
                            None => DeclineReason::Busy,
                            Some(_) => DeclineReason::Policy,
                        };
                        return PlaceResponse::Bid(BidResponse::Decline { reason });
                    }
                }
                PlaceResponse::Bid(self.host.handle_bid(from, &bid, now))
            }
            PlaceRequest::Commit(commit) => {
                // The spec comes from a peer: check it as strictly as the API does.
                if let Err(e) = commit.spec.validate() {
                    let reason = format!("invalid spec: {e}");
                    return PlaceResponse::Commit(orgmesh_protocol::wire::place::CommitResponse::Rejected {
                        reason,
                    });
                }
                let response = self.host.handle_commit(from, &commit, now);
                if response == orgmesh_protocol::wire::place::CommitResponse::Accepted {
                    self.start_run(from.clone(), commit, now);
                }
                PlaceResponse::Commit(response)
            }
            PlaceRequest::Release { reservation } => {
                self.host.handle_release(from, reservation, now);
                PlaceResponse::Released
            }
        }
    }

    fn handle_place_response(&mut self, from: &PeerId, out: PlaceOut, response: PlaceResponse, now: Time) {
        match (out, response) {
            (PlaceOut::Bid(task, attempt), PlaceResponse::Bid(r)) => {
                if let BidResponse::Decline { reason } = &r
                    && !reason.is_transient()
                {
                    let data = serde_json::json!({"id": task, "attempt": attempt.0, "peer_id": from, "reason": reason.to_string()});
                    drop(self.store.append_events(vec![NewEvent {
                        kind: "task.declined".into(),
                        data: data.to_string(),
                    }]));
                }
                self.negotiator.handle_bid_response(from, task, attempt, r, now);
            }
            (PlaceOut::Commit(task, attempt), PlaceResponse::Commit(r)) => {
                self.negotiator.handle_commit_response(from, task, attempt, r, now);
            }
            (PlaceOut::Release, _) => {}
            (PlaceOut::Bid(task, attempt) | PlaceOut::Commit(task, attempt), other) => {
                tracing::warn!(peer = %from.short(), ?other, "placement answer of the wrong kind");
                self.negotiator.handle_request_failed(from, task, attempt, now);
            }
        }
    }

    fn handle_task_event(&mut self, ev: request_response::Event<TaskRequest, TaskResponse>, now: Time) {
        match ev {
            request_response::Event::Message { peer, message, .. } => {
                let from = to_protocol(&peer);
                match message {
                    request_response::Message::Request { request, channel, .. } => {
                        if !self.admit(&from, now) {
                            return;
                        }
                        self.handle_task_request(&from, request, Reply::Remote(channel), now);
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some((_, out)) = self.task_out.remove(&request_id) {
                            match out {
                                TaskOut::Report(task, attempt, kind) => {
                                    self.handle_report_answer(task, attempt, kind, Some(response), now);
                                }
                                TaskOut::Cancel(task) => self.handle_cancel_answer(task, &response),
                                TaskOut::GiveUp => {}
                                TaskOut::Renew => self.handle_leases_answer(response),
                            }
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                self.counters.outbound_failures += 1;
                tracing::debug!(peer = %peer, %error, "task request failed");
                if let Some((_, TaskOut::Report(task, attempt, kind))) = self.task_out.remove(&request_id) {
                    self.handle_report_answer(task, attempt, kind, None, now);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(peer = %peer, %error, "inbound task request failed");
                self.inbound_failure(&peer, &error, now);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A task-protocol request, from a remote peer or from this node itself.
    fn handle_task_request(&mut self, from: &PeerId, request: TaskRequest, reply: Reply, now: Time) {
        match request {
            TaskRequest::Cancel { task, attempt } => {
                let response = self.host_cancel(from, task, attempt);
                self.send_reply(reply, Some(response), now);
            }
            TaskRequest::Renew { attempts } => {
                let response = self.handle_renew(from, attempts, now);
                self.send_reply(reply, Some(response), now);
            }
            report => self.handle_report(from, report, reply, now),
        }
    }

    fn send_reply(&mut self, reply: Reply, response: Option<TaskResponse>, now: Time) {
        match reply {
            Reply::Remote(channel) => {
                if let Some(response) = response {
                    let _ = self.swarm.behaviour_mut().task.send_response(channel, response);
                }
                // No response: dropping the channel makes the host retry.
            }
            Reply::Local(task, attempt, kind) => {
                self.handle_report_answer(task, attempt, kind, response, now)
            }
        }
    }

    fn handle_completion(&mut self, done: Completion) {
        let now = self.now();
        self.send_reply(done.reply, done.response, now);
    }

    /// Sends a task-protocol request to `to`, or handles it here if `to` is this node.
    fn send_task_request(&mut self, to: &PeerId, request: TaskRequest, out: TaskOut, now: Time) {
        if *to == self.facts.peer {
            let reply = match &out {
                TaskOut::Report(task, attempt, kind) => Reply::Local(*task, *attempt, *kind),
                TaskOut::Cancel(_) => {
                    let me = self.facts.peer.clone();
                    if let TaskRequest::Cancel { task, attempt } = request {
                        let response = self.host_cancel(&me, task, attempt);
                        self.handle_cancel_answer(task, &response);
                    }
                    return;
                }
                TaskOut::GiveUp => {
                    let me = self.facts.peer.clone();
                    if let TaskRequest::Cancel { task, attempt } = request {
                        self.host_cancel(&me, task, attempt);
                    }
                    return;
                }
                TaskOut::Renew => {
                    let me = self.facts.peer.clone();
                    if let TaskRequest::Renew { attempts } = request {
                        let response = self.handle_renew(&me, attempts, now);
                        self.handle_leases_answer(response);
                    }
                    return;
                }
            };
            let me = self.facts.peer.clone();
            self.handle_task_request(&me, request, reply, now);
            return;
        }
        match to_libp2p(to) {
            Some(p2p) => {
                let id = self.swarm.behaviour_mut().task.send_request(&p2p, request);
                self.task_out.insert(id, (to.clone(), out));
            }
            None => {
                if let TaskOut::Report(task, attempt, kind) = out {
                    self.handle_report_answer(task, attempt, kind, None, now);
                }
            }
        }
    }

    /// Flushes every state machine's outputs until all are quiet.
    fn drive(&mut self) {
        let now = self.now();
        if std::mem::take(&mut self.wake_waiting) {
            self.retry_pending(now);
        }
        if self.freed_slots > 0 {
            self.start_in_freed_slots(now);
        }
        let capacity = self.host.capacity();
        if self.membership.local().capacity != capacity {
            self.membership.update_local(|r| r.capacity = capacity, now);
        }
        loop {
            let mut progressed = false;
            while let Some(out) = self.membership.poll_output() {
                progressed = true;
                self.handle_membership_output(out, now);
            }
            while let Some(out) = self.negotiator.poll_output() {
                progressed = true;
                self.handle_negotiator_output(out, now);
            }
            while let Some(event) = self.leases.poll_event() {
                progressed = true;
                self.handle_lease_event(event, now);
            }
            if !progressed {
                break;
            }
            let capacity = self.host.capacity();
            if self.membership.local().capacity != capacity {
                self.membership.update_local(|r| r.capacity = capacity, now);
            }
        }
    }

    fn handle_membership_output(&mut self, out: MembershipOutput, now: Time) {
        match out {
            MembershipOutput::Send { to, request } => {
                self.metrics.gossip_sent(&request);
                // The answer names its peer; no bookkeeping per request is needed.
                if let Some(p2p) = to_libp2p(&to) {
                    self.swarm.behaviour_mut().gossip.send_request(&p2p, request);
                }
            }
            MembershipOutput::Event(event) => self.handle_membership_event(event, now),
        }
    }

    fn handle_membership_event(&mut self, event: MembershipEvent, now: Time) {
        match event {
            MembershipEvent::Joined { record } | MembershipEvent::Updated { record } => {
                let joined = self.joined.insert(record.peer_id.clone());
                if let Some(p2p) = to_libp2p(&record.peer_id) {
                    for addr in record.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
                        self.swarm.add_peer_address(p2p, addr);
                    }
                }
                if joined {
                    tracing::info!(peer = %record.peer_id.short(), org = %record.org, "peer joined");
                    let data = serde_json::json!({"peer_id": record.peer_id, "org": record.org, "name": record.name});
                    drop(self.store.append_events(vec![NewEvent {
                        kind: "peer.joined".into(),
                        data: data.to_string(),
                    }]));
                }
                // Remembered for redial after a restart; once per generation, not per capacity change.
                let generation = record.version.generation;
                if self.remembered.get(&record.peer_id) != Some(&generation)
                    && let Some(signed) = self.membership.signed_record(&record.peer_id)
                {
                    drop(self.store.put_peer(signed.clone()));
                    self.remembered.insert(record.peer_id.clone(), generation);
                }
                // New capacity somewhere may unblock pending tasks.
                self.wake_waiting = true;
            }
            MembershipEvent::StateChanged { peer, from, to } => {
                tracing::info!(peer = %peer.short(), from = from.as_str(), to = to.as_str(), "peer state changed");
                let info = self.membership.peer(&peer);
                let data = serde_json::json!({
                    "peer_id": peer,
                    "org": info.as_ref().map(|i| i.record.org.clone()),
                    "name": info.as_ref().map(|i| i.record.name.clone()),
                    "from": from.as_str(),
                    "state": to.as_str(),
                });
                let kind = format!("peer.{}", to.as_str());
                drop(self.store.append_events(vec![NewEvent { kind, data: data.to_string() }]));
                if to == PeerState::Dead {
                    self.host_dead(&peer, now);
                }
                if to == PeerState::Alive {
                    self.wake_waiting = true;
                }
            }
            MembershipEvent::Rejected { from, reason } => {
                self.counters.rejected_records += 1;
                tracing::debug!(peer = %from.short(), ?reason, "gossip record rejected");
                // Only a bad signature is the sender's fault: an honest relay verifies before it
                // relays, while a record our own trust policy refuses may be fine to the relay.
                if reason == RejectReason::BadSignature {
                    let verdict = self.guard.offence(&from, guard::Offence::RejectedRecord, now);
                    self.enforce(&from, verdict, "sent records that failed verification");
                }
            }
        }
    }

    fn handle_negotiator_output(&mut self, out: NegotiatorOutput, now: Time) {
        match out {
            NegotiatorOutput::Send { to, task, attempt, request } => {
                if let PlaceRequest::Commit(_) = &request {
                    self.note_commit(task, attempt, &to);
                }
                let kind = match &request {
                    PlaceRequest::Bid(_) => PlaceOut::Bid(task, attempt),
                    PlaceRequest::Commit(_) => PlaceOut::Commit(task, attempt),
                    PlaceRequest::Release { .. } => PlaceOut::Release,
                };
                if to == self.facts.peer {
                    let me = self.facts.peer.clone();
                    let response = self.handle_place_request(&me, request, now);
                    self.handle_place_response(&me, kind, response, now);
                    return;
                }
                match to_libp2p(&to) {
                    Some(p2p) => {
                        let id = self.swarm.behaviour_mut().place.send_request(&p2p, request);
                        self.place_out.insert(id, (to, kind));
                    }
                    None => {
                        if !matches!(kind, PlaceOut::Release) {
                            self.negotiator.handle_request_failed(&to, task, attempt, now);
                        }
                    }
                }
            }
            NegotiatorOutput::Event(event) => self.handle_placement_event(event, now),
        }
    }

    /// Asks tailscaled who is behind an inbound connection; the answer comes back through
    /// `gate_checks`.
    fn check_tailnet_peer(
        &mut self,
        peer: libp2p::PeerId,
        remote: &Multiaddr,
        client: orgmesh_discovery::TailscaleClient,
        tag: String,
    ) {
        use libp2p::multiaddr::Protocol;
        let mut ip = None;
        let mut port = None;
        for p in remote.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        let Some(addr) = ip.map(|ip| std::net::SocketAddr::new(ip, port.unwrap_or(0))) else {
            let why = format!("no IP address in {remote}");
            self.gate_checks.push(Box::pin(async move { (peer, Some(why)) }));
            return;
        };
        self.gate_checks.push(Box::pin(async move {
            let refusal = match client.whois(addr).await {
                Ok(Some(node)) if node.has_tag(&tag) => None,
                Ok(Some(node)) => Some(format!("tailnet node {} lacks {tag}", node.name)),
                Ok(None) => Some(format!("{addr} is not a node of this tailnet")),
                Err(e) => Some(format!("whois failed: {e}")),
            };
            (peer, refusal)
        }));
    }

    fn handle_gate_check(&mut self, peer: libp2p::PeerId, refusal: Option<String>) {
        let peer = to_protocol(&peer);
        self.gate_pending.remove(&peer);
        let Some(why) = refusal else {
            let now = self.now();
            self.membership.add_contact(peer, now);
            return;
        };
        self.counters.refused_connections += 1;
        tracing::warn!(peer = %peer.short(), %why, "inbound connection refused");
        self.enforce(&peer, guard::Verdict::Ban(Duration::from_secs(60)), &why);
    }

    /// Whether to serve an inbound request from `from` (rate limit; bans).
    fn admit(&mut self, from: &PeerId, now: Time) -> bool {
        if self.gate_pending.contains(from) {
            // Dropped, not queued: the peer retries on its next round, by then checked.
            self.counters.unchecked_requests += 1;
            return false;
        }
        match self.guard.request(from, now) {
            guard::Verdict::Allow => true,
            verdict => {
                self.counters.rate_limited_requests += 1;
                self.enforce(from, verdict, "exceeded its request rate");
                false
            }
        }
    }

    fn inbound_failure(
        &mut self,
        peer: &libp2p::PeerId,
        error: &request_response::InboundFailure,
        now: Time,
    ) {
        self.counters.inbound_failures += 1;
        // A frame that does not decode or is over its size limit: never sent by a correct peer.
        if let request_response::InboundFailure::Io(e) = error
            && matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
        {
            self.counters.malformed_frames += 1;
            let peer = to_protocol(peer);
            let verdict = self.guard.offence(&peer, guard::Offence::Malformed, now);
            self.enforce(&peer, verdict, "sent malformed or oversized frames");
        }
    }

    /// Carries out a ban verdict: disconnect, block for its length, record the event.
    fn enforce(&mut self, peer: &PeerId, verdict: guard::Verdict, why: &str) {
        let guard::Verdict::Ban(length) = verdict else { return };
        self.counters.bans += 1;
        tracing::warn!(peer = %peer.short(), seconds = length.as_secs(), why, "peer banned");
        if let Some(p2p) = to_libp2p(peer) {
            self.swarm.behaviour_mut().banned.block_peer(p2p);
        }
        let data = serde_json::json!({"peer_id": peer, "reason": why, "seconds": length.as_secs()});
        drop(self.store.append_events(vec![NewEvent { kind: "peer.banned".into(), data: data.to_string() }]));
    }

    fn node_info(&self) -> NodeInfo {
        let local = self.membership.local();
        NodeInfo {
            peer_id: self.facts.peer.clone(),
            org: self.facts.org.clone(),
            name: self.facts.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen_addrs: self.advertised_addrs(),
            labels: local.labels.clone(),
            capacity: self.host.capacity(),
            started_at: self.facts.started_at,
            draining: local.draining,
            isolation: local.isolation,
            counters: {
                let mut c = self.counters.to_map();
                c.insert("banned_peers_now".into(), self.guard.banned_count() as u64);
                c
            },
        }
    }

    fn peer_entries(&self, now: Time) -> Vec<PeerEntry> {
        let wall_now = crate::wall_clock();
        let mut entries: Vec<PeerEntry> = self
            .membership
            .peers()
            .into_iter()
            .map(|p| {
                let ago = now.since(p.last_seen).as_millis() as u64;
                PeerEntry {
                    sources: self.sources_of(&p.record.peer_id),
                    peer_id: p.record.peer_id,
                    org: p.record.org,
                    name: p.record.name,
                    state: p.state,
                    addrs: p.record.addrs,
                    labels: p.record.labels,
                    capacity: p.record.capacity,
                    last_seen: Timestamp(wall_now.0.saturating_sub(ago)),
                    draining: p.record.draining,
                    isolation: p.record.isolation,
                }
            })
            .collect();
        entries.sort_by(|a, b| (&a.org, &a.peer_id).cmp(&(&b.org, &b.peer_id)));
        entries
    }

    fn readiness(&self) -> Vec<Check> {
        let listeners = self.swarm.listeners().count();
        let mut checks = vec![Check {
            name: "p2p".into(),
            ok: listeners > 0,
            detail: format!("{listeners} listen address(es)"),
        }];
        let names: BTreeSet<&'static str> =
            self.discovered.keys().chain(self.source_errors.keys()).copied().collect();
        for source in names {
            let listed = self.discovered.get(source).map_or(0, Vec::len);
            checks.push(match self.source_errors.get(source) {
                Some(error) => {
                    Check { name: format!("discovery:{source}"), ok: false, detail: error.clone() }
                }
                None => Check {
                    name: format!("discovery:{source}"),
                    ok: true,
                    detail: format!("{listed} peer(s) listed"),
                },
            });
        }
        if self.facts.executor == crate::executor::ExecutorKind::Process {
            checks.push(self.sandbox_check());
        }
        checks
    }

    /// Whether attempts get the isolation this node was configured for, and if not, why.
    fn sandbox_check(&self) -> Check {
        let name = "sandbox".to_string();
        match (&self.facts.sandbox, &self.facts.sandbox_unavailable) {
            (Some(sandbox), _) => Check { name, ok: true, detail: sandbox.describe() },
            (None, Some(why)) => Check {
                name,
                ok: false,
                detail: format!(
                    "cannot build the sandbox: {why}; work from other orgs is refused until it can be built \
                     (or executor.isolation = \"none\" runs it unconfined, as this node's user)"
                ),
            },
            (None, None) => Check {
                name,
                ok: true,
                detail: "isolation none (executor.isolation): attempts run unconfined, as this node's user"
                    .into(),
            },
        }
    }

    /// Stops every running attempt (shutdown): their processes must not outlive the node.
    fn stop_runs(&mut self) {
        for run in self.runs.values() {
            run.cancel.cancel();
        }
    }
}
