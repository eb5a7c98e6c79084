//! Membership and capacity gossip: every node's signed record spreads to every node by periodic
//! push-pull anti-entropy rounds with random peers (Scuttlebutt), and a heartbeat failure detector
//! marks peers `suspect`, then `dead`, and `alive` again when their heartbeat moves.
//! Sans-IO: no clock, no sockets; randomness only from the seeded RNG it is given.
//!
//! Scale. A digest names at most `digest_budget` nodes (√N-ish, never fewer than
//! `MIN_DIGEST`): the local node, the records that changed recently (rumours, spread for about
//! 3·log2 N rounds, so a change reaches everyone in O(log N) rounds as in SWIM's dissemination;
//! a change of capacity alone is rumoured one hop around its owner, see `apply_update`),
//! then a window that rotates through every other record (anti-entropy, so nothing is missed
//! for good; each target of a round gets the next slice of it). Meshes small enough for one
//! budget still send the whole digest, as before. A digest of `MIN_DIGEST` entries or more is
//! read as partial: its absent entries are not taken as missing.
//!
//! Failure detection. Heartbeats travel in digests, so with partial digests a live peer's
//! heartbeat reaches us only every few rounds: the suspect and dead thresholds grow by an
//! *evidence window* proportional to N / (window × fanout) rounds. And a node that was not
//! listening (its timer fired late: paused, starved) does not count the time it was deaf against
//! its peers (after Lifeguard's local health).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use crate::ids::PeerId;
use crate::record::{Keyring, NodeRecord, RecordVersion, SignedRecord};
use crate::time::Time;
use crate::wire::gossip::{DigestEntry, GossipRequest, GossipResponse, GossipUpdate};

/// Most records in one `Ack` or `Push`; the rest follow in later rounds.
const MAX_UPDATES: usize = 256;
/// Most encoded bytes of records in one `Ack` or `Push`. With a 10,000-node digest (~700 kB), the
/// heartbeats and the wanted list, an `Ack` stays well under `wire::limits::GOSSIP` (4 MiB).
const MAX_UPDATE_BYTES: usize = 1024 * 1024;
/// One round in this many also contacts a dead peer, so a healed partition or a restarted node is
/// noticed even when nobody on either side still counts the other as alive.
const DEAD_PROBE_ODDS: u32 = 10;
/// Contacts remembered for good, to fall back on when every peer is dead or forgotten.
const MAX_SEEDS: usize = 64;
/// Round targets are drawn at random from a table at least this big (and with at most this many
/// contacts besides) instead of walking it.
const SAMPLE_ABOVE: usize = 64;
/// The smallest digest budget; a digest this long or longer is taken as partial.
pub const MIN_DIGEST: usize = 64;
/// A change is rumoured for this many times log2(N) rounds.
const RUMOUR_ROUNDS_PER_LOG2N: u32 = 3;
/// Margin of the evidence window over the expected rounds between two heartbeat sightings.
/// 3 was too tight: the simulator's 1,000-node mesh under 50% load, with no fault, declared
/// live peers suspect (21,025 in 180 s) and dead (1,538); 4 cuts that to 586 and 11, not to
/// zero (docs/simulation.md). Sightings that carry no newer heartbeat than the one held do not
/// count, so the real gaps run longer than the nominal rate says.
const EVIDENCE_MARGIN: u32 = 4;

/// Most records the table holds by default: well above the simulator's largest mesh (10,000
/// nodes), so only minted identities ever meet it. Shared with `settings` so node and simulator
/// agree.
pub const DEFAULT_MAX_MEMBERS: usize = 16_384;
/// Contacts (peers known by id only) held at once: inbound connections and discovery add them,
/// and connections cost a rogue nothing but a fresh key each.
const MAX_CONTACTS: usize = 1024;
/// The window of the per-introducer budget of new identities.
const INTRODUCTION_WINDOW: Duration = Duration::from_secs(60);
/// Introducers whose budget is tracked at once; past this, a new introducer's records wait for
/// the next window (an honest peer's come again by anti-entropy).
const MAX_INTRODUCERS: usize = 4096;

/// Tuning of gossip and failure detection.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Time between two gossip rounds started by this node (and between heartbeat bumps).
    pub gossip_interval: Duration,
    /// Peers contacted per round.
    pub fanout: usize,
    /// A peer whose heartbeat has not moved for this long becomes `suspect`.
    pub suspect_after: Duration,
    /// ... and `dead` after this long.
    pub dead_after: Duration,
    /// A dead peer's record is forgotten after this long.
    pub forget_after: Duration,
    /// Most entries in one digest; `None`: automatic, `max(MIN_DIGEST, 4·√N)` for N known nodes.
    pub max_digest: Option<usize>,
    /// Most peers the table holds. A full table takes a new record only in place of a member
    /// worth less (see `Worth`); each introducer (the sender of the records) may add at most a
    /// quarter of this (and never fewer than one message's worth) new identities per minute.
    pub max_members: usize,
}

/// The shipped defaults, for the node (`[gossip]` in `orgmesh.toml`) and the simulator alike.
/// 3 s / 6 s hold at scale: the simulator's `ci-churn` (loss, jitter, 2 s clock skew) has no false
/// verdict with them, and 124 false suspicions and 63 false deaths (seed 1, 40 nodes) with
/// 1.5 s / 2 s; a `dead` verdict only starts a task's
/// `replace_after_s` clock, so waiting longer for it costs little.
impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            gossip_interval: Duration::from_millis(500),
            fanout: 2,
            suspect_after: Duration::from_secs(3),
            dead_after: Duration::from_secs(6),
            forget_after: Duration::from_secs(24 * 3600),
            max_digest: None,
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }
}

/// What the failure detector thinks of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Its heartbeat moves.
    Alive,
    /// Its heartbeat stopped for `suspect_after`.
    Suspect,
    /// Its heartbeat stopped for `dead_after`.
    Dead,
}

impl PeerState {
    /// Lower-case name, as in JSON and event names.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Dead => "dead",
        }
    }
}

/// One peer as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its latest verified record.
    pub record: NodeRecord,
    /// Liveness verdict.
    pub state: PeerState,
    /// When its heartbeat last moved (or a message from it arrived).
    pub last_seen: Time,
    /// Its latest heartbeat.
    pub heartbeat: u64,
}

/// Why a received record was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The signature does not verify against the record's peer id.
    BadSignature,
    /// The record claims to be this node.
    ClaimsLocalIdentity,
    /// The signature verifies but local trust policy refuses the record (an untrusted peer, or an
    /// org claim the peer may not make).
    NotAdmitted,
}

/// Something the driver should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A peer was seen for the first time (or returned with a new generation after being forgotten).
    Joined {
        /// Its record.
        record: NodeRecord,
    },
    /// A known peer's record changed (capacity, addresses, labels, new generation...).
    Updated {
        /// The new record.
        record: NodeRecord,
    },
    /// The failure detector changed its verdict. A peer seen back with a new generation before
    /// it was declared dead gets `… → Dead` then `Dead → Alive`: its previous process is gone,
    /// with everything it held.
    StateChanged {
        /// The peer.
        peer: PeerId,
        /// Old verdict.
        from: PeerState,
        /// New verdict.
        to: PeerState,
    },
    /// A member was dropped to make room for one worth more (a full table): the driver forgets
    /// what it remembered of it (the redial list). Not a verdict on its liveness.
    Evicted {
        /// The peer.
        peer: PeerId,
    },
    /// A record was dropped; the driver counts these.
    Rejected {
        /// Who sent it.
        from: PeerId,
        /// Why.
        reason: RejectReason,
    },
}

/// An output of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
// Outputs are moved once, out of a queue drained at once; boxing the record would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum MembershipOutput {
    /// Send `request` to `to`; feed the answer to `handle_response` or the failure to
    /// `handle_send_failed`.
    Send {
        /// Destination.
        to: PeerId,
        /// The request.
        request: GossipRequest,
    },
    /// Tell the driver.
    Event(MembershipEvent),
}

/// How far past what time allows a relayed heartbeat may be: its owner bumps it once per
/// `gossip_interval` at most, so a claim further ahead than the intervals since the anchor (plus
/// this) was made up by someone other than the owner. A forger can lead the real heartbeat by
/// this many beats at most, less than the failure detector's `suspect_after` of silence.
///
/// This holds past an anchor that is the peer's own word. An anchor taken from a relay may be
/// stale (the first sighting of a peer, or of its new generation, can come from a node that
/// heard of it a while ago), and honest claims after it are ahead of it by that staleness. A
/// relay's view of a live peer is at most a suspicion window old (else the relay would suspect
/// it), so past a relayed anchor the slack is half the window (`Membership::bound`): a forger
/// can then make a peer look silent for half a window at most, never long enough to be suspected.
pub const HEARTBEAT_SLACK: u64 = 3;

/// How far ahead of an anchor a relayed heartbeat may be (see [`HEARTBEAT_SLACK`]).
#[derive(Debug, Clone, Copy)]
struct HeartbeatBound {
    interval_ms: u64,
    relayed_slack: u64,
}

/// What this node holds about one peer.
#[derive(Debug)]
struct Entry {
    record: Arc<SignedRecord>,
    /// Latest heartbeat seen in `record`'s generation.
    heartbeat: u64,
    /// A heartbeat of this peer and when it was seen, as the bound on later relayed claims: the
    /// peer's own word (it told us directly) whenever we have it, else the first sighting.
    anchor: (u64, Time),
    /// The anchor is the peer's own word: a bound nothing relayed can argue with.
    anchor_direct: bool,
    state: PeerState,
    /// When `heartbeat` last moved or the peer last spoke to us directly.
    last_seen: Time,
    /// It spoke to us itself at least once (not only relayed by others).
    direct: bool,
    /// The driver said it did work with us (offered, ran, placed): kept over idle members.
    useful: bool,
}

/// What a member is worth keeping when the table is full; the least worth goes first. Trusted
/// (the keyring's trust policy, or a seed/static contact) beats useful beats heard directly;
/// among equals, alive beats suspect beats dead. A minted identity relayed by a rogue is
/// untrusted, useless and never heard directly: it can only displace the dead and silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Worth(u8);

impl Worth {
    fn of(trusted: bool, useful: bool, direct: bool, state: PeerState) -> Self {
        let liveness = match state {
            PeerState::Alive => 3,
            PeerState::Suspect => 1,
            PeerState::Dead => 0,
        };
        Worth(u8::from(trusted) * 16 + u8::from(useful) * 8 + u8::from(direct) * 4 + liveness)
    }
}

/// New identities one sender added in the current window.
#[derive(Debug, Clone, Copy)]
struct Introduced {
    since: Time,
    count: usize,
}

/// Records turned away to keep the table bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundStats {
    /// New records refused: the table was full of members worth as much or more.
    pub members_refused: u64,
    /// Members dropped to make room for a newcomer worth more.
    pub members_evicted: u64,
    /// New records refused because their sender had introduced its budget of new identities.
    pub introductions_refused: u64,
}

/// A heartbeat claimed for a peer, and whether the peer itself made the claim (it sent the
/// message) or relayed it.
#[derive(Debug, Clone, Copy)]
struct Claim {
    generation: u64,
    heartbeat: u64,
    direct: bool,
}

/// What a heartbeat claim did.
#[derive(Debug, Default)]
struct Observed {
    /// A change of verdict to report.
    event: Option<MembershipEvent>,
    /// The claim was further ahead than its owner could have counted: dropped.
    forged: bool,
}

/// A forgotten peer. Others may forget it a little later than we do and keep gossiping its
/// record meanwhile; without this it would come back as a zombie and be forgotten again, forever.
#[derive(Debug)]
struct Tombstone {
    generation: u64,
    heartbeat: u64,
    expires: Time,
}

