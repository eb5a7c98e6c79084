//! A member gone bad that joins as a host: a real libp2p node with the node's own behaviour
//! (gossip, placement, task protocols), gossiping a record it signed with its own key, that can
//! capture work (bid the best score it may, accept every commit, renew its leases for ever and
//! never report `Started` or `Finished`) or flood a host with bids it never commits.
//!
//! Only tests use it; it must never run anything it is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, identity::Keypair};
use orgmesh_node::identity::{Libp2pKeyring, TrustPolicy, to_protocol};
use orgmesh_node::metrics::WireCounters;
use orgmesh_node::p2p::{Behaviour, BehaviourEvent, Gates, build_swarm};
use orgmesh_protocol::ids::{Attempt, Org, PeerId, ReservationId, TaskId};
use orgmesh_protocol::record::{AcceptPolicy, Capacity, Isolation, NodeRecord, RecordVersion, SignedRecord};
use orgmesh_protocol::task::{Constraints, Resources};
use orgmesh_protocol::wire::gossip::{DigestEntry, GossipRequest, GossipResponse, GossipUpdate};
use orgmesh_protocol::wire::place::{BidRequest, BidResponse, CommitResponse, PlaceRequest, PlaceResponse};
use orgmesh_protocol::wire::task::{TaskRequest, TaskResponse};

/// What the rogue saw and did, for the test to report.
#[derive(Debug, Default, Clone)]
pub struct RogueHostStats {
    /// Bids it answered with an offer.
    pub bids_offered: usize,
    /// Commits it accepted (attempts it now "holds").
    pub commits: usize,
    /// Renewals it sent.
    pub renewals: usize,
    /// Cancels it was sent (and ignored).
    pub cancels: usize,
    /// Attempts the origin told it to stop or cancel in answer to a renewal (ignored).
    pub told_to_stop: usize,
    /// Bids it flooded out, and how they ended.
    pub flood: FloodOutcomes,
}

/// How the bids of a flood ended.
#[derive(Debug, Default, Clone)]
pub struct FloodOutcomes {
    /// Sent.
    pub sent: usize,
    /// Answered with an offer.
    pub offered: usize,
    /// Answered with a decline, by reason.
    pub declined: BTreeMap<String, usize>,
    /// Failed: dropped or refused before an answer (the target's guard, stream limits, timeouts).
    pub failed: usize,
    /// The first failure, for diagnosis.
    pub first_error: Option<String>,
}

/// A rogue member that looks like a roomy host.
pub struct RogueHost {
    /// Its swarm (the node's own behaviour).
    pub swarm: Swarm<Behaviour>,
    /// Its peer id in the protocol's form.
    pub peer: PeerId,
    /// The node it joined through.
    pub target: libp2p::PeerId,
    record: SignedRecord,
    heartbeat: u64,
    /// Attempts it accepted, by origin.
    held: BTreeMap<libp2p::PeerId, BTreeSet<(TaskId, Attempt)>>,
    next_reservation: u64,
    /// Outstanding flood bids.
    flooding: BTreeSet<OutboundRequestId>,
    /// What happened so far.
    pub stats: RogueHostStats,
}

