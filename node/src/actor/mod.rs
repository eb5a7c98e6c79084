//! The node's event loop: the one owner of the swarm and of the protocol engine. A biased
//! `select!` over shutdown, commands from the API, swarm events, executor events, store
//! completions and the engine's earliest deadline; each arm feeds the engine one input, then
//! `apply_outputs` carries out what it asked for. Nothing else ever touches this state; the API
//! talks to it through `Command`s. Decisions about tasks and peers are the engine's, never made
//! here.

mod discovery;
mod effects;
mod guard;
mod joins;
mod network;
mod queries;
mod recovery;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::request_response::OutboundRequestId;
use libp2p::{Multiaddr, Swarm};
use orgmesh_api::{CancelError, Check, DrainStatus, NodeInfo, PeerEntry};
use orgmesh_discovery::Discovered;
use orgmesh_protocol::engine::{
    Engine, EngineParts, Exit, Input, LifeConfig, Now, Persisted, ReplyId, RequestId, WriteId,
};
use orgmesh_protocol::lifecycle::LeaseConfig;
use orgmesh_protocol::membership::Membership;
use orgmesh_protocol::placement::{Host, Negotiator};
use orgmesh_protocol::{Attempt, Org, PeerId, Task, TaskId, Time, Timestamp};
use orgmesh_store::{HostedRun, Store};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::executor::ExecEvent;
use crate::identity::to_libp2p;
use crate::p2p::Behaviour;
use network::{Channel, Protocol};
use recovery::StoreArchive;

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
    engine: Engine<ChaCha8Rng>,
    /// Set while stopping gracefully.
    stopping: Option<Stopping>,
    epoch: Instant,
    commands: mpsc::Receiver<Command>,
    exec_tx: mpsc::Sender<ExecEvent>,
    exec_rx: mpsc::Receiver<ExecEvent>,
    /// Writes the engine waits for, resolving once durable.
    completions: FuturesUnordered<BoxFuture<'static, (WriteId, Persisted)>>,
    /// The engine's request behind each libp2p request in flight.
    outbound: HashMap<(Protocol, OutboundRequestId), RequestId>,
    /// The stream each inbound request is answered on.
    channels: HashMap<ReplyId, Channel>,
    next_reply: u64,
    /// The cancel token of every attempt whose process runs here.
    attempts: HashMap<(TaskId, Attempt), CancellationToken>,
    /// Spools open for reading, so a long output is not reopened per chunk.
    readers: HashMap<(TaskId, Attempt), std::fs::File>,
    /// Discovery: each source's latest complete list.
    discovered: BTreeMap<&'static str, Vec<Discovered>>,
    /// Sources whose last attempt failed, with the error (they keep their last good list).
    source_errors: BTreeMap<&'static str, String>,
    /// Peers mDNS currently sees, with their addresses.
    mdns_peers: BTreeMap<PeerId, BTreeSet<String>>,
    /// Addresses we dialled and the peer that answered there.
    addr_peers: HashMap<Multiaddr, PeerId>,
    /// Peers whose `peer.joined` event was written, and the rate of those events.
    joined: joins::Joins,
    counters: queries::Counters,
    guard: guard::Guard,
    /// When set, inbound connections must come from tailnet nodes carrying the tag.
    tailnet_gate: Option<(orgmesh_discovery::TailscaleClient, String)>,
    /// Pending inbound checks: the peer and why it must go, if it must.
    gate_checks: FuturesUnordered<BoxFuture<'static, (libp2p::PeerId, Option<String>)>>,
    /// Inbound peers whose check has not answered yet: not a contact, and not served, until it
    /// passes (otherwise a refused node's record gets into the view in the meantime).
    gate_pending: BTreeSet<PeerId>,
    shutdown: CancellationToken,
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("peer", &self.facts.peer).finish_non_exhaustive()
    }
}

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
    /// Signs this node's result receipts, verifies its hosts' (the node's identity key).
    pub keyring: Box<dyn orgmesh_protocol::Keyring>,
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

/// When nothing is due, the loop still wakes this often (a bound, not a tick: nothing polls).
const IDLE: Duration = Duration::from_secs(3600);

impl EventLoop {
    /// Assembles the loop; `recovered` are the unfinished tasks found in the store at start.
    pub fn new(parts: Parts, recovered: Vec<Task>) -> Self {
        let (exec_tx, exec_rx) = mpsc::channel(256);
        let guard =
            guard::Guard::new(parts.facts.peer_requests_per_s, parts.facts.peer_burst, parts.facts.ban);
        let now = now_of(parts.epoch);
        let life = LifeConfig { output_cap: parts.facts.output_cap, ..LifeConfig::default() };
        let tasks = recovery::tasks(&parts.store, recovered);
        let runs = recovery::runs(&parts.facts.spool, parts.runs);
        let max_members = parts.membership.max_members();
        let engine = Engine::new(
            EngineParts {
                membership: parts.membership,
                negotiator: parts.negotiator,
                host: parts.host,
                leases: parts.leases,
                life,
                rng: parts.rng,
                keyring: parts.keyring,
            },
            tasks,
            runs,
            now,
        );
        let mut this = Self {
            guard,
            tailnet_gate: None,
            gate_checks: FuturesUnordered::new(),
            gate_pending: BTreeSet::new(),
            facts: parts.facts,
            swarm: parts.swarm,
            store: parts.store,
            engine,
            stopping: None,
            epoch: parts.epoch,
            commands: parts.commands,
            exec_tx,
            exec_rx,
            completions: FuturesUnordered::new(),
            outbound: HashMap::new(),
            channels: HashMap::new(),
            next_reply: 0,
            attempts: HashMap::new(),
            readers: HashMap::new(),
            discovered: BTreeMap::new(),
            addr_peers: HashMap::new(),
            mdns_peers: BTreeMap::new(),
            source_errors: BTreeMap::new(),
            joined: joins::Joins::new(max_members, now.time),
            counters: queries::Counters::default(),
            shutdown: parts.shutdown,
            metrics: parts.metrics,
        };
        this.apply_outputs();
        this
    }