/// The membership state machine of one node.
///
/// Inputs: `handle_request` (answers synchronously), `handle_response`, `handle_send_failed`,
/// `add_contact`, `update_local`, `handle_timeout`. Outputs: `poll_output` until `None`;
/// `poll_timeout` gives the next deadline.
pub struct Membership<R: Rng> {
    config: MembershipConfig,
    keyring: Box<dyn Keyring>,
    rng: R,
    local: Arc<SignedRecord>,
    /// The local heartbeat, bumped once per `gossip_interval`.
    heartbeat: u64,
    peers: BTreeMap<PeerId, Entry>,
    /// The keys of `peers`, in no meaningful order: what round targets are drawn from.
    roster: Vec<PeerId>,
    /// Peers we were told about but hold no record of; they stay round targets until it arrives.
    contacts: BTreeSet<PeerId>,
    /// Contacts not tried yet: the next round goes to them first.
    fresh: BTreeSet<PeerId>,
    /// The first contacts ever added (bootstrap peers, typically): the last resort of a node that
    /// has lost every peer, e.g. after a partition long enough to forget them all.
    seeds: BTreeSet<PeerId>,
    /// Peers a request recently failed to reach, and when: picked only when nobody else is left.
    unreachable: BTreeMap<PeerId, Time>,
    tombstones: BTreeMap<PeerId, Tombstone>,
    next_round: Time,
    /// An extra round (no heartbeat bump) asked for by a new contact or a local change.
    early_round: Option<Time>,
    last_round: Option<Time>,
    /// The last `handle_timeout`: a much later next one means this node was not listening.
    last_timeout: Option<Time>,
    /// When the local record last changed.
    local_changed_at: Time,
    /// Recent record changes, oldest first (may repeat a peer): the rumours.
    recent: VecDeque<(Time, PeerId)>,
    /// Where the rotating digest window resumes.
    cursor: Option<PeerId>,
    /// Failure detection runs at most once per interval (it scans every peer).
    next_detect: Time,
    out: VecDeque<MembershipOutput>,
    /// Heartbeat claims dropped as made up (ahead of what their owner could have counted).
    forged_heartbeats: u64,
    /// New identities added per sender in the current window.
    introduced: BTreeMap<PeerId, Introduced>,
    /// Eviction candidates of a full table, worth most first (so `pop` gives the least): built
    /// by one scan when first needed, dropped at each failure-detection pass, so a flood of
    /// newcomers costs one scan per interval, not one per record. Worth is checked again on use.
    victims: Option<Vec<PeerId>>,
    bounds: BoundStats,
}