impl std::fmt::Debug for RogueHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RogueHost").field("peer", &self.peer).field("stats", &self.stats).finish()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RogueHost {
    /// A rogue with a fresh key claiming `org`, listening on loopback, connected to `target`
    /// (with the mesh key `psk` if the mesh has one), its signed record pushed to it.
    pub async fn join(target: &Multiaddr, psk: Option<PreSharedKey>, org: &str) -> anyhow::Result<RogueHost> {
        let key = Keypair::generate_ed25519();
        let gates = Gates { mesh_key: psk, ..Gates::default() };
        let mut swarm = build_swarm(key.clone(), &gates, &WireCounters::default())?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let listen = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        swarm.dial(target.clone())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let target = loop {
            match tokio::time::timeout_at(deadline, swarm.select_next_some()).await? {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => break peer_id,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    anyhow::bail!("the rogue host cannot connect: {error}")
                }
                _ => {}
            }
        };
        let peer = to_protocol(swarm.local_peer_id());
        // Roomy, so every origin wants it and its offers may score near the top.
        let capacity = Capacity {
            cpu_millis: 64_000,
            cpu_millis_free: 64_000,
            memory_mb: 262_144,
            memory_mb_free: 262_144,
            gpus: 0,
            gpus_free: 0,
            slots: 64,
            free_slots: 64,
            running_tasks: 0,
        };
        let record = NodeRecord {
            peer_id: peer.clone(),
            org: Org::new(org)?,
            name: "rogue".into(),
            addrs: vec![format!("{listen}/p2p/{}", swarm.local_peer_id())],
            labels: BTreeMap::new(),
            capacity,
            accepts: AcceptPolicy::AnyOrg,
            draining: false,
            isolation: Isolation::Sandbox,
            software: "rogue".into(),
            version: RecordVersion { generation: wall_ms(), version: 1 },
        };
        let keyring = Libp2pKeyring::new(key, TrustPolicy::default());
        let record = SignedRecord::sign(record, &keyring);
        let mut rogue = RogueHost {
            swarm,
            peer,
            target,
            record,
            heartbeat: 1,
            held: BTreeMap::new(),
            next_reservation: 1,
            flooding: BTreeSet::new(),
            stats: RogueHostStats::default(),
        };
        rogue.gossip();
        Ok(rogue)
    }

    fn own_entry(&self) -> DigestEntry {
        DigestEntry {
            peer: self.peer.clone(),
            version: self.record.record.version,
            heartbeat: self.heartbeat,
        }
    }

    /// One gossip round with the target: its own digest entry, one heartbeat further (direct
    /// claims are its own word, so they count).
    fn gossip(&mut self) {
        self.heartbeat += 1;
        let digest = vec![self.own_entry()];
        let target = self.target;
        self.swarm.behaviour_mut().gossip.send_request(&target, GossipRequest::Syn { digest });
    }

    fn push_record(&mut self) {
        let updates = vec![GossipUpdate {
            record: std::sync::Arc::new(self.record.clone()),
            heartbeat: self.heartbeat,
        }];
        let target = self.target;
        self.swarm.behaviour_mut().gossip.send_request(&target, GossipRequest::Push { updates });
    }

    fn renew_all(&mut self) {
        let held: Vec<_> =
            self.held.iter().map(|(o, a)| (*o, a.iter().copied().collect::<Vec<_>>())).collect();
        for (origin, attempts) in held {
            if attempts.is_empty() {
                continue;
            }
            self.stats.renewals += 1;
            self.swarm.behaviour_mut().task.send_request(&origin, TaskRequest::Renew { attempts });
        }
    }

    /// Runs the rogue for `duration`: gossips every 500 ms, renews every attempt it holds every
    /// second, answers every request as a host that captures work would, and, when `flood` is
    /// set, sends that many bids a second to the target (fresh tasks, never committed).
    pub async fn run_for(&mut self, duration: Duration, flood: Option<u32>) {
        let deadline = tokio::time::Instant::now() + duration;
        let mut gossip = tokio::time::interval(Duration::from_millis(500));
        let mut renew = tokio::time::interval(Duration::from_secs(1));
        let mut bids = tokio::time::interval(Duration::from_millis(10));
        let per_tick = flood.map_or(0, |rate| rate.div_ceil(100) as usize);
        let mut seq: u128 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = gossip.tick() => self.gossip(),
                _ = renew.tick() => self.renew_all(),
                _ = bids.tick(), if per_tick > 0 => {
                    for _ in 0..per_tick {
                        seq += 1;
                        let bid = BidRequest {
                            task: TaskId::new(wall_ms(), seq),
                            attempt: Attempt::FIRST,
                            origin_org: self.record.record.org.clone(),
                            resources: Resources { cpu_millis: 100, memory_mb: 64, gpus: 0 },
                            constraints: Constraints::default(),
                        };
                        let target = self.target;
                        let id = self.swarm.behaviour_mut().place.send_request(&target, PlaceRequest::Bid(bid));
                        self.flooding.insert(id);
                        self.stats.flood.sent += 1;
                    }
                }
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        use request_response::{Event, Message};
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(Event::Message { message, .. })) => match message {
                Message::Request { request, channel, .. } => {
                    let response = match request {
                        GossipRequest::Syn { .. } => GossipResponse::Ack {
                            updates: Vec::new(),
                            heartbeats: vec![self.own_entry()],
                            wanted: Vec::new(),
                        },
                        GossipRequest::Push { .. } => GossipResponse::Done,
                    };
                    let _ = self.swarm.behaviour_mut().gossip.send_response(channel, response);
                }
                Message::Response { response: GossipResponse::Ack { wanted, .. }, .. } => {
                    if wanted.contains(&self.peer) {
                        self.push_record();
                    }
                }
                Message::Response { .. } => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Place(Event::Message { peer, message, .. })) => {
                match message {
                    Message::Request { request, channel, .. } => {
                        let response = match request {
                            PlaceRequest::Bid(_) => {
                                self.stats.bids_offered += 1;
                                self.next_reservation += 1;
                                PlaceResponse::Bid(BidResponse::Offer {
                                    reservation: ReservationId(self.next_reservation),
                                    ttl_ms: 3000,
                                    score: 1000,
                                })
                            }
                            PlaceRequest::Commit(commit) => {
                                self.stats.commits += 1;
                                self.held.entry(peer).or_default().insert((commit.task, commit.attempt));
                                PlaceResponse::Commit(CommitResponse::Accepted)
                            }
                            PlaceRequest::Release { .. } => PlaceResponse::Released,
                        };
                        let _ = self.swarm.behaviour_mut().place.send_response(channel, response);
                    }
                    Message::Response { request_id, response } => {
                        if self.flooding.remove(&request_id) {
                            match response {
                                PlaceResponse::Bid(BidResponse::Offer { .. }) => {
                                    self.stats.flood.offered += 1
                                }
                                PlaceResponse::Bid(BidResponse::Decline { reason }) => {
                                    *self.stats.flood.declined.entry(format!("{reason:?}")).or_default() += 1;
                                }
                                other => {
                                    *self
                                        .stats
                                        .flood
                                        .declined
                                        .entry(format!("unexpected {other:?}"))
                                        .or_default() += 1;
                                }
                            }
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Place(Event::OutboundFailure {
                request_id,
                error,
                ..
            })) if self.flooding.remove(&request_id) => {
                self.stats.flood.failed += 1;
                self.stats.flood.first_error.get_or_insert_with(|| error.to_string());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Task(Event::Message { message, .. })) => match message {
                Message::Request { request, channel, .. } => {
                    if matches!(request, TaskRequest::Cancel { .. }) {
                        self.stats.cancels += 1;
                    }
                    let _ = self.swarm.behaviour_mut().task.send_response(channel, TaskResponse::Ack);
                }
                Message::Response { response: TaskResponse::Leases { stop, cancel }, .. } => {
                    self.stats.told_to_stop += stop.len() + cancel.len();
                }
                Message::Response { .. } => {}
            },
            _ => {}
        }
    }

    /// Bids the flood sent whose answer has not come.
    pub fn flood_in_flight(&self) -> usize {
        self.flooding.len()
    }
}