    fn now(&self) -> Now {
        now_of(self.epoch)
    }

    fn next_reply(&mut self) -> ReplyId {
        self.next_reply += 1;
        ReplyId(self.next_reply)
    }

    /// Feeds the engine one input (it reads ended tasks from the store).
    fn feed(&mut self, input: Input, now: Now) {
        let archive = StoreArchive(&self.store);
        self.engine.handle(input, now, &archive);
    }

    /// The earliest of the engine's deadline, the end of a ban, and a graceful stop's next step.
    fn deadline(&self) -> Time {
        let stopping =
            self.stopping.as_ref().map(|s| s.handed_back.map_or(s.grace_until, |(_, until)| until));
        let idle = self.now().time + IDLE;
        [self.engine.poll_timeout(), self.guard.next_expiry(), stopping]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(idle)
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
                Some((id, result)) = self.completions.next(), if !self.completions.is_empty() => {
                    let now = self.now();
                    self.feed(Input::Persisted { id, result }, now);
                }
                Some((peer, refusal)) = self.gate_checks.next(), if !self.gate_checks.is_empty() => {
                    self.handle_gate_check(peer, refusal);
                }
                _ = sleep => self.handle_timers(),
            }
            self.apply_outputs();
        }
        // No attempt's process may outlive the node.
        for token in self.attempts.values() {
            token.cancel();
        }
    }

    fn handle_timers(&mut self) {
        let now = self.now();
        let archive = StoreArchive(&self.store);
        self.engine.handle_timeout(now, &archive);
        for peer in self.guard.expire(now.time) {
            if let Some(p2p) = to_libp2p(&peer) {
                self.swarm.behaviour_mut().banned.unblock_peer(p2p);
                tracing::info!(peer = %peer.short(), "ban over");
            }
        }
        self.check_stopping(now.time);
    }

    fn handle_exec_event(&mut self, event: ExecEvent) {
        let now = self.now();
        let input = match event {
            ExecEvent::Started { task, attempt, pgid } => Input::AttemptStarted { task, attempt, pgid },
            ExecEvent::Spooled { task, attempt, len } => Input::AttemptOutput { task, attempt, len },
            ExecEvent::Exited { task, attempt, info, output_len, measured } => {
                self.attempts.remove(&(task, attempt));
                let exit = Exit {
                    exit_code: info.exit_code,
                    error: info.error,
                    cancelled: info.cancelled,
                    output_sha256: measured.output_sha256,
                    usage: measured.usage,
                };
                Input::AttemptExited { task, attempt, exit, output_len }
            }
        };
        self.feed(input, now);
        self.check_stopping(now.time);
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::TaskCreated(task) => self.feed(Input::Submitted(task), now),
            Command::Cancel { id, reply } => {
                let _ = reply.send(self.cancel_task(id, now));
            }
            Command::Drain { reply } => {
                self.drain(now);
                let _ = reply.send(DrainStatus { draining: true, running: self.held_attempts() });
            }
            Command::Stop { grace, reply } => {
                tracing::info!(
                    grace_s = grace.as_secs(),
                    running = self.held_attempts(),
                    "stopping gracefully"
                );
                self.drain(now);
                self.stopping = Some(Stopping { grace_until: now.time + grace, handed_back: None, reply });
                self.check_stopping(now.time);
            }
            Command::Node { reply } => {
                let _ = reply.send(self.node_info());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_entries(now.time));
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

    fn cancel_task(&mut self, id: TaskId, now: Now) -> Result<(), CancelError> {
        let archive = StoreArchive(&self.store);
        if self.engine.cancel(id, now, &archive) {
            return Ok(());
        }
        match self.store.task(id) {
            Ok(Some(t)) => Err(CancelError::AlreadyEnded { id, status: t.status }),
            Ok(None) => Err(CancelError::NotFound(id)),
            Err(e) => Err(CancelError::Unavailable(e.to_string())),
        }
    }

    /// No new placements here: bids are declined and peers see `draining` in this node's record.
    fn drain(&mut self, now: Now) {
        let archive = StoreArchive(&self.store);
        self.engine.drain(now, &archive);
    }

    /// Attempts held here: running, or finished with a result not yet delivered.
    fn held_attempts(&self) -> u32 {
        u32::try_from(self.engine.held_attempts()).unwrap_or(u32::MAX)
    }

    /// Moves a graceful stop along: done once nothing is held; at the end of the grace period the
    /// running attempts are handed back; a little later the node stops regardless (what is left
    /// is durable and delivered after the next start).
    fn check_stopping(&mut self, now: Time) {
        let Some(stopping) = &self.stopping else { return };
        let (grace_until, handed_back) = (stopping.grace_until, stopping.handed_back);
        let done = match handed_back {
            _ if self.engine.held_attempts() == 0 => true,
            None if now >= grace_until => {
                let n = self.engine.hand_back();
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
                undelivered: self.engine.held_attempts(),
            };
            tracing::info!(
                handed_back = report.handed_back,
                undelivered = report.undelivered,
                "ready to stop"
            );
            let _ = stopping.reply.send(report);
        }
    }
}

fn now_of(epoch: Instant) -> Now {
    Now {
        time: Time(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)),
        wall: crate::wall_clock(),
    }
}