impl<R: Rng> std::fmt::Debug for Membership<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let local = &self.local.record.peer_id;
        f.debug_struct("Membership")
            .field("local", local)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl<R: Rng> Membership<R> {
    /// Starts with only the local record (its `version` is taken as given and signed).
    pub fn new(
        local: NodeRecord,
        keyring: Box<dyn Keyring>,
        config: MembershipConfig,
        rng: R,
        now: Time,
    ) -> Self {
        let mut config = config;
        // A zero interval would keep `poll_timeout` due forever.
        config.gossip_interval = config.gossip_interval.max(Duration::from_millis(1));
        let local = Arc::new(SignedRecord::sign(local, &*keyring));
        Self {
            next_round: now + config.gossip_interval,
            config,
            keyring,
            rng,
            local,
            heartbeat: 0,
            peers: BTreeMap::new(),
            roster: Vec::new(),
            contacts: BTreeSet::new(),
            fresh: BTreeSet::new(),
            seeds: BTreeSet::new(),
            unreachable: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            early_round: None,
            last_round: None,
            last_timeout: None,
            local_changed_at: now,
            recent: VecDeque::new(),
            cursor: None,
            next_detect: now,
            out: VecDeque::new(),
            forged_heartbeats: 0,
            introduced: BTreeMap::new(),
            victims: None,
            bounds: BoundStats::default(),
        }
    }

    /// The local record as currently gossiped.
    pub fn local(&self) -> &NodeRecord {
        &self.local.record
    }

    /// Changes the local record (capacity, addresses, labels, draining); bumps its version and
    /// re-signs it if anything changed.
    pub fn update_local(&mut self, change: impl FnOnce(&mut NodeRecord), now: Time) {
        let mut record = self.local.record.clone();
        change(&mut record);
        // Identity and version are this machine's to manage, whatever the closure did.
        record.peer_id = self.local.record.peer_id.clone();
        record.version = self.local.record.version;
        if record == self.local.record {
            return;
        }
        let capacity_only = self.local.record.differs_only_in_capacity(&record);
        record.version.version = record.version.version.saturating_add(1);
        self.local = Arc::new(SignedRecord::sign(record, &*self.keyring));
        if capacity_only && !self.whole_digests() {
            // A big mesh learns capacity by anti-entropy (see `apply_update`): our own entry
            // leads every digest we send, so each gossip partner still gets this version at
            // once, and an extra round per task started or ended would double our messages.
            return;
        }
        self.local_changed_at = now;
        // Placement reads capacity from gossip: spread changes before the next periodic round.
        self.schedule_early_round(now);
    }

    /// A peer this node can reach but may not have a record of yet (bootstrap list, discovery,
    /// inbound connection): rounds include it until its record arrives.
    pub fn add_contact(&mut self, peer: PeerId, now: Time) {
        if peer == self.local.record.peer_id {
            return;
        }
        if self.seeds.len() < MAX_SEEDS {
            self.seeds.insert(peer.clone());
        }
        if self.peers.contains_key(&peer) || self.contacts.len() >= MAX_CONTACTS {
            return;
        }
        if self.contacts.insert(peer.clone()) {
            self.fresh.insert(peer);
            // Bootstrap should not wait a whole interval.
            self.schedule_early_round(now);
        }
    }

    /// Answers a gossip request from `from`.
    pub fn handle_request(&mut self, from: &PeerId, request: GossipRequest, now: Time) -> GossipResponse {
        self.heard_from(from, now);
        match request {
            GossipRequest::Syn { digest } => self.on_syn(from, &digest, now),
            GossipRequest::Push { updates } => {
                self.apply_updates(from, updates, now);
                GossipResponse::Done
            }
        }
    }

    /// Takes the answer to a request this machine sent to `from`.
    pub fn handle_response(&mut self, from: &PeerId, response: GossipResponse, now: Time) {
        self.heard_from(from, now);
        let GossipResponse::Ack { updates, heartbeats, wanted } = response else { return };
        self.apply_updates(from, updates, now);
        for h in &heartbeats {
            self.observe_heartbeat(from, &h.peer, h.version.generation, h.heartbeat, now);
        }
        // A set drops duplicates; an honest responder never asks for more than one message holds.
        let wanted: BTreeSet<PeerId> = wanted.into_iter().take(MAX_UPDATES).collect();
        let updates = self.select_updates(wanted.into_iter().collect());
        if !updates.is_empty() {
            let request = GossipRequest::Push { updates };
            self.out.push_back(MembershipOutput::Send { to: from.clone(), request });
        }
    }

    /// A request to `to` could not be delivered.
    pub fn handle_send_failed(&mut self, to: &PeerId, now: Time) {
        // Only a hint for picking targets: liveness is the heartbeat's business, and a peer we
        // cannot reach may well be reachable by others.
        if *to != self.local.record.peer_id {
            self.unreachable.insert(to.clone(), now);
            self.next_detect = self.next_detect.min(now + self.config.dead_after);
        }
    }

    /// Runs what is due: a gossip round, the heartbeat, failure detection.
    pub fn handle_timeout(&mut self, now: Time) {
        self.discount_deafness(now);
        if now >= self.next_detect {
            let next_change = self.detect_failures(now);
            self.next_detect = next_change.max(now + self.config.gossip_interval);
        }
        if now >= self.next_round {
            self.heartbeat = self.heartbeat.saturating_add(1);
            self.next_round = now + self.config.gossip_interval;
            self.start_round(now);
        } else if self.early_round.is_some_and(|at| now >= at) {
            self.start_round(now);
        }
    }

    /// The next time `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        // Failure detection runs with every round, so the rounds are the only deadlines.
        Some(self.early_round.map_or(self.next_round, |at| at.min(self.next_round)))
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<MembershipOutput> {
        self.out.pop_front()
    }

    /// How many heartbeat claims were dropped as made up so far.
    pub fn forged_heartbeats(&self) -> u64 {
        self.forged_heartbeats
    }

    /// Most peers the table holds.
    pub fn max_members(&self) -> usize {
        self.config.max_members
    }

    /// What was turned away to keep the table bounded.
    pub fn bound_stats(&self) -> BoundStats {
        self.bounds
    }

    /// The driver did work with `peer` (an offer, a placement, an attempt): it is kept over
    /// idle members when the table is full.
    pub fn mark_useful(&mut self, peer: &PeerId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.useful = true;
        }
    }

    /// One peer.
    pub fn peer(&self, id: &PeerId) -> Option<PeerInfo> {
        self.peers.get(id).map(Entry::info)
    }

    /// A peer's latest verified record with its signature, e.g. to remember it across restarts.
    pub fn signed_record(&self, id: &PeerId) -> Option<&SignedRecord> {
        self.peers.get(id).map(|e| &*e.record)
    }

    /// Every known peer except this node, in peer-id order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers.values().map(Entry::info).collect()
    }

    /// A peer's record version and verdict, without copying its record (for checkers that look
    /// at every peer often).
    pub fn peer_view(&self, id: &PeerId) -> Option<(RecordVersion, PeerState)> {
        self.peers.get(id).map(|e| (e.record.record.version, e.state))
    }

    /// The records of the peers judged alive, in peer-id order, without copying them.
    pub fn alive_records(&self) -> impl Iterator<Item = &NodeRecord> + Clone {
        self.peers.values().filter(|e| e.state == PeerState::Alive).map(|e| &e.record.record)
    }

    fn schedule_early_round(&mut self, now: Time) {
        // At most one extra round per quarter interval, however often this is called.
        let at = self.last_round.map_or(now, |last| now.max(last + self.config.gossip_interval / 4));
        if at < self.next_round {
            self.early_round = Some(self.early_round.map_or(at, |early| early.min(at)));
        }
    }

    fn start_round(&mut self, now: Time) {
        self.last_round = Some(now);
        self.early_round = None;
        let targets = self.pick_targets();
        if targets.is_empty() {
            return;
        }
        // Each target gets its own slice of the rotating window. The same window sent to every
        // target asked `fanout` peers the same questions: their answers carried the same records
        // (at 1,000 simulated nodes under load, 27% of the records received were not newer),
        // and the window swept the table no faster than with one target.
        let rumours = self.rumours(now);
        for to in targets {
            let digest = self.digest(&rumours);
            let request = GossipRequest::Syn { digest };
            self.out.push_back(MembershipOutput::Send { to, request });
        }
    }

    /// Untried contacts first, then random peers not known dead (and remaining contacts),
    /// avoiding those that just failed to answer; now and then one dead peer on top; a seed
    /// when there is nobody else.
    fn pick_targets(&mut self) -> Vec<PeerId> {
        let fanout = self.config.fanout;
        let mut targets = Vec::new();
        while targets.len() < fanout {
            let Some(peer) = self.fresh.pop_first() else { break };
            targets.push(peer);
        }
        self.sample_targets(fanout, &mut targets);
        if targets.len() >= fanout {
            return self.maybe_probe_dead(targets);
        }
        // Few peers, most of them dead or unreachable, or many contacts: look at every one.
        let (mut preferred, mut fallback) = (Vec::new(), Vec::new());
        let live = self.peers.iter().filter(|(_, e)| e.state != PeerState::Dead).map(|(p, _)| p);
        for peer in live.chain(&self.contacts).filter(|p| !targets.contains(*p)) {
            if self.unreachable.contains_key(peer) { fallback.push(peer) } else { preferred.push(peer) }
        }
        for pool in [&mut preferred, &mut fallback] {
            let need = fanout.saturating_sub(targets.len());
            let (chosen, _) = pool.partial_shuffle(&mut self.rng, need);
            targets.extend(chosen.iter().map(|p| (*p).clone()));
        }
        self.maybe_probe_dead(targets)
    }

    /// Random live, reachable peers drawn from the roster without walking the table: the walk
    /// cost O(N) per round, 2·10⁸ entry visits per simulated second at 10,000 nodes. Draws are
    /// uniform over the peers that qualify; it gives up after a few misses per target (the
    /// caller then walks), and leaves remaining contacts, if many, to the walk.
    fn sample_targets(&mut self, fanout: usize, targets: &mut Vec<PeerId>) {
        const DRAWS_PER_TARGET: usize = 8;
        let space = self.roster.len() + self.contacts.len();
        if self.roster.len() < SAMPLE_ABOVE || self.contacts.len() > SAMPLE_ABOVE {
            return;
        }
        for _ in 0..DRAWS_PER_TARGET * fanout {
            if targets.len() >= fanout {
                return;
            }
            let i = self.rng.random_range(0..space);
            let peer = match self.roster.get(i) {
                Some(peer) if self.peers.get(peer).is_some_and(|e| e.state != PeerState::Dead) => peer,
                Some(_) => continue,
                None => match self.contacts.iter().nth(i - self.roster.len()) {
                    Some(peer) => peer,
                    None => continue,
                },
            };
            if !self.unreachable.contains_key(peer) && !targets.contains(peer) {
                targets.push(peer.clone());
            }
        }
    }

    /// Now and then one dead peer on top; a seed when there is nobody else.
    fn maybe_probe_dead(&mut self, mut targets: Vec<PeerId>) -> Vec<PeerId> {
        if targets.is_empty() || self.rng.random_ratio(1, DEAD_PROBE_ODDS) {
            let is_dead = |p: &PeerId| self.peers.get(p).is_some_and(|e| e.state == PeerState::Dead);
            let dead = if self.roster.len() >= SAMPLE_ABOVE && !targets.is_empty() {
                // A big table is sampled: a few dead among thousands may go unprobed this round
                // (they gossip to us themselves once back); many dead (a healed partition) are
                // found. A node with nobody else to ask walks, below.
                (0..16)
                    .map(|_| self.rng.random_range(0..self.roster.len()))
                    .find(|&i| is_dead(&self.roster[i]))
            } else {
                let dead: Vec<usize> = (0..self.roster.len()).filter(|&i| is_dead(&self.roster[i])).collect();
                dead.choose(&mut self.rng).copied()
            };
            if let Some(i) = dead {
                targets.push(self.roster[i].clone());
            }
        }
        if targets.is_empty() {
            let seeds: Vec<&PeerId> = self.seeds.iter().collect();
            if let Some(peer) = seeds.choose(&mut self.rng) {
                targets.push((*peer).clone());
            }
        }
        targets
    }

    /// Whether every digest names every record held (a mesh small enough for one budget).
    fn whole_digests(&self) -> bool {
        self.peers.len() < self.digest_budget()
    }

    /// How many entries a digest may hold: `max(MIN_DIGEST, 4·√N)` unless configured.
    fn digest_budget(&self) -> usize {
        let held = self.peers.len() + 1;
        let auto = || MIN_DIGEST.max((4.0 * (held as f64).sqrt()).ceil() as usize);
        self.config.max_digest.unwrap_or_else(auto).max(1)
    }

    /// How long a change stays a rumour: `RUMOUR_ROUNDS_PER_LOG2N`·log2(N) rounds.
    fn rumour_for(&self) -> Duration {
        let log2 = usize::BITS - (self.peers.len() + 1).leading_zeros();
        self.config.gossip_interval * (RUMOUR_ROUNDS_PER_LOG2N * log2.max(1))
    }

    /// Extra silence a verdict needs when heartbeats arrive only through partial digests: a
    /// margin times the rounds between two sightings of one peer's heartbeat, about
    /// N / (window × fanout). Zero while whole digests are sent.
    /// The bound on relayed heartbeats now: half the suspicion window past a relayed anchor.
    fn bound(&self) -> HeartbeatBound {
        let interval_ms = u64::try_from(self.config.gossip_interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let window = self.config.suspect_after.saturating_add(self.evidence_window());
        let window_beats = u64::try_from(window.as_millis()).unwrap_or(u64::MAX) / interval_ms;
        HeartbeatBound { interval_ms, relayed_slack: (window_beats / 2).max(HEARTBEAT_SLACK) }
    }

    fn evidence_window(&self) -> Duration {
        let (held, budget) = (self.peers.len() + 1, self.digest_budget());
        if held <= budget {
            return Duration::ZERO;
        }
        let per_round = (budget / 2).max(1) * self.config.fanout.max(1);
        let rounds = u32::try_from(held.div_ceil(per_round)).unwrap_or(u32::MAX);
        self.config.gossip_interval.saturating_mul(EVIDENCE_MARGIN.saturating_mul(rounds))
    }

    /// The rumours of this round: recent changes, newest first, up to half the budget. Empty
    /// while whole digests are sent.
    fn rumours(&self, now: Time) -> Vec<DigestEntry> {
        if self.whole_digests() {
            return Vec::new();
        }
        let half = self.digest_budget() / 2;
        let rumour_for = self.rumour_for();
        let mut named: BTreeSet<&PeerId> = BTreeSet::new();
        let mut out = Vec::new();
        for (_, peer) in self.recent.iter().rev().take_while(|(at, _)| now.since(*at) < rumour_for) {
            if out.len() >= half {
                break;
            }
            if let Some(e) = self.peers.get(peer)
                && named.insert(peer)
            {
                let version = e.record.record.version;
                out.push(DigestEntry { peer: peer.clone(), version, heartbeat: e.heartbeat });
            }
        }
        out
    }

    /// One target's digest: the round's `rumours`, then the local entry, then the next slice of
    /// a window rotating through all other records in id order (each call moves the window on).
    /// Whole if it fits the budget. Old versions put the local entry first; the order carries no
    /// meaning for them.
    fn digest(&mut self, rumours: &[DigestEntry]) -> Vec<DigestEntry> {
        let budget = self.digest_budget();
        if self.whole_digests() {
            return self
                .held()
                .map(|(peer, version, heartbeat)| DigestEntry { peer: peer.clone(), version, heartbeat })
                .collect();
        }
        let mut out = Vec::with_capacity(budget);
        out.extend_from_slice(rumours);
        // The local entry separates the rumours from the window: a responder can tell that the
        // window names *every* record this node holds in the id range it covers (see `fill`).
        let local = &self.local.record;
        out.push(DigestEntry {
            peer: local.peer_id.clone(),
            version: local.version,
            heartbeat: self.heartbeat,
        });
        let after = match &self.cursor {
            Some(c) => self.peers.range::<PeerId, _>((Bound::Excluded(c), Bound::Unbounded)),
            None => self.peers.range::<PeerId, _>(..),
        };
        // A rumour is named once, before the local entry; the window still covers its id.
        let mut rumoured: Vec<&PeerId> = rumours.iter().map(|r| &r.peer).collect();
        rumoured.sort_unstable();
        let mut last = None;
        for (peer, e) in after.chain(self.peers.iter()).take(self.peers.len()) {
            if out.len() >= budget {
                break;
            }
            last = Some(peer);
            if rumoured.binary_search(&peer).is_err() {
                out.push(DigestEntry {
                    peer: peer.clone(),
                    version: e.record.record.version,
                    heartbeat: e.heartbeat,
                });
            }
        }
        self.cursor = last.cloned();
        out
    }

    /// Lifeguard's local health: if this call comes much later than the machine asked for (the
    /// process was paused or starved), nobody could be heard meanwhile; that deaf time is not
    /// counted against any peer.
    fn discount_deafness(&mut self, now: Time) {
        let expected = self.config.gossip_interval;
        if let Some(last) = self.last_timeout.replace(now) {
            let gap = now.since(last);
            if gap > expected * 2 {
                // Every deadline moved: look again now rather than at the old next change.
                self.next_detect = now;
                let deaf = gap - expected;
                for e in self.peers.values_mut() {
                    e.last_seen = (e.last_seen + deaf).min(now);
                }
                for at in self.unreachable.values_mut() {
                    *at = (*at + deaf).min(now);
                }
            }
        }
    }

    /// Notes that `peer`'s record changed: it becomes a rumour.
    fn note_change(&mut self, peer: &PeerId, now: Time) {
        self.recent.push_back((now, peer.clone()));
        let (rumour_for, cap) = (self.rumour_for(), self.digest_budget() * 4);
        while self.recent.front().is_some_and(|(at, _)| now.since(*at) >= rumour_for)
            || self.recent.len() > cap
        {
            self.recent.pop_front();
        }
    }

    /// Every record held, the local one first: (peer, version, heartbeat).
    fn held(&self) -> impl Iterator<Item = (&PeerId, RecordVersion, u64)> {
        let local = &self.local.record;
        std::iter::once((&local.peer_id, local.version, self.heartbeat))
            .chain(self.peers.iter().map(|(p, e)| (p, e.record.record.version, e.heartbeat)))
    }

    fn on_syn(&mut self, from: &PeerId, digest: &[DigestEntry], now: Time) -> GossipResponse {
        // A long digest may be partial: what it does not name, the initiator may well hold.
        let partial = digest.len() >= MIN_DIGEST;
        // By peer; of duplicate entries, the most advanced counts. A sorted vector, not a map:
        // this runs for every Syn, with hundreds of entries at a large mesh.
        let mut theirs: Vec<(&PeerId, (RecordVersion, u64))> =
            digest.iter().map(|e| (&e.peer, (e.version, e.heartbeat))).collect();
        theirs.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        theirs.dedup_by(|later, first| later.0 == first.0);
        let seen = |peer: &PeerId| theirs.binary_search_by(|(p, _)| (*p).cmp(peer)).ok().map(|i| theirs[i].1);
        let rumour_for = self.rumour_for();
        let local = Arc::clone(&self.local);
        let local_id = &local.record.peer_id;
        // Liveness spreads here, without any record changing hands; ours first, so our answer
        // below carries a heartbeat past any the mesh still has of ours.
        let of_local = seen(local_id);
        if let Some((version, heartbeat)) = of_local {
            self.observe_heartbeat(from, local_id, version.generation, heartbeat, now);
        }
        let (mut candidates, mut heartbeats, mut wanted) = (Vec::new(), Vec::new(), Vec::new());
        let mut consider = |peer: &PeerId, seen: Option<(RecordVersion, u64)>, version, heartbeat, rumour| {
            if seen.is_none_or(|(v, _)| v < version) && (seen.is_some() || !partial || rumour) {
                candidates.push(peer.clone());
            }
            // Sent apart from the record too, so it gets across even if the record does not fit.
            if seen.is_some_and(|(v, hb)| v.generation == version.generation && heartbeat > hb) {
                heartbeats.push(DigestEntry { peer: peer.clone(), version, heartbeat });
            }
        };
        if partial {
            let rumour = now.since(self.local_changed_at) < rumour_for;
            consider(local_id, of_local, local.record.version, self.heartbeat, rumour);
        }
        let bound = self.bound();
        // One lookup per named peer: observe its heartbeat, decide whether we want its record,
        // and (partial digests) whether they need ours.
        for &(peer, (version, heartbeat)) in &theirs {
            let want = if peer == local_id {
                // A newer record of ours out there is wanted too, to be overtaken.
                version > local.record.version
            } else if let Some(e) = self.peers.get_mut(peer) {
                let claim = Claim { generation: version.generation, heartbeat, direct: peer == from };
                let observed = e.observe(peer, claim, now, bound);
                self.forged_heartbeats += u64::from(observed.forged);
                if let Some(changed) = observed.event {
                    self.out.push_back(MembershipOutput::Event(changed));
                }
                if partial {
                    consider(peer, Some((version, heartbeat)), e.record.record.version, e.heartbeat, false);
                }
                version > e.record.record.version
            } else {
                self.accepts_unknown(peer, version.generation, heartbeat)
            };
            if want && wanted.len() < MAX_UPDATES {
                wanted.push(peer.clone());
            }
        }
        if partial {
            // Only what the digest names, plus our own rumours: O(digest), not O(N).
            let budget = self.digest_budget() / 4;
            let mut rumours = 0;
            for (_, peer) in self.recent.iter().rev().take_while(|(at, _)| now.since(*at) < rumour_for) {
                if rumours >= budget {
                    break;
                }
                if seen(peer).is_none()
                    && let Some(e) = self.peers.get(peer)
                {
                    rumours += 1;
                    consider(peer, None, e.record.record.version, e.heartbeat, true);
                }
            }
            self.fill(from, digest, &seen, &mut candidates);
            candidates.sort();
            candidates.dedup();
        } else {
            for (peer, version, heartbeat) in self.held() {
                consider(peer, seen(peer), version, heartbeat, false);
            }
        }
        let updates = self.select_updates(candidates);
        GossipResponse::Ack { updates, heartbeats, wanted }
    }

    /// Records the sender of a partial digest lacks and could not name. Its window (the entries
    /// after its own) names every record it holds between the window's first and last ids, so
    /// any live record we hold in that range and it did not name anywhere, it lacks: a node
    /// booting into a large mesh, or one that missed a join, gets those in this answer instead of
    /// waiting for a rumour or for someone's window to name them (measured: the last records of
    /// a 300-node cold start took 10 more seconds). If the window wrapped past the end of its
    /// table, it covers from its first id to the end and from the start to its last id.
    /// An old sender (local entry first) is read the same way; at worst a few records it holds
    /// are sent again.
    fn fill(
        &self,
        from: &PeerId,
        digest: &[DigestEntry],
        named: &dyn Fn(&PeerId) -> Option<(RecordVersion, u64)>,
        out: &mut Vec<PeerId>,
    ) {
        let Some(at) = digest.iter().position(|e| e.peer == *from) else { return };
        let window = &digest[at + 1..];
        let (Some(first), Some(last)) = (window.first(), window.last()) else { return };
        let wraps = window.windows(2).any(|w| w[1].peer <= w[0].peer);
        // Unwrapped: [first, last]. Wrapped: [first, end] then [start, last].
        let (head, tail) = if wraps {
            (
                (Bound::Included(&first.peer), Bound::Unbounded),
                Some((Bound::Unbounded, Bound::Included(&last.peer))),
            )
        } else {
            ((Bound::Included(&first.peer), Bound::Included(&last.peer)), None)
        };
        let mut room = MAX_UPDATES;
        for range in std::iter::once(head).chain(tail) {
            for (peer, e) in self.peers.range::<PeerId, _>(range) {
                if room == 0 {
                    return;
                }
                if e.state != PeerState::Dead && *peer != *from && named(peer).is_none() {
                    out.push(peer.clone());
                    room -= 1;
                }
            }
        }
    }

    /// The records of `peers` that fit in one message (random ones when there are too many).
    fn select_updates(&mut self, mut peers: Vec<PeerId>) -> Vec<GossipUpdate> {
        if peers.len() > MAX_UPDATES {
            peers.shuffle(&mut self.rng);
        }
        let (mut updates, mut bytes) = (Vec::new(), 0);
        for peer in peers {
            let update = if peer == self.local.record.peer_id {
                GossipUpdate { record: self.local.clone(), heartbeat: self.heartbeat }
            } else if let Some(e) = self.peers.get(&peer) {
                GossipUpdate { record: e.record.clone(), heartbeat: e.heartbeat }
            } else {
                continue;
            };
            let size = postcard::experimental::serialized_size(&update).unwrap_or(usize::MAX);
            if updates.len() < MAX_UPDATES && size <= MAX_UPDATE_BYTES - bytes {
                bytes += size;
                updates.push(update);
            }
        }
        updates
    }

    fn apply_updates(&mut self, from: &PeerId, updates: Vec<GossipUpdate>, now: Time) {
        // An honest peer never sends more; verifying signatures is the expensive part.
        let mut evicted = false;
        for update in updates.into_iter().take(MAX_UPDATES) {
            evicted |= self.apply_update(from, update, now);
        }
        if evicted {
            // One pass over the roster per message, not one per eviction.
            let peers = &self.peers;
            self.roster.retain(|p| peers.contains_key(p));
        }
    }

    fn worth(&self, peer: &PeerId, e: &Entry) -> Worth {
        let trusted = self.seeds.contains(peer) || self.keyring.trusted(peer);
        Worth::of(trusted, e.useful, e.direct, e.state)
    }

    /// Whether `from` may add one more new identity now (and counts it if so).
    fn introduction_allowed(&mut self, from: &PeerId, now: Time) -> bool {
        let budget = (self.config.max_members / 4).max(MAX_UPDATES);
        if !self.introduced.contains_key(from) && self.introduced.len() >= MAX_INTRODUCERS {
            self.introduced.retain(|_, i| now.since(i.since) < INTRODUCTION_WINDOW);
            if self.introduced.len() >= MAX_INTRODUCERS {
                return false;
            }
        }
        let i = self.introduced.entry(from.clone()).or_insert(Introduced { since: now, count: 0 });
        if now.since(i.since) >= INTRODUCTION_WINDOW {
            *i = Introduced { since: now, count: 0 };
        }
        if i.count >= budget {
            return false;
        }
        i.count += 1;
        true
    }

    /// A member worth less than `newcomer` to drop for it, if the table is full; `Ok(None)`: there
    /// is room. `Err(())`: full of members worth as much or more.
    fn room_for(&mut self, newcomer: Worth) -> Result<Option<PeerId>, ()> {
        if self.peers.len() < self.config.max_members.max(1) {
            return Ok(None);
        }
        if self.victims.is_none() {
            let mut ranked: Vec<(Worth, &PeerId)> =
                self.peers.iter().map(|(p, e)| (self.worth(p, e), p)).collect();
            // Only the least worth, as many as one message can use; ties go by peer id.
            let keep = MAX_UPDATES.min(ranked.len());
            if keep < ranked.len() {
                ranked.select_nth_unstable(keep);
                ranked.truncate(keep);
            }
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            self.victims = Some(ranked.into_iter().map(|(_, p)| p.clone()).collect());
        }
        while let Some(peer) = self.victims.as_mut().and_then(|v| v.last().cloned()) {
            let Some(e) = self.peers.get(&peer) else {
                self.victims.as_mut().map(Vec::pop);
                continue;
            };
            if self.worth(&peer, e) < newcomer {
                self.victims.as_mut().map(Vec::pop);
                return Ok(Some(peer));
            }
            // Worth more than this newcomer (or it rose since the scan): keep it for a better one.
            return Err(());
        }
        Err(())
    }

    fn evict(&mut self, peer: &PeerId) {
        if self.peers.remove(peer).is_some() {
            self.unreachable.remove(peer);
            self.bounds.members_evicted += 1;
            self.out.push_back(MembershipOutput::Event(MembershipEvent::Evicted { peer: peer.clone() }));
        }
    }

    /// Returns whether a member was evicted for it.
    fn apply_update(&mut self, from: &PeerId, update: GossipUpdate, now: Time) -> bool {
        let GossipUpdate { record, heartbeat } = update;
        let peer = record.record.peer_id.clone();
        let version = record.record.version;
        if peer == self.local.record.peer_id {
            self.reject(from, RejectReason::ClaimsLocalIdentity);
            // A genuine record of ours newer than our own: we restarted without a higher
            // generation. Move past it, or the mesh would keep preferring the stale one.
            if version > self.local.record.version && record.verify(&*self.keyring) {
                self.overtake(version);
            }
            return false;
        }
        let direct = *from == peer;
        let mut victim = None;
        match self.peers.get(&peer) {
            // Nothing new but perhaps the heartbeat, which is unsigned anyway: skip verifying.
            Some(e) if version <= e.record.record.version => {
                self.observe_heartbeat(from, &peer, version.generation, heartbeat, now);
                return false;
            }
            None if !self.accepts_unknown(&peer, version.generation, heartbeat) => return false,
            None => {
                // Cheap refusals before the signature check, the expensive part.
                let trusted = self.seeds.contains(&peer) || self.keyring.trusted(&peer);
                match self.room_for(Worth::of(trusted, false, direct, PeerState::Alive)) {
                    Ok(v) => victim = v,
                    Err(()) => {
                        self.bounds.members_refused += 1;
                        return false;
                    }
                }
                if !trusted && !direct && !self.introduction_allowed(from, now) {
                    self.bounds.introductions_refused += 1;
                    return false;
                }
            }
            _ => {}
        }
        if !record.verify(&*self.keyring) {
            self.reject(from, RejectReason::BadSignature);
            return false;
        }
        if !self.keyring.admit(&record.record) {
            self.reject(from, RejectReason::NotAdmitted);
            return false;
        }
        let bound = self.bound();
        let Some(entry) = self.peers.get_mut(&peer) else {
            let evicted = victim.is_some();
            if let Some(victim) = victim {
                self.evict(&victim);
            }
            self.tombstones.remove(&peer);
            self.contacts.remove(&peer);
            self.fresh.remove(&peer);
            let joined = record.record.clone();
            let entry = Entry {
                record,
                heartbeat,
                anchor: (heartbeat, now),
                anchor_direct: direct,
                state: PeerState::Alive,
                last_seen: now,
                direct,
                useful: false,
            };
            // Any other live peer falls silent sooner, unless every other peer is long dead.
            self.next_detect = self.next_detect.min(now + self.config.suspect_after);
            self.note_change(&peer, now);
            self.roster.push(peer.clone());
            self.peers.insert(peer, entry);
            self.out.push_back(MembershipOutput::Event(MembershipEvent::Joined { record: joined }));
            return evicted;
        };
        // Heartbeats count from 0 again in a new generation: a restarted node is back.
        let restarted = version.generation > entry.record.record.version.generation;
        if restarted && entry.state != PeerState::Dead {
            // Its previous process died, even if too briefly for the detector to notice: say
            // so, so drivers give up on what that process held (running attempts), then it is
            // alive again below.
            let died =
                MembershipEvent::StateChanged { peer: peer.clone(), from: entry.state, to: PeerState::Dead };
            self.out.push_back(MembershipOutput::Event(died));
            entry.state = PeerState::Dead;
        }
        // A newer record (signed) may still come with a made-up heartbeat from its relay.
        let heartbeat = if restarted || direct || entry.plausible(heartbeat, now, bound) {
            heartbeat
        } else {
            self.forged_heartbeats += 1;
            entry.heartbeat
        };
        if restarted || direct {
            entry.anchor = (heartbeat, now);
            entry.anchor_direct = direct;
        }
        entry.direct |= direct;
        let advanced = restarted || heartbeat > entry.heartbeat;
        // Capacity moves with every task started or ended: rumoured, every change would reach
        // every node, Θ(N) records per node per second under load, crowding joins and restarts
        // out of the digests' rumour share. So a capacity change is rumoured one hop only, by
        // the nodes that got it from its owner (a neighbourhood of O(log N) nodes hears it
        // within a round or two); the rotating windows carry it to the rest. Joins, restarts,
        // draining, addresses and policy are rumoured by everyone, in O(log N) rounds.
        let news = !entry.record.record.differs_only_in_capacity(&record.record) || *from == peer;
        entry.heartbeat = if restarted { heartbeat } else { entry.heartbeat.max(heartbeat) };
        entry.record = record;
        let updated = MembershipEvent::Updated { record: entry.record.record.clone() };
        self.out.push_back(MembershipOutput::Event(updated));
        if news {
            self.note_change(&peer, now);
        }
        if restarted {
            self.unreachable.remove(&peer);
        }
        if advanced {
            self.mark_alive(&peer, now);
        }
        false
    }

    fn overtake(&mut self, seen: RecordVersion) {
        let mut record = self.local.record.clone();
        record.version =
            RecordVersion { generation: seen.generation, version: seen.version.saturating_add(1) };
        // Not the heartbeat that came with it: ours is ours to count, and whoever relayed the
        // record may have made that number up; peers that hear from us directly take ours.
        self.local = Arc::new(SignedRecord::sign(record, &*self.keyring));
    }

    /// Whether a record of a peer we hold nothing of is welcome: always, unless we forgot it
    /// and it shows no sign of life since.
    fn accepts_unknown(&self, peer: &PeerId, generation: u64, heartbeat: u64) -> bool {
        self.tombstones.get(peer).is_none_or(|t| (generation, heartbeat) > (t.generation, t.heartbeat))
    }

    /// A heartbeat seen anywhere: if it moved in the generation we hold, the peer is alive. Our
    /// own is ours to count: a claim of it ahead of ours was made up, and is only counted. A
    /// relayed claim further ahead than its owner could have counted is dropped and counted.
    fn observe_heartbeat(
        &mut self,
        from: &PeerId,
        peer: &PeerId,
        generation: u64,
        heartbeat: u64,
        now: Time,
    ) {
        if *peer == self.local.record.peer_id {
            if generation == self.local.record.version.generation && heartbeat > self.heartbeat {
                self.forged_heartbeats += 1;
            }
            return;
        }
        let bound = self.bound();
        let Some(e) = self.peers.get_mut(peer) else { return };
        let claim = Claim { generation, heartbeat, direct: from == peer };
        let observed = e.observe(peer, claim, now, bound);
        self.forged_heartbeats += u64::from(observed.forged);
        if let Some(changed) = observed.event {
            self.out.push_back(MembershipOutput::Event(changed));
        }
    }

    /// A message straight from `from` proves it is alive and reachable.
    fn heard_from(&mut self, from: &PeerId, now: Time) {
        self.unreachable.remove(from);
        if let Some(e) = self.peers.get_mut(from) {
            e.direct = true;
        }
        self.mark_alive(from, now);
    }

    fn mark_alive(&mut self, peer: &PeerId, now: Time) {
        let Some(e) = self.peers.get_mut(peer) else { return };
        if let Some(changed) = e.alive(peer, now) {
            self.out.push_back(MembershipOutput::Event(changed));
        }
    }

    fn reject(&mut self, from: &PeerId, reason: RejectReason) {
        self.out.push_back(MembershipOutput::Event(MembershipEvent::Rejected { from: from.clone(), reason }));
    }

    /// Gives every silent peer its verdict and forgets the long dead; returns when the next
    /// verdict, forgetting or expiry can fall due, so a large mesh is not scanned every round
    /// for nothing (at 10,000 peers the scan was the largest cost of an idle node). A peer heard
    /// from meanwhile only moves its own deadline later; a new peer or a deaf spell brings the
    /// next scan forward (see their callers).
    fn detect_failures(&mut self, now: Time) -> Time {
        let evidence = self.evidence_window();
        let c = &self.config;
        let (suspect_after, dead_after) = (c.suspect_after + evidence, c.dead_after + evidence);
        let forget_after = dead_after.saturating_add(c.forget_after);
        // Verdicts change below: the eviction order is ranked again when next needed.
        self.victims = None;
        self.introduced.retain(|_, i| now.since(i.since) < INTRODUCTION_WINDOW);
        let mut forgotten = Vec::new();
        let mut next_change: Option<Time> = None;
        let mut due = |at: Time| next_change = Some(next_change.map_or(at, |n| n.min(at)));
        for (peer, e) in &mut self.peers {
            let silent = now.since(e.last_seen);
            let state = if silent >= dead_after {
                PeerState::Dead
            } else if silent >= suspect_after {
                PeerState::Suspect
            } else {
                PeerState::Alive
            };
            if state != e.state {
                let changed = MembershipEvent::StateChanged { peer: peer.clone(), from: e.state, to: state };
                self.out.push_back(MembershipOutput::Event(changed));
                e.state = state;
            }
            if state == PeerState::Dead && silent >= forget_after {
                forgotten.push(peer.clone());
            }
            due(e.last_seen
                + match state {
                    PeerState::Alive => suspect_after,
                    PeerState::Suspect => dead_after,
                    PeerState::Dead => forget_after,
                });
        }
        if !forgotten.is_empty() {
            // Fewer peers shorten the evidence window, and with it everyone's deadline.
            due(now);
        }
        let forgot_any = !forgotten.is_empty();
        for peer in forgotten {
            if let Some(e) = self.peers.remove(&peer) {
                self.unreachable.remove(&peer);
                let generation = e.record.record.version.generation;
                let tombstone =
                    Tombstone { generation, heartbeat: e.heartbeat, expires: now + c.forget_after };
                self.tombstones.insert(peer, tombstone);
            }
        }
        if forgot_any {
            // One pass over the roster, not one per forgotten peer (a long partition forgets
            // thousands at once).
            let peers = &self.peers;
            self.roster.retain(|p| peers.contains_key(p));
        }
        self.tombstones.retain(|_, t| t.expires > now);
        self.unreachable.retain(|_, at| now.since(*at) < c.dead_after);
        self.tombstones.values().for_each(|t| due(t.expires));
        self.unreachable.values().for_each(|&at| due(at + c.dead_after));
        next_change.unwrap_or(now + c.suspect_after)
    }
}

impl Entry {
    /// A heartbeat of `peer` seen anywhere: if it moved in the generation held, it is alive.
    fn observe(&mut self, peer: &PeerId, claim: Claim, now: Time, bound: HeartbeatBound) -> Observed {
        if claim.generation != self.record.record.version.generation {
            return Observed::default();
        }
        if claim.direct {
            // The peer's own word: the truth, even below a value someone else made up.
            self.anchor = (claim.heartbeat, now);
            self.anchor_direct = true;
            let moved = claim.heartbeat != self.heartbeat;
            self.heartbeat = claim.heartbeat;
            return Observed { event: moved.then(|| self.alive(peer, now)).flatten(), forged: false };
        }
        if claim.heartbeat <= self.heartbeat {
            return Observed::default();
        }
        if !self.plausible(claim.heartbeat, now, bound) {
            return Observed { event: None, forged: true };
        }
        self.heartbeat = claim.heartbeat;
        Observed { event: self.alive(peer, now), forged: false }
    }

    /// Whether the peer itself could have counted to `heartbeat` by `now`.
    fn plausible(&self, heartbeat: u64, now: Time, bound: HeartbeatBound) -> bool {
        let (anchor, at) = self.anchor;
        let beats = now.since(at).as_millis() as u64 / bound.interval_ms;
        let slack = if self.anchor_direct { HEARTBEAT_SLACK } else { bound.relayed_slack };
        heartbeat <= anchor.saturating_add(beats).saturating_add(slack)
    }

    /// Proof of life: the change of verdict to report, if any.
    fn alive(&mut self, peer: &PeerId, now: Time) -> Option<MembershipEvent> {
        self.last_seen = now;
        let from = std::mem::replace(&mut self.state, PeerState::Alive);
        (from != PeerState::Alive).then(|| MembershipEvent::StateChanged {
            peer: peer.clone(),
            from,
            to: PeerState::Alive,
        })
    }

    fn info(&self) -> PeerInfo {
        PeerInfo {
            record: self.record.record.clone(),
            state: self.state,
            last_seen: self.last_seen,
            heartbeat: self.heartbeat,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ids::Org;
    use crate::record::{AcceptPolicy, Capacity, InsecureTestKeyring};
    use crate::wire::{self, limits};

    const STEP: Duration = Duration::from_millis(50);
    type Node = Membership<ChaCha8Rng>;
    type Ack = (Vec<GossipUpdate>, Vec<DigestEntry>, Vec<PeerId>);
    type Contact = fn(usize) -> usize;

    fn peer_id(i: usize) -> PeerId {
        // Decimal digits spelled as the letters a-j: base58 has no '0'.
        let tag: String = format!("{i:04}").bytes().map(|d| char::from(b'a' + (d - b'0'))).collect();
        PeerId::new(format!("12D3KooWnode{tag}")).unwrap()
    }

    fn record(peer: &PeerId, generation: u64) -> NodeRecord {
        NodeRecord {
            peer_id: peer.clone(),
            org: Org::new("acme").unwrap(),
            name: format!("node-{}", peer.short()),
            addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
            labels: BTreeMap::new(),
            capacity: Capacity { cpu_millis: 4000, slots: 4, free_slots: 4, ..Capacity::default() },
            accepts: AcceptPolicy::AnyOrg,
            draining: false,
            isolation: Default::default(),
            software: "test".into(),
            version: RecordVersion { generation, version: 0 },
        }
    }

    fn update(record: NodeRecord, signer: &PeerId, heartbeat: u64) -> GossipUpdate {
        let keyring = InsecureTestKeyring::new(signer.clone());
        GossipUpdate { record: SignedRecord::sign(record, &keyring).into(), heartbeat }
    }

    fn entry(peer: &PeerId, generation: u64, version: u64, heartbeat: u64) -> DigestEntry {
        DigestEntry { peer: peer.clone(), version: RecordVersion { generation, version }, heartbeat }
    }

    fn node(peer: &PeerId, generation: u64, seed: u64, config: MembershipConfig) -> Node {
        let (keyring, rng) =
            (Box::new(InsecureTestKeyring::new(peer.clone())), ChaCha8Rng::seed_from_u64(seed));
        Membership::new(record(peer, generation), keyring, config, rng, Time::ZERO)
    }

    /// One digest as a round's first target gets it.
    fn digest_at(m: &mut Node, now: Time) -> Vec<DigestEntry> {
        let rumours = m.rumours(now);
        m.digest(&rumours)
    }

    fn drain(m: &mut Node) -> Vec<MembershipOutput> {
        std::iter::from_fn(|| m.poll_output()).collect()
    }

    fn push(m: &mut Node, from: &PeerId, updates: Vec<GossipUpdate>) -> Vec<MembershipOutput> {
        assert_eq!(m.handle_request(from, GossipRequest::Push { updates }, Time(1)), GossipResponse::Done);
        drain(m)
    }

    fn syn(m: &mut Node, from: &PeerId, digest: Vec<DigestEntry>) -> Ack {
        match m.handle_request(from, GossipRequest::Syn { digest }, Time(1)) {
            GossipResponse::Ack { updates, heartbeats, wanted } => (updates, heartbeats, wanted),
            GossipResponse::Done => panic!("Syn must be answered with Ack"),
        }
    }

    enum Msg {
        Request(GossipRequest),
        Response(GossipResponse),
    }

    /// N nodes on a virtual network (after quinn-proto's `Pair`). Every message takes one step,
    /// so information moves one hop per leg as on a real network; a request to or from a
    /// `silent` node fails, and so does its response.
    #[derive(Default)]
    struct Sim {
        ids: Vec<PeerId>,
        index: BTreeMap<PeerId, usize>,
        nodes: Vec<Node>,
        /// (arrival, sender, receiver, message), in arrival order.
        in_flight: VecDeque<(Time, usize, usize, Msg)>,
        events: Vec<Vec<MembershipEvent>>,
        log: Vec<String>,
        silent: BTreeSet<usize>,
        now: Time,
        seed: u64,
    }

    impl Sim {
        /// `n` nodes started together; node `i > 0` is given `contact(i)` as its only contact.
        fn new(n: usize, seed: u64, config: MembershipConfig, contact: Contact) -> Self {
            let ids: Vec<PeerId> = (0..n).map(peer_id).collect();
            let index = ids.iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
            let mut nodes: Vec<Node> =
                (0..n).map(|i| node(&ids[i], 1, seed ^ (i as u64) << 32, config.clone())).collect();
            for (i, m) in nodes.iter_mut().enumerate().skip(1) {
                m.add_contact(ids[contact(i)].clone(), Time::ZERO);
            }
            Sim { ids, index, nodes, events: vec![Vec::new(); n], seed, ..Sim::default() }
        }

        fn step(&mut self) {
            self.now = self.now + STEP;
            while self.in_flight.front().is_some_and(|m| m.0 <= self.now) {
                let Some((_, from, to, msg)) = self.in_flight.pop_front() else { break };
                let (now, cut) = (self.now, self.silent.contains(&from) || self.silent.contains(&to));
                match msg {
                    Msg::Request(_) if cut => self.nodes[from].handle_send_failed(&self.ids[to], now),
                    Msg::Request(request) => {
                        let response = self.nodes[to].handle_request(&self.ids[from], request, now);
                        self.in_flight.push_back((now + STEP, to, from, Msg::Response(response)));
                    }
                    Msg::Response(_) if cut => self.nodes[to].handle_send_failed(&self.ids[from], now),
                    Msg::Response(response) => self.nodes[to].handle_response(&self.ids[from], response, now),
                }
                self.flush();
            }
            for m in &mut self.nodes {
                if m.poll_timeout().is_some_and(|t| t <= self.now) {
                    m.handle_timeout(self.now);
                }
            }
            self.flush();
        }

        fn flush(&mut self) {
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].poll_output() {
                    self.log.push(format!("{} {i} {out:?}", self.now.as_millis()));
                    match out {
                        MembershipOutput::Send { to, request } => match self.index.get(&to) {
                            Some(&j) => {
                                self.in_flight.push_back((self.now + STEP, i, j, Msg::Request(request)))
                            }
                            None => self.nodes[i].handle_send_failed(&to, self.now),
                        },
                        MembershipOutput::Event(e) => self.events[i].push(e),
                    }
                }
            }
        }

        /// Steps until `done`; returns the gossip rounds (default interval) it took.
        fn run_until(&mut self, max_rounds: u64, what: &str, done: impl Fn(&Sim) -> bool) -> u64 {
            let (start, interval) = (self.now, MembershipConfig::default().gossip_interval);
            while !done(self) {
                assert!(
                    self.now.since(start) < interval * max_rounds as u32,
                    "{what}: not within {max_rounds} rounds (seed {})",
                    self.seed
                );
                self.step();
            }
            self.now.since(start).as_millis().div_ceil(interval.as_millis()) as u64
        }

        fn others(&self, of: usize) -> impl Iterator<Item = usize> + use<> {
            (0..self.nodes.len()).filter(move |&i| i != of)
        }

        fn state(&self, observer: usize, peer: usize) -> Option<PeerState> {
            self.nodes[observer].peer(&self.ids[peer]).map(|p| p.state)
        }

        /// Every node holds every other's latest record and thinks it alive.
        fn converged(&self) -> bool {
            (0..self.nodes.len()).all(|i| {
                self.others(i).all(|j| {
                    let p = self.nodes[i].peer(&self.ids[j]);
                    p.is_some_and(|p| p.state == PeerState::Alive && p.record == *self.nodes[j].local())
                })
            })
        }

        fn state_changes(&self, observer: usize, peer: usize) -> Vec<(PeerState, PeerState)> {
            let changes = self.events[observer].iter().filter_map(|e| match e {
                MembershipEvent::StateChanged { peer: p, from, to } if *p == self.ids[peer] => {
                    Some((*from, *to))
                }
                _ => None,
            });
            changes.collect()
        }

        fn clear_events(&mut self) {
            self.events.iter_mut().for_each(Vec::clear);
        }
    }

    #[test]
    fn fifty_nodes_converge_from_one_contact() {
        let topologies: [(&str, Contact); 2] = [("star", |_| 0), ("chain", |i| i - 1)];
        for (name, contact) in topologies {
            let mut rounds = Vec::new();
            for seed in [1, 2, 3, 42, 1234] {
                let mut sim = Sim::new(50, seed, MembershipConfig::default(), contact);
                rounds.push(sim.run_until(20, name, Sim::converged));
                let joined =
                    sim.events.iter().flatten().filter(|e| matches!(e, MembershipEvent::Joined { .. }));
                assert_eq!(joined.count(), 50 * 49, "each node learns each other once");
            }
            eprintln!("50 nodes, {name} bootstrap: converged in {rounds:?} rounds");
        }
    }

    #[test]
    fn capacity_change_reaches_everyone() {
        for seed in [5, 6, 7] {
            let mut sim = Sim::new(50, seed, MembershipConfig::default(), |_| 0);
            sim.run_until(20, "convergence", Sim::converged);
            for _ in 0..2 {
                sim.nodes[17].update_local(|r| r.capacity.free_slots = 1, sim.now);
                assert_eq!(sim.nodes[17].local().version.version, 1, "a change that changes nothing is none");
            }
            let rounds = sim.run_until(10, "capacity spread", |s| {
                s.others(17)
                    .all(|i| s.nodes[i].peer(&s.ids[17]).is_some_and(|p| p.record.capacity.free_slots == 1))
            });
            eprintln!("seed {seed}: capacity change reached 49 nodes in {rounds} rounds");
        }
    }

    #[test]
    fn silent_node_dies_then_returns_and_restarts() {
        let config = MembershipConfig::default();
        let mut sim = Sim::new(30, 11, config.clone(), |_| 0);
        sim.run_until(20, "convergence", Sim::converged);
        sim.clear_events();
        let s = 7;
        let all_see = |state| move |sim: &Sim| sim.others(s).all(|i| sim.state(i, s) == Some(state));
        sim.silent.insert(s);
        let silenced = sim.now;
        sim.run_until(20, "suspect", |sim| sim.others(s).all(|i| sim.state(i, s) != Some(PeerState::Alive)));
        assert!(sim.now.since(silenced) >= config.suspect_after - config.gossip_interval * 3);
        sim.run_until(20, "dead", all_see(PeerState::Dead));
        assert!(sim.now.since(silenced) <= config.dead_after + Duration::from_secs(2));
        for i in sim.others(s) {
            let expected = [(PeerState::Alive, PeerState::Suspect), (PeerState::Suspect, PeerState::Dead)];
            assert_eq!(sim.state_changes(i, s), expected, "node {i}");
            let false_alarm = |e: &&MembershipEvent| matches!(e, MembershipEvent::StateChanged { peer, .. } if *peer != sim.ids[s]);
            assert_eq!(sim.events[i].iter().find(false_alarm), None, "node {i}");
        }

        // The partition heals: same generation, its heartbeat moves again.
        sim.silent.clear();
        sim.clear_events();
        let rounds = sim.run_until(20, "return", Sim::converged);
        eprintln!("silent node back in {rounds} rounds");
        for i in sim.others(s) {
            assert_eq!(sim.state_changes(i, s), [(PeerState::Dead, PeerState::Alive)], "node {i}");
        }

        // It dies for good, and a new process (next generation, heartbeat 0) takes its place.
        sim.silent.insert(s);
        sim.run_until(20, "dead again", all_see(PeerState::Dead));
        sim.nodes[s] = node(&sim.ids[s], 2, 99, config);
        sim.nodes[s].add_contact(sim.ids[0].clone(), sim.now);
        sim.silent.clear();
        sim.clear_events();
        sim.run_until(20, "restart", Sim::converged);
        let (dead, alive) = (PeerState::Dead, PeerState::Alive);
        for i in sim.others(s) {
            // Back; and if the new process spoke to us before its record arrived (node 0, its
            // contact), the old generation is declared dead once the record shows the restart.
            let changes = sim.state_changes(i, s);
            let direct = [(dead, alive), (alive, dead), (dead, alive)];
            assert!(changes == [(dead, alive)] || changes == direct, "node {i}: {changes:?}");
            let updated = |e: &MembershipEvent| matches!(e, MembershipEvent::Updated { record } if record.version.generation == 2);
            assert!(sim.events[i].iter().any(updated), "node {i}");
        }
    }

    #[test]
    fn forgotten_node_stays_forgotten_until_it_shows_life() {
        let config =
            MembershipConfig { forget_after: Duration::from_secs(10), ..MembershipConfig::default() };
        let mut sim = Sim::new(10, 3, config, |_| 0);
        sim.run_until(20, "convergence", Sim::converged);
        let s = 3;
        sim.silent.insert(s);
        sim.run_until(40, "forgotten", |sim| sim.others(s).all(|i| sim.nodes[i].peer(&sim.ids[s]).is_none()));
        sim.clear_events();
        // Records still held by slower nodes must not bring it back (tombstones).
        for _ in 0..100 {
            sim.step();
        }
        assert!(sim.others(s).all(|i| sim.nodes[i].peer(&sim.ids[s]).is_none()));
        assert!(!sim.events.iter().flatten().any(|e| matches!(e, MembershipEvent::Joined { .. })));
        // It forgot everyone too; its seed (node 0) brings it back.
        assert!(sim.nodes[s].peers().is_empty());
        sim.silent.clear();
        sim.run_until(20, "rejoin", Sim::converged);
    }

    #[test]
    fn forged_and_self_claiming_records_are_rejected() {
        let (a, x, y) = (peer_id(0), peer_id(1), peer_id(2));
        let mut m = node(&a, 5, 1, MembershipConfig::default());
        let reject = |reason| MembershipOutput::Event(MembershipEvent::Rejected { from: y.clone(), reason });
        let forged = update(record(&x, 1), &y, 1);
        let mut tampered = update(record(&x, 1), &x, 1);
        Arc::make_mut(&mut tampered.record).record.capacity.free_slots = 99;
        let mut bad_bytes = update(record(&x, 1), &x, 1);
        Arc::make_mut(&mut bad_bytes.record).signature.push(0);
        let bad = reject(RejectReason::BadSignature);
        assert_eq!(push(&mut m, &y, vec![forged, tampered, bad_bytes]), [bad.clone(), bad.clone(), bad]);
        assert!(m.peer(&x).is_none());

        // Records claiming to be us are ignored, forged or stale.
        let before = m.local().clone();
        let mut newer = record(&a, 9);
        newer.name = "impostor".into();
        let claims = reject(RejectReason::ClaimsLocalIdentity);
        let out = push(&mut m, &y, vec![update(newer.clone(), &y, 1), update(record(&a, 1), &a, 1)]);
        assert_eq!(out, [claims.clone(), claims.clone()]);
        assert_eq!(*m.local(), before);

        // A genuine newer one (we restarted with a lower generation): content still ignored, but
        // our version moves past it so that ours wins again.
        assert_eq!(push(&mut m, &y, vec![update(newer, &a, 40)]), [claims]);
        assert_eq!(m.local().version, RecordVersion { generation: 9, version: 1 });
        assert_eq!(m.local().name, before.name);

        let joined = MembershipOutput::Event(MembershipEvent::Joined { record: record(&x, 1) });
        assert_eq!(push(&mut m, &x, vec![update(record(&x, 1), &x, 1)]), [joined]);
    }

    /// A keyring whose trust policy admits only some peers.
    struct Picky {
        inner: InsecureTestKeyring,
        admit: PeerId,
    }

    impl Keyring for Picky {
        fn sign(&self, bytes: &[u8]) -> Vec<u8> {
            self.inner.sign(bytes)
        }
        fn verify(&self, peer: &PeerId, bytes: &[u8], signature: &[u8]) -> bool {
            self.inner.verify(peer, bytes, signature)
        }
        fn admit(&self, record: &NodeRecord) -> bool {
            record.peer_id == self.admit
        }
    }

    #[test]
    fn records_refused_by_trust_policy_are_rejected() {
        let (a, x, y) = (peer_id(0), peer_id(1), peer_id(2));
        let keyring = Picky { inner: InsecureTestKeyring::new(a.clone()), admit: x.clone() };
        let local = record(&a, 1);
        let mut m = Membership::new(
            local,
            Box::new(keyring),
            MembershipConfig::default(),
            ChaCha8Rng::seed_from_u64(5),
            Time(0),
        );
        let not_admitted = MembershipOutput::Event(MembershipEvent::Rejected {
            from: x.clone(),
            reason: RejectReason::NotAdmitted,
        });
        // y's record is genuinely signed, but y is not trusted; x relays it.
        let out = push(&mut m, &x, vec![update(record(&y, 1), &y, 1), update(record(&x, 1), &x, 1)]);
        assert_eq!(out[0], not_admitted);
        assert!(
            matches!(&out[1], MembershipOutput::Event(MembershipEvent::Joined { record }) if record.peer_id == x)
        );
        assert!(m.peer(&y).is_none());
    }

    #[test]
    fn same_seed_same_outputs() {
        let trace = |seed| {
            let mut sim = Sim::new(12, seed, MembershipConfig::default(), |i| i / 2);
            for step in 0..400 {
                if step == 100 {
                    sim.nodes[4].update_local(|r| r.draining = true, sim.now);
                    sim.silent.insert(5);
                }
                sim.step();
            }
            sim.log
        };
        let a = trace(7);
        assert!(a.len() > 1000);
        assert_eq!(a, trace(7));
        assert_ne!(a, trace(8));
    }

    #[test]
    fn garbage_and_edge_inputs_never_panic() {
        let (a, b, z) = (peer_id(0), peer_id(1), peer_id(9));
        let mut m = node(&a, 1, 1, MembershipConfig::default());
        push(&mut m, &b, vec![update(record(&b, 1), &b, 3)]);
        let (updates, heartbeats, wanted) = syn(&mut m, &b, vec![]);
        assert_eq!((updates.len(), heartbeats.len(), wanted.len()), (2, 0, 0), "an empty digest gets all");

        // Duplicates and extreme values.
        let max = u64::MAX;
        let digest = [(&z, max, max, max), (&z, 0, 0, 0), (&b, 1, max, 0), (&a, 1, 0, max), (&a, 1, 0, 5)];
        let (updates, _, wanted) = syn(&mut m, &b, digest.map(|(p, g, v, hb)| entry(p, g, v, hb)).to_vec());
        assert_eq!((updates.len(), wanted), (0, vec![b.clone(), z.clone()]));
        m.handle_timeout(Time(20_000));
        let dead =
            MembershipEvent::StateChanged { peer: b.clone(), from: PeerState::Alive, to: PeerState::Dead };
        assert!(drain(&mut m).contains(&MembershipOutput::Event(dead)));

        // Unsigned records, nonsense heartbeats, duplicate and unknown wants.
        let unsigned = GossipUpdate {
            record: SignedRecord { record: record(&z, 1), signature: vec![] }.into(),
            heartbeat: 1,
        };
        let heartbeats = vec![entry(&z, 3, 3, 3), entry(&a, 0, 0, u64::MAX), entry(&b, 9, 9, 9)];
        let wanted = vec![a.clone(), a.clone(), z.clone(), b.clone(), b.clone()];
        let ack = GossipResponse::Ack { updates: vec![unsigned], heartbeats, wanted };
        m.handle_response(&b, ack, Time(20_000));
        let out = drain(&mut m);
        let [
            MembershipOutput::Event(alive),
            MembershipOutput::Event(rejected),
            MembershipOutput::Send { to, request },
        ] = &out[..]
        else {
            panic!("expected a state change, a rejection and a push: {out:?}")
        };
        assert!(matches!(alive, MembershipEvent::StateChanged { to: PeerState::Alive, .. }));
        assert!(matches!(rejected, MembershipEvent::Rejected { reason: RejectReason::BadSignature, .. }));
        let GossipRequest::Push { updates } = request else { panic!("expected a push: {request:?}") };
        let pushed: Vec<&PeerId> = updates.iter().map(|u| &u.record.record.peer_id).collect();
        assert_eq!((to, pushed), (&b, vec![&a, &b]));

        // Shrugged off.
        m.handle_response(&z, GossipResponse::Done, Time(1));
        let empty = GossipResponse::Ack { updates: vec![], heartbeats: vec![], wanted: vec![] };
        m.handle_response(&z, empty, Time(1));
        assert!(push(&mut m, &z, vec![]).is_empty());
        m.handle_send_failed(&z, Time(1));
        m.handle_send_failed(&a, Time(1));
        let due = m.poll_timeout();
        m.add_contact(a.clone(), Time(1));
        assert_eq!(m.poll_timeout(), due, "the local id is no contact");
        m.handle_timeout(Time(u64::MAX));
        m.handle_timeout(Time(u64::MAX));
        assert!(!m.peers().is_empty(), "a jump to the end of time is deafness, not silence");

        // A degenerate configuration still makes progress.
        let (gossip_interval, suspect_after, dead_after, forget_after) = Default::default();
        let zero = MembershipConfig {
            gossip_interval,
            fanout: 0,
            suspect_after,
            dead_after,
            forget_after,
            max_digest: None,
            max_members: 0,
        };
        let mut m = node(&a, 1, 1, zero);
        m.add_contact(b.clone(), Time(0));
        for t in 0..20 {
            m.handle_timeout(Time(t));
            assert!(m.poll_timeout().is_some_and(|next| next > Time(t)));
            drain(&mut m);
        }
    }

    /// A node holding `n` peers' records, all heard of at `Time(1)`.
    fn node_with_peers(n: usize, config: MembershipConfig) -> (Node, Vec<PeerId>) {
        let a = peer_id(0);
        let mut m = node(&a, 1, 1, config);
        let ids: Vec<PeerId> = (1..=n).map(peer_id).collect();
        for chunk in ids.chunks(200) {
            push(&mut m, &ids[0], chunk.iter().map(|p| update(record(p, 1), p, 1)).collect());
        }
        assert_eq!(m.peers().len(), n);
        (m, ids)
    }

    #[test]
    fn big_meshes_send_bounded_digests_that_rotate_through_everyone() {
        let (mut m, ids) = node_with_peers(600, MembershipConfig::default());
        let budget = m.digest_budget();
        assert_eq!(budget, 99, "max(64, 4·√601)");
        // Just after 600 joins: rumours (newest first) up to half the budget, then the local
        // entry, then the window.
        let d = digest_at(&mut m, Time(1));
        assert_eq!(d.len(), budget);
        assert_eq!(d[0].peer, ids[599], "the newest change first");
        assert_eq!(d[budget / 2].peer, peer_id(0), "the local entry ends the rumours");
        // Once the rumours are old, a window rotates through every record.
        let later = Time(1) + m.rumour_for();
        let mut seen = BTreeSet::new();
        for round in 0..7 {
            let d = digest_at(&mut m, later + STEP * round);
            assert_eq!(d.len(), budget);
            assert_eq!(d[0].peer, peer_id(0), "no rumours: the local entry leads");
            seen.extend(d.into_iter().skip(1).map(|e| e.peer));
        }
        assert_eq!(seen.len(), 600, "every record named within ceil(600 / 98) rounds");
        let size = wire::encode(&GossipRequest::Syn { digest: digest_at(&mut m, later) }, limits::GOSSIP)
            .unwrap()
            .len();
        eprintln!("600 peers: {budget}-entry digest of {size} bytes");

        // Small meshes keep whole digests.
        let (mut small, _) = node_with_peers(40, MembershipConfig::default());
        assert_eq!(digest_at(&mut small, Time(1)).len(), 41);
    }

    /// The Syn digests of the next round, in target order.
    fn round_digests(m: &mut Node, at: Time) -> Vec<Vec<DigestEntry>> {
        m.handle_timeout(at);
        drain(m)
            .into_iter()
            .filter_map(|o| match o {
                MembershipOutput::Send { request: GossipRequest::Syn { digest }, .. } => Some(digest),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_target_of_a_round_gets_its_own_slice_of_the_window() {
        let config = MembershipConfig { fanout: 3, ..MembershipConfig::default() };
        let interval = config.gossip_interval;
        let (mut m, ids) = node_with_peers(600, config);
        let local = peer_id(0);
        let split = |d: &[DigestEntry]| {
            let at = d.iter().position(|e| e.peer == local).expect("the local entry");
            (d[..at].to_vec(), d[at + 1..].iter().map(|e| e.peer.clone()).collect::<Vec<_>>())
        };
        // Just after the joins: every target hears the same rumours, then its own window.
        let digests = round_digests(&mut m, Time(1) + interval);
        assert_eq!(digests.len(), 3);
        let (rumours, _) = split(&digests[0]);
        assert!(!rumours.is_empty());
        let mut windows = Vec::new();
        for d in &digests {
            assert!(d.len() <= m.digest_budget());
            let (r, window) = split(d);
            assert_eq!(r, rumours, "the same rumours to every target");
            windows.push(window);
        }
        // Disjoint and consecutive: each slice starts where the previous one stopped.
        let all: Vec<&PeerId> = windows.iter().flatten().collect();
        let distinct: BTreeSet<&PeerId> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "no peer named in two targets' windows");
        for pair in windows.windows(2) {
            let (last, next) = (pair[0].last().unwrap(), pair[1].first().unwrap());
            let between = ids.iter().filter(|p| last < *p && *p < next).count();
            let rumoured = ids
                .iter()
                .filter(|p| last < *p && *p < next && rumours.iter().any(|r| r.peer == **p))
                .count();
            assert_eq!(between, rumoured, "only rumours (named before) lie between two slices");
        }
        // With old rumours, whole windows: the round names 3 × 98 different peers, so the table
        // is swept in ceil(600 / 294) = 3 rounds, not 7.
        let mut seen = BTreeSet::new();
        let mut at = Time(1) + m.rumour_for();
        for _ in 0..3 {
            at = at + interval;
            for d in round_digests(&mut m, at) {
                seen.extend(split(&d).1);
            }
        }
        assert_eq!(seen.len(), 600, "every record named within 3 rounds");
    }

    #[test]
    fn in_a_big_mesh_capacity_is_not_rumoured_but_membership_news_is() {
        let (mut m, ids) = node_with_peers(600, MembershipConfig::default());
        let later = Time(1) + m.rumour_for();
        let rumours = |m: &mut Node, at: Time| -> Vec<PeerId> {
            digest_at(m, at).into_iter().take_while(|e| e.peer != peer_id(0)).map(|e| e.peer).collect()
        };
        assert!(rumours(&mut m, later).is_empty(), "the joins are old news");
        let mut busier = record(&ids[300], 1);
        busier.version.version = 1;
        busier.capacity.free_slots = 3;
        m.handle_request(
            &ids[5],
            GossipRequest::Push { updates: vec![update(busier.clone(), &ids[300], 2)] },
            later,
        );
        assert_eq!(m.peer(&ids[300]).unwrap().record.capacity.free_slots, 3, "taken all the same");
        assert!(rumours(&mut m, later).is_empty(), "a capacity change is not rumoured");
        // ... unless it came from its owner: one hop of rumour around the owner.
        let mut busiest = busier.clone();
        busiest.version.version = 2;
        busiest.capacity.free_slots = 2;
        let first_hand = GossipRequest::Push { updates: vec![update(busiest, &ids[300], 3)] };
        m.handle_request(&ids[300], first_hand, later);
        assert_eq!(rumours(&mut m, later), vec![ids[300].clone()], "first hand: rumoured");
        let later = later + m.rumour_for();
        assert!(rumours(&mut m, later).is_empty());
        let mut draining = busier;
        draining.version.version = 3;
        draining.draining = true;
        let second_hand = GossipRequest::Push { updates: vec![update(draining, &ids[300], 4)] };
        m.handle_request(&ids[5], second_hand, later);
        assert_eq!(rumours(&mut m, later), vec![ids[300].clone()], "draining is news, whoever tells it");

        // Our own capacity: no early round, and not rumoured to a digest that does not name us;
        // a digest naming an older version of us still gets the new one.
        let before = m.poll_timeout();
        m.update_local(|r| r.capacity.free_slots = 1, later);
        assert_eq!(m.poll_timeout(), before, "no extra round for a capacity change");
        let stranger: Vec<DigestEntry> = ids[..70].iter().map(|p| entry(p, 1, 0, 1)).collect();
        let ack = m.handle_request(&ids[0], GossipRequest::Syn { digest: stranger.clone() }, later);
        let GossipResponse::Ack { updates, .. } = ack else { panic!("{ack:?}") };
        assert!(updates.iter().all(|u| u.record.record.peer_id != peer_id(0)));
        let mut knows_us = stranger;
        knows_us.push(entry(&peer_id(0), 1, 0, 1));
        let ack = m.handle_request(&ids[0], GossipRequest::Syn { digest: knows_us }, later);
        let GossipResponse::Ack { updates, .. } = ack else { panic!("{ack:?}") };
        let ours = updates.iter().find(|u| u.record.record.peer_id == peer_id(0)).expect("our record");
        assert_eq!(ours.record.record.capacity.free_slots, 1);

        // A mesh small enough for whole digests still gossips a capacity change at once.
        let (mut small, _) = node_with_peers(40, MembershipConfig::default());
        small.handle_timeout(Time(1));
        drain(&mut small);
        let at = Time(1) + STEP;
        let before = small.poll_timeout();
        small.update_local(|r| r.capacity.free_slots = 1, at);
        assert!(small.poll_timeout() < before, "{:?} then {:?}", before, small.poll_timeout());
    }

    #[test]
    fn round_targets_in_a_big_table_are_drawn_from_live_reachable_peers() {
        let (mut m, ids) = node_with_peers(600, MembershipConfig::default());
        for p in &ids[..100] {
            m.peers.get_mut(p).unwrap().state = PeerState::Dead;
        }
        for p in &ids[100..200] {
            m.unreachable.insert(p.clone(), Time(1));
        }
        let mut picked: BTreeMap<PeerId, usize> = BTreeMap::new();
        let mut dead_probes = 0;
        for _ in 0..4000 {
            let targets = m.pick_targets();
            let (live, dead) = targets.split_at(2);
            assert!(live[0] != live[1], "{targets:?}");
            assert!(dead.len() <= 1);
            for p in live {
                assert!(!ids[..200].contains(p), "{p:?} is dead or unreachable");
                *picked.entry(p.clone()).or_default() += 1;
            }
            for p in dead {
                assert!(ids[..100].contains(p), "{p:?} probed as dead");
                dead_probes += 1;
            }
        }
        assert_eq!(picked.len(), 400, "every live, reachable peer gets picked");
        let (least, most) = (picked.values().min().unwrap(), picked.values().max().unwrap());
        assert!(*least >= 5 && *most <= 45, "uniform draws: 20 expected each, {least}..{most}");
        assert!((300..500).contains(&dead_probes), "one round in 10 probes a dead peer: {dead_probes}");
        // With every peer unreachable, the walk still finds targets among them.
        for p in &ids[200..] {
            m.unreachable.insert(p.clone(), Time(1));
        }
        assert_eq!(m.pick_targets().len().min(2), 2);
    }

    #[test]
    fn a_partial_digest_is_not_read_as_missing_everything() {
        let (mut m, ids) = node_with_peers(600, MembershipConfig::default());
        let later = Time(1) + m.rumour_for();
        // A partial digest naming 70 of our peers, 10 of them at an older version (0 < 1 is
        // impossible here, so: a generation older).
        let mut digest: Vec<DigestEntry> = ids[..70].iter().map(|p| entry(p, 1, 0, 1)).collect();
        for e in &mut digest[..10] {
            e.version.generation = 0;
        }
        let ack = m.handle_request(&ids[0], GossipRequest::Syn { digest: digest.clone() }, later);
        let GossipResponse::Ack { updates, .. } = ack else { panic!("{ack:?}") };
        let sent: BTreeSet<&PeerId> = updates.iter().map(|u| &u.record.record.peer_id).collect();
        assert!(ids[..10].iter().all(|p| sent.contains(p)), "the named, older records go back");
        assert!(!sent.contains(&ids[300]), "an unnamed record is not assumed missing");
        assert!(updates.len() <= 11, "{} updates", updates.len());

        // Fresh changes are rumoured even to a digest that does not name them.
        m.handle_request(
            &ids[5],
            GossipRequest::Push { updates: vec![update(record(&ids[300], 2), &ids[300], 1)] },
            later,
        );
        let ack = m.handle_request(&ids[0], GossipRequest::Syn { digest }, later + STEP);
        let GossipResponse::Ack { updates, .. } = ack else { panic!("{ack:?}") };
        assert!(updates.iter().any(|u| u.record.record.peer_id == ids[300]));

        // A short (whole) digest still gets everything it lacks, as before.
        let (updates, _, _) = syn(&mut m, &ids[0], vec![entry(&ids[0], 1, 0, 1)]);
        assert_eq!(updates.len(), MAX_UPDATES);
    }

    #[test]
    fn deaf_time_is_not_silence() {
        let (mut m, ids) = node_with_peers(5, MembershipConfig::default());
        let suspected = |m: &mut Node| {
            drain(m)
                .into_iter()
                .any(|o| matches!(o, MembershipOutput::Event(MembershipEvent::StateChanged { .. })))
        };
        for t in [500, 1000] {
            m.handle_timeout(Time(t));
            assert!(!suspected(&mut m));
        }
        // Paused for 19 s: the timer that was due at 1.5 s fires at 20 s. Nobody could be heard
        // meanwhile, so nobody is suspected for it.
        m.handle_timeout(Time(20_000));
        assert!(!suspected(&mut m), "the pause is this node's failure, not its peers'");
        for t in [20_500, 21_000] {
            m.handle_timeout(Time(t));
            assert!(!suspected(&mut m));
        }
        // But silence after the pause counts: suspect 3 s after listening resumed.
        m.handle_timeout(Time(21_500));
        m.handle_timeout(Time(22_000));
        assert!(suspected(&mut m));
        assert!(ids.iter().all(|p| m.peer(p).is_some_and(|i| i.state == PeerState::Suspect)));
    }

    #[test]
    fn verdicts_in_big_meshes_wait_for_enough_evidence() {
        let config = MembershipConfig::default();
        let (mut m, ids) = node_with_peers(600, config.clone());
        // 601 nodes, 49-entry windows, fanout 2: a heartbeat is sighted every ~7 rounds; the
        // verdicts wait four times that on top of the configured thresholds.
        assert_eq!(m.evidence_window(), config.gossip_interval * 28);
        let mut t = Time(1);
        let state = |m: &Node| m.peer(&ids[123]).map(|p| p.state);
        while t < Time(1) + config.suspect_after + config.gossip_interval * 27 {
            t = t + config.gossip_interval;
            m.handle_timeout(t);
            assert_eq!(state(&m), Some(PeerState::Alive), "at {t:?}");
        }
        for _ in 0..2 {
            t = t + config.gossip_interval;
            m.handle_timeout(t);
        }
        assert_eq!(state(&m), Some(PeerState::Suspect));
        drain(&mut m);
    }

    #[test]
    fn a_responder_sends_what_a_partial_digest_window_skipped() {
        // 600 peers each; ours lacks every tenth. A window covers an id range completely, so the
        // responder can tell what it lacks there without a list of everything it holds.
        let (mut full, ids) = node_with_peers(600, MembershipConfig::default());
        let mut sparse = node(&peer_id(9000), 1, 2, MembershipConfig::default());
        let held: Vec<GossipUpdate> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 10 != 3)
            .map(|(_, p)| update(record(p, 1), p, 1))
            .collect();
        for chunk in held.chunks(200) {
            sparse.handle_request(&ids[0], GossipRequest::Push { updates: chunk.to_vec() }, Time(1));
        }
        let later = Time(1) + sparse.rumour_for();
        let digest = digest_at(&mut sparse, later);
        let named: BTreeSet<&PeerId> = digest.iter().map(|e| &e.peer).collect();
        let window = &digest[1..];
        let (lo, hi) = (&window[0].peer, &window[window.len() - 1].peer);
        assert!(lo < hi, "this window does not wrap");
        let skipped: BTreeSet<PeerId> = ids
            .iter()
            .enumerate()
            .filter(|(i, p)| i % 10 == 3 && lo < *p && *p < hi)
            .map(|(_, p)| p.clone())
            .collect();
        assert!(skipped.len() >= 8, "the window spans some of the missing records");
        let response =
            full.handle_request(&peer_id(9000), GossipRequest::Syn { digest: digest.clone() }, later);
        let GossipResponse::Ack { updates, .. } = response else { panic!("Syn must be answered with Ack") };
        let sent: BTreeSet<PeerId> = updates.iter().map(|u| u.record.record.peer_id.clone()).collect();
        assert_eq!(sent, skipped, "exactly the records missing from the window's range");
        assert!(sent.iter().all(|p| !named.contains(p)));

        // Once the window wraps past the end of the table it covers [first, end] and [start, last].
        let (mut t, mut wrapped) = (later, None);
        for _ in 0..20 {
            t = t + STEP;
            let d = digest_at(&mut sparse, t);
            if d[1..].windows(2).any(|w| w[1].peer < w[0].peer) {
                wrapped = Some(d);
                break;
            }
        }
        let digest = wrapped.expect("the window wraps within 20 digests");
        let (lo, hi) = (&digest[1].peer, &digest[digest.len() - 1].peer);
        let skipped: BTreeSet<PeerId> = ids
            .iter()
            .enumerate()
            .filter(|(i, p)| i % 10 == 3 && (*p > lo || *p < hi))
            .map(|(_, p)| p.clone())
            .collect();
        assert!(!skipped.is_empty());
        let response = full.handle_request(&peer_id(9000), GossipRequest::Syn { digest }, t);
        let GossipResponse::Ack { updates, .. } = response else { panic!("Syn must be answered with Ack") };
        let sent: BTreeSet<PeerId> = updates.iter().map(|u| u.record.record.peer_id.clone()).collect();
        assert_eq!(sent, skipped, "both ends of a wrapped window");
    }

    #[test]
    fn failure_detection_waits_for_the_next_verdict_that_can_fall_due() {
        let config =
            MembershipConfig { forget_after: Duration::from_secs(60), ..MembershipConfig::default() };
        let (mut m, ids) = node_with_peers(600, config.clone());
        let t = Time(1) + config.gossip_interval;
        m.handle_timeout(t);
        // Everyone was heard at Time(1): nothing can change before the suspicion threshold, so
        // the 600-peer scan does not run every round meanwhile.
        assert_eq!(m.next_detect, Time(1) + config.suspect_after + m.evidence_window());

        // Everyone falls silent and dies; then a newcomer arrives and falls silent too. Its
        // verdict must come on its own schedule, not at the old peers' forgetting time.
        let mut t = t;
        while m.peer(&ids[0]).map(|p| p.state) != Some(PeerState::Dead) {
            t = t + config.gossip_interval;
            m.handle_timeout(t);
        }
        let late = peer_id(9999);
        let updates = vec![update(record(&late, 1), &late, 1)];
        m.handle_request(&late, GossipRequest::Push { updates }, t);
        let joined = t;
        let threshold = config.suspect_after + m.evidence_window();
        while m.peer(&late).map(|p| p.state) == Some(PeerState::Alive) {
            t = t + config.gossip_interval;
            m.handle_timeout(t);
            assert!(t.since(joined) <= threshold + config.gossip_interval, "suspected late, at {t:?}");
        }
        assert!(t.since(joined) >= threshold, "suspected early, at {t:?}");
        drain(&mut m);
    }

    #[test]
    fn hundred_nodes_converge_with_partial_digests() {
        for seed in [1, 2] {
            let mut sim = Sim::new(100, seed, MembershipConfig::default(), |_| 0);
            let rounds = sim.run_until(40, "convergence", Sim::converged);
            let max = sim.log.iter().filter(|l| l.contains("Syn")).count();
            assert!(max > 0);
            sim.nodes[17].update_local(|r| r.draining = true, sim.now);
            let spread = sim.run_until(20, "rumour", |s| {
                s.others(17).all(|i| s.nodes[i].peer(&s.ids[17]).is_some_and(|p| p.record.draining))
            });
            assert!(spread <= 12, "O(log N) rounds for a rumour, took {spread}");
            // Capacity is not rumoured here (partial digests): the windows carry it.
            sim.nodes[17].update_local(|r| r.capacity.free_slots = 1, sim.now);
            let capacity = sim.run_until(20, "capacity spread", |s| {
                s.others(17)
                    .all(|i| s.nodes[i].peer(&s.ids[17]).is_some_and(|p| p.record.capacity.free_slots == 1))
            });
            eprintln!(
                "seed {seed}: 100 nodes converged in {rounds} rounds; draining spread in {spread}, capacity in {capacity}"
            );
            assert!(capacity <= 16, "a window sweep or two, took {capacity}");
        }
    }

    #[test]
    fn a_quick_restart_is_reported_as_a_death_then_a_return() {
        // Found by the simulator (sim/scenarios/regression-restart-before-dead.toml): a host that
        // crashed and restarted before its peers declared it dead lost its running attempts,
        // and its origins, never seeing `dead`, waited for them forever.
        let (a, x) = (peer_id(0), peer_id(1));
        let mut m = node(&a, 1, 1, MembershipConfig::default());
        push(&mut m, &x, vec![update(record(&x, 1), &x, 5)]);
        let out = push(&mut m, &x, vec![update(record(&x, 2), &x, 0)]);
        let changes: Vec<(PeerState, PeerState)> = out
            .iter()
            .filter_map(|o| match o {
                MembershipOutput::Event(MembershipEvent::StateChanged { from, to, .. }) => Some((*from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(changes, [(PeerState::Alive, PeerState::Dead), (PeerState::Dead, PeerState::Alive)]);
        assert!(out.iter().any(|o| matches!(o, MembershipOutput::Event(MembershipEvent::Updated { record }) if record.version.generation == 2)));
        assert_eq!(m.peer(&x).map(|p| p.state), Some(PeerState::Alive));
        // A newer record of the same generation is no restart.
        let out = push(
            &mut m,
            &x,
            vec![update(
                NodeRecord { version: RecordVersion { generation: 2, version: 1 }, ..record(&x, 2) },
                &x,
                1,
            )],
        );
        assert!(
            !out.iter().any(|o| matches!(o, MembershipOutput::Event(MembershipEvent::StateChanged { .. })))
        );
    }

    #[test]
    fn messages_stay_under_the_wire_limit() {
        let a = peer_id(0);
        let mut m = node(&a, 1, 1, MembershipConfig::default());
        let ids: Vec<PeerId> = (1..=600).map(peer_id).collect();
        for chunk in ids.chunks(200) {
            push(&mut m, &ids[0], chunk.iter().map(|p| update(record(p, 1), p, 1)).collect());
        }
        assert_eq!(m.peers().len(), 600);
        let (updates, heartbeats, wanted) = syn(&mut m, &ids[0], vec![]);
        assert_eq!(updates.len(), MAX_UPDATES, "the rest follows in later rounds");
        assert!(wire::encode(&GossipResponse::Ack { updates, heartbeats, wanted }, limits::GOSSIP).is_ok());
        let (_, _, wanted) =
            syn(&mut m, &ids[0], (1000..2000).map(|i| entry(&peer_id(i), 1, 0, 1)).collect());
        assert_eq!(wanted.len(), MAX_UPDATES);

        // A 10,000-node digest with real-length (52-character) peer ids fits with room to spare.
        let long_id = |i| PeerId::new(format!("12D3KooW{}{}", "x".repeat(28), peer_id(i).as_str())).unwrap();
        let digest = (0..10_000).map(|i| entry(&long_id(i), 1_700_000_000_000, 7, 1 << 20)).collect();
        let size = wire::encode(&GossipRequest::Syn { digest }, limits::GOSSIP).map(|b| b.len());
        assert!(size.as_ref().is_ok_and(|s| *s < limits::GOSSIP / 4), "{size:?}");
    }

    /// A member forges the victim's heartbeat at `u64::MAX` in digests sent to every node, the
    /// victim included, every half second for 30 s: the claims are dropped and counted, the
    /// victim's own counter keeps its own pace, and nobody suspects it.
    #[test]
    fn a_forged_heartbeat_neither_freezes_nor_kills_its_victim() {
        let n = 30;
        let mut sim = Sim::new(n, 11, MembershipConfig::default(), |_| 0);
        sim.run_until(60, "converge", Sim::converged);
        sim.clear_events();
        let (victim, rogue) = (n - 1, peer_id(9_999));
        let forged = |sim: &Sim| {
            let version = sim.nodes[victim].local().version;
            entry(&sim.ids[victim], version.generation, version.version, u64::MAX)
        };
        let before = sim.nodes[victim].heartbeat;
        let steps = (Duration::from_secs(30).as_millis() / STEP.as_millis()) as usize;
        for step in 0..steps {
            if step % 10 == 0 {
                let digest = vec![forged(&sim)];
                for i in 0..n {
                    let now = sim.now;
                    let request = GossipRequest::Syn { digest: digest.clone() };
                    drop(sim.nodes[i].handle_request(&rogue, request, now));
                    // And as a relayed update of the victim's real record.
                    let update =
                        GossipUpdate { record: sim.nodes[victim].local.clone(), heartbeat: u64::MAX };
                    let push = GossipRequest::Push { updates: vec![update] };
                    drop(sim.nodes[i].handle_request(&rogue, push, now));
                }
            }
            sim.step();
        }
        for i in sim.others(victim) {
            assert_eq!(sim.state_changes(i, victim), vec![], "node {i} judged the victim");
            assert_eq!(sim.state(i, victim), Some(PeerState::Alive));
            let held = sim.nodes[i].peer(&sim.ids[victim]).map(|p| p.heartbeat);
            assert!(held.is_some_and(|h| h < u64::MAX / 2), "node {i} took the forged heartbeat: {held:?}");
        }
        let own = sim.nodes[victim].heartbeat;
        assert!(own > before && own < before + 100, "the victim counts at its own pace: {before} -> {own}");
        let dropped: u64 = sim.nodes.iter().map(Node::forged_heartbeats).sum();
        assert!(dropped >= (n as u64) * 50, "every forged claim was counted: {dropped}");
    }

    /// A peer first heard of through a relay may be anchored at a stale heartbeat: past such an
    /// anchor, honest claims up to half the suspicion window ahead are taken (before, anything
    /// over 3 beats ahead was dropped as forged, and peers heard of only through others were
    /// falsely judged dead at scale); past the peer's own word, 3 beats at most, as before. A
    /// forger's claim beyond either is dropped and counted.
    #[test]
    fn a_stale_first_sighting_does_not_mute_a_peers_honest_heartbeats() {
        let (a, p, relay, rogue) = (peer_id(0), peer_id(1), peer_id(2), peer_id(3));
        let config = MembershipConfig {
            suspect_after: Duration::from_secs(10),
            dead_after: Duration::from_secs(20),
            ..MembershipConfig::default()
        };
        // 10 s of 500 ms beats: a window of 20, a relayed slack of 10.
        let mut m = node(&a, 5, 1, config);
        drop(push(&mut m, &relay, vec![update(record(&p, 1), &p, 10)]));
        let held = |m: &Node| m.peer(&p).map(|e| e.heartbeat);
        syn(&mut m, &relay, vec![entry(&p, 1, 1, 20)]);
        assert_eq!(held(&m), Some(20), "an honest claim ahead of a stale relayed anchor");
        syn(&mut m, &rogue, vec![entry(&p, 1, 1, 21)]);
        assert_eq!(held(&m), Some(20), "past the relayed slack");
        syn(&mut m, &rogue, vec![entry(&p, 1, 1, u64::MAX)]);
        assert_eq!(held(&m), Some(20));
        assert_eq!(m.forged_heartbeats(), 2);
        // The peer's own word is the anchor from now on, with the narrow slack.
        syn(&mut m, &p, vec![entry(&p, 1, 1, 100)]);
        syn(&mut m, &rogue, vec![entry(&p, 1, 1, 104)]);
        assert_eq!(held(&m), Some(100), "past the peer's own word by more than 3");
        syn(&mut m, &relay, vec![entry(&p, 1, 1, 103)]);
        assert_eq!(held(&m), Some(103));
        assert_eq!(m.forged_heartbeats(), 3);
    }

    mod bounds;
}
