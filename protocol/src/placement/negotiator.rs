//! The origin side of placement: one negotiation per task attempt in flight.
//! Sans-IO: the driver delivers responses with the task they answer and feeds time in.
//!
//! Never: read a clock, draw unseeded randomness, let map iteration order decide anything, or
//! leave a reservation it will not use held on a host (every unused offer gets a `Release`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::Rng;

use crate::ids::{Attempt, Org, PeerId, ReservationId, TaskId};
use crate::record::{NodeRecord, RecordVersion};
use crate::task::TaskSpec;
use crate::time::Time;
use crate::wire::place::{
    BidRequest, BidResponse, CommitRequest, CommitResponse, DeclineReason, PlaceRequest,
};

/// Tuning of negotiations.
#[derive(Clone, Debug)]
pub struct PlacementConfig {
    /// Candidates asked for a bid at once.
    pub fanout: usize,
    /// How long to wait for bids before deciding with what arrived.
    pub bid_timeout: Duration,
    /// How long to wait for a commit answer before giving up on that host.
    pub commit_timeout: Duration,
    /// How long a host whose attempt never finished (overdue, or its lease expired) stays
    /// suspect: asked last, and chosen only when no other host offers.
    pub suspect_for: Duration,
}

/// The shipped default of [`PlacementConfig::suspect_for`]: long enough that a host capturing
/// work loses most of the origin's placements, short enough that an honest host that crashed
/// once is back in the running within minutes.
pub const DEFAULT_SUSPECT_FOR: Duration = Duration::from_secs(600);

/// The most suspect hosts remembered; past it the one whose suspicion ends first is forgiven
/// early. Identities cost nothing to mint, so the record must not grow with them.
pub const MAX_SUSPECTS: usize = 4096;

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            fanout: 3,
            bid_timeout: Duration::from_millis(1000),
            commit_timeout: Duration::from_millis(2000),
            suspect_for: DEFAULT_SUSPECT_FOR,
        }
    }
}

/// The host an attempt landed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedOn {
    /// The host.
    pub peer: PeerId,
    /// Its org.
    pub org: Org,
    /// Its name.
    pub name: String,
}

/// How a negotiation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementEvent {
    /// The host accepted the commit and runs the attempt.
    Placed {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Where.
        host: PlacedOn,
    },
    /// No known node could ever run it: the task should fail with `reason`.
    Unplaceable {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Why, naming the constraint nobody meets.
        reason: String,
    },
    /// Some node could run it but none can right now: the task waits `pending` and the driver
    /// calls `place` again when capacity frees.
    Waiting {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Why, in words.
        reason: String,
    },
}

/// An output of the negotiator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiatorOutput {
    /// Send `request` to `to` (possibly this node itself), about `task`/`attempt`; feed the answer
    /// to `handle_bid_response` / `handle_commit_response`, or a failure to
    /// `handle_request_failed`. `Release` needs no answer.
    Send {
        /// Destination.
        to: PeerId,
        /// The task the request is about.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// The request.
        request: PlaceRequest,
    },
    /// A negotiation ended.
    Event(PlacementEvent),
}

/// How long a `Busy` answer demotes its host in later rankings, unless a newer record of it
/// arrives first. Capacity reaches big meshes by anti-entropy, seconds late under load; without
/// this, every retry of a waiting task asks the same full hosts first.
pub(super) const BUSY_MEMORY: Duration = Duration::from_secs(5);
/// The `Busy` answers remembered before expired ones are pruned.
pub(super) const BUSY_MEMORY_PRUNE_ABOVE: usize = 1024;
/// The most candidates asked in one bid round.
const MAX_BATCH: usize = 24;
/// How many times a negotiation starts over after a failed commit before it reports `Waiting`.
const MAX_RESTARTS: u32 = 2;
/// The most hosts that look free a negotiation keeps, best first: seven bid rounds (3, 3, 6,
/// 12, 24, 24, 24). A task none of them takes waits and is placed again with a fresh view;
/// keeping every eligible host made each placement cost O(N) allocations.
pub(super) const MAX_KEPT: usize = 96;

/// The origin-side negotiator.
///
/// Inputs: `place`, `abort`, `handle_bid_response`, `handle_commit_response`,
/// `handle_request_failed`, `handle_timeout`. Outputs: `poll_output` until `None` (requests to send
/// and the end of each negotiation, in the order they were decided); `poll_timeout` gives the next
/// bid or commit deadline.
///
/// A negotiation runs in bid rounds: the next `fanout` untried candidates (hosts the view shows
/// with room, in an order drawn per placement) are asked; once all
/// answered (or the bid deadline passed) the best offer gets a `Commit`, every other offer a
/// `Release`. With no offer the next untried are asked, as many as were asked before (the total
/// doubles each round); when none are left it ends `Waiting`
/// (someone was busy, draining or silent) or `Unplaceable` (everyone refused for good).
///
/// A commit that was rejected, failed or timed out starts the negotiation over (at most
/// twice, then `Waiting`). A failed or timed-out commit may still have been
/// accepted by its host: the negotiator sends that host a `Release` (which wins if it lands before
/// the commit), takes a late `Accepted` from it as the placement while it has not committed
/// elsewhere, and otherwise leaves the duplicate to attempt fencing: the host reports for an
/// attempt the origin never recorded as placed there, and the origin cancels it.
pub struct Negotiator<R: Rng> {
    local: PeerId,
    org: Org,
    config: PlacementConfig,
    rng: R,
    negotiations: BTreeMap<TaskId, Negotiation>,
    /// Hosts that declined a bid as `Busy`: the record version they were ranked by, and when.
    busy: BTreeMap<PeerId, (RecordVersion, Time)>,
    /// Hosts whose attempts never finished: strikes, and when the suspicion ends.
    suspects: BTreeMap<PeerId, Suspicion>,
    outputs: VecDeque<NegotiatorOutput>,
}

/// What this origin holds against one host.
#[derive(Clone, Copy, Debug)]
struct Suspicion {
    /// Attempts of this origin's that the host never finished, while suspect.
    strikes: u32,
    /// When the host is forgiven.
    until: Time,
}

/// One candidate that passed every filter, with what its rank is read from.
#[derive(Clone, Debug)]
struct Candidate {
    host: PlacedOn,
    /// Whether its record shows room for the task now; those that do not are only probed.
    looks_free: bool,
    /// Its place in this placement's random order (seeded once per placement, so the order
    /// never depends on how the view is listed).
    draw: u64,
    /// The version of its record the rank was read from.
    version: RecordVersion,
    /// The highest score its offer may count for: what its signed record allows.
    ceiling: u16,
    /// Its attempts for this origin never finished lately: asked last, chosen last.
    suspect: bool,
}

/// How far above its record's free capacity a host's offer may score: records lag the truth by
/// a gossip round or two (a slot freed since), never by more than this share of idleness.
pub(crate) const SCORE_LEAD: u16 = 200;

impl Candidate {
    fn of(
        record: &NodeRecord,
        resources: &crate::task::Resources,
        looks_free: bool,
        key: &RankKey<'_>,
    ) -> Self {
        Candidate {
            host: PlacedOn::of(record),
            looks_free,
            draw: key.draw,
            version: record.version,
            ceiling: score_ceiling(&record.capacity, resources),
            suspect: key.suspect,
        }
    }
}

/// The most an offer from a host whose record shows `capacity` may score for a task needing
/// `resources`: no more idle than its whole capacity leaves once the task is taken, and at most
/// `SCORE_LEAD` above what its record's free capacity leaves. A host scores its own offer (it
/// knows its state best), but a score is a claim: without a ceiling one that always says 1000
/// wins most placements.
pub(crate) fn score_ceiling(capacity: &crate::record::Capacity, resources: &crate::task::Resources) -> u16 {
    let after = |free: bool| {
        let mut c = capacity.clone();
        if free {
            c.free_slots = c.slots;
            c.cpu_millis_free = c.cpu_millis;
            c.memory_mb_free = c.memory_mb;
            c.gpus_free = c.gpus;
        }
        c.free_slots = c.free_slots.saturating_sub(1);
        c.cpu_millis_free = c.cpu_millis_free.saturating_sub(resources.cpu_millis);
        c.memory_mb_free = c.memory_mb_free.saturating_sub(resources.memory_mb);
        c.gpus_free = c.gpus_free.saturating_sub(resources.gpus);
        (c.idle_fraction() * 1000.0).round().clamp(0.0, 1000.0) as u16
    };
    after(true).min(after(false).saturating_add(SCORE_LEAD))
}

/// A host's rank key: suspect hosts last, before them hosts that just said `Busy`, then the
/// placement's random draw; peer id
/// and version make it total, so the order never depends on input order.
///
/// Idleness is deliberately not in it. Hosts the view shows with room are asked in random order
/// and the best offer wins (each host scores its own offer from its true state): the power of
/// `fanout` random choices. Ranked by the view's idleness, every origin holding a similar view
/// bid on the same few hosts, which took one task each and turned the rest away `Busy`;
/// measured in the simulator at 1,000 nodes and 90% load, random order cut the mean wait from
/// 380 to 117 ms and the p99 from 1.46 s to 0.25 s (docs/simulation.md).
#[derive(Clone, Copy, Debug)]
struct RankKey<'a> {
    suspect: bool,
    declined: bool,
    draw: u64,
    peer: &'a PeerId,
    version: RecordVersion,
}

impl RankKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.suspect
            .cmp(&other.suspect)
            .then(self.declined.cmp(&other.declined))
            .then(self.draw.cmp(&other.draw))
            .then_with(|| self.peer.cmp(other.peer))
            .then(other.version.cmp(&self.version))
    }
}

/// `peer`'s place in one placement's random order: its last 8 characters (which differ between ed25519 ids)
/// mixed with `salt` by the SplitMix64 finaliser. Cheap, because it runs for every eligible host.
fn draw(salt: u64, peer: &PeerId) -> u64 {
    let text = peer.as_str().as_bytes();
    let mut tail = [0u8; 8];
    let n = text.len().min(8);
    tail[8 - n..].copy_from_slice(&text[text.len() - n..]);
    let mut z = salt ^ u64::from_le_bytes(tail);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PlacedOn {
    fn of(record: &NodeRecord) -> Self {
        PlacedOn { peer: record.peer_id.clone(), org: record.org.clone(), name: record.name.clone() }
    }
}

/// What a candidate asked in the current round said.
#[derive(Clone, Debug)]
enum Answer {
    Pending,
    Offer { reservation: ReservationId, score: u16, expires_at: Time },
    Declined,
    Failed,
}

#[derive(Clone, Debug)]
struct Asked {
    rank: usize,
    answer: Answer,
}

#[derive(Clone, Debug)]
enum Phase {
    Bidding { deadline: Time, asked: BTreeMap<PeerId, Asked> },
    Committing { deadline: Time, rank: usize, reservation: ReservationId },
}

/// Why a candidate of this start gave no usable offer.
#[derive(Clone, Debug)]
enum Miss {
    Declined(DeclineReason),
    NoAnswer,
    OfferExpired,
}

impl Miss {
    /// Whether asking again later could succeed. Draining counts: a drained node usually comes
    /// back, and a task that waits still fails after its `queue_timeout_s`.
    fn retry_may_help(&self) -> bool {
        match self {
            Miss::Declined(r) => r.is_transient() || *r == DeclineReason::Draining,
            Miss::NoAnswer | Miss::OfferExpired => true,
        }
    }
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Declined(r) => r.fmt(f),
            Miss::NoAnswer => f.write_str("no answer"),
            Miss::OfferExpired => f.write_str("its offer expired before the decision"),
        }
    }
}

#[derive(Clone, Debug)]
struct Negotiation {
    attempt: Attempt,
    spec: TaskSpec,
    /// The best hosts that look free and a few that look full, kept for starting over.
    kept: Vec<Candidate>,
    /// Indices into `kept`, in the order they are asked.
    ranked: Vec<usize>,
    /// The first candidate of `ranked` not asked yet.
    next: usize,
    phase: Phase,
    restarts: u32,
    /// Why candidates of this start gave no usable offer, by rank.
    misses: Vec<(usize, Miss)>,
    /// Hosts whose commit failed or timed out without an answer: they may run the attempt.
    maybe_committed: BTreeSet<PeerId>,
}

impl Negotiation {
    /// The candidate asked `rank`-th.
    fn candidate(&self, rank: usize) -> Option<&Candidate> {
        ranked_at(&self.kept, &self.ranked, rank)
    }

    fn deadline(&self) -> Time {
        match &self.phase {
            Phase::Bidding { deadline, .. } | Phase::Committing { deadline, .. } => *deadline,
        }
    }
}

/// The candidate asked `rank`-th; a function of the two fields, so it can be called while the
/// negotiation's phase is borrowed.
fn ranked_at<'a>(kept: &'a [Candidate], ranked: &[usize], rank: usize) -> Option<&'a Candidate> {
    ranked.get(rank).and_then(|&k| kept.get(k))
}

/// Whether a negotiation goes on after a step.
enum Flow {
    Continue,
    Done,
}

impl<R: Rng> std::fmt::Debug for Negotiator<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiator")
            .field("local", &self.local)
            .field("org", &self.org)
            .field("negotiations", &self.negotiations.len())
            .field("outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

impl<R: Rng> Negotiator<R> {
    /// A negotiator for the node `local` of `org`.
    pub fn new(local: PeerId, org: Org, config: PlacementConfig, rng: R) -> Self {
        Self {
            local,
            org,
            config,
            rng,
            negotiations: BTreeMap::new(),
            busy: BTreeMap::new(),
            suspects: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Starts placing `attempt` of `task`. `candidates` is the current view: alive peers' records
    /// and the local node's own record, each peer once. The view is walked once (twice if no
    /// host could ever run the task) and nothing of it is copied but the hosts kept.
    pub fn place<'a, I>(&mut self, task: TaskId, attempt: Attempt, spec: &TaskSpec, candidates: I, now: Time)
    where
        I: IntoIterator<Item = &'a NodeRecord>,
        I::IntoIter: Clone,
    {
        self.place_avoiding(task, attempt, spec, candidates, &[], now);
    }

    /// `place`, never asking the hosts in `avoid` (those an earlier attempt of this task ran
    /// past its time on): to them the task is as if they did not exist.
    pub fn place_avoiding<'a, I>(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        spec: &TaskSpec,
        candidates: I,
        avoid: &[PeerId],
        now: Time,
    ) where
        I: IntoIterator<Item = &'a NodeRecord>,
        I::IntoIter: Clone,
    {
        if self.negotiations.contains_key(&task) {
            self.abort(task, now);
        }
        if self.busy.len() > BUSY_MEMORY_PRUNE_ABOVE {
            self.busy.retain(|_, &mut (_, at)| now.since(at) < BUSY_MEMORY);
        }
        let candidates = candidates.into_iter();
        let salt = self.rng.random::<u64>();
        let (c, r) = (&spec.constraints, &spec.resources);
        let (mut eligible, mut draining) = (0usize, 0usize);
        let (mut free, mut full) = (Vec::new(), Vec::new());
        for n in candidates.clone() {
            if avoid.contains(&n.peer_id) || !n.may_ever_run(&self.org, &self.local, c, r) {
                continue;
            }
            eligible += 1;
            if n.draining {
                draining += 1;
                continue;
            }
            let key = RankKey {
                suspect: self.is_suspect(&n.peer_id, now),
                declined: self.declined(&n.peer_id, n.version, now),
                draw: draw(salt, &n.peer_id),
                peer: &n.peer_id,
                version: n.version,
            };
            if n.capacity.fits_now(r) {
                free.push((key, n));
            } else if !key.declined {
                // Gossiped capacity is a hint, and in a big mesh a stale one: a node the view
                // shows full may have freed a slot seconds ago. A few of those, drawn at random,
                // are asked last, so a task waits for real capacity, not for gossip.
                full.push((key, n));
            }
        }
        if eligible == 0 {
            let nodes: Vec<&NodeRecord> = candidates.collect();
            let reason = self.unplaceable_reason(&nodes, spec);
            self.emit(PlacementEvent::Unplaceable { task, attempt, reason });
            return;
        }
        let probes = self.config.fanout.max(1);
        let mut kept: Vec<Candidate> = best(&mut free, MAX_KEPT)
            .iter()
            .map(|(k, n)| Candidate::of(n, &spec.resources, true, k))
            .chain(best(&mut full, probes).iter().map(|(k, n)| Candidate::of(n, &spec.resources, false, k)))
            .collect();
        kept.shrink_to_fit();
        let ranked = self.rank(&kept, now);
        if ranked.is_empty() {
            let mut reason = format!("no node with free capacity right now ({eligible} could run it");
            if draining > 0 {
                reason.push_str(&format!(", {draining} of them draining"));
            }
            reason.push(')');
            self.emit(PlacementEvent::Waiting { task, attempt, reason });
            return;
        }
        let mut n = Negotiation {
            attempt,
            spec: spec.clone(),
            kept,
            ranked,
            next: 0,
            phase: Phase::Bidding { deadline: now, asked: BTreeMap::new() },
            restarts: 0,
            misses: Vec::new(),
            maybe_committed: BTreeSet::new(),
        };
        // `ranked` is not empty, so a first round always goes out.
        self.ask_next_batch(task, &mut n, now);
        self.negotiations.insert(task, n);
    }

    /// Abandons a negotiation (task cancelled); held reservations are released.
    ///
    /// A commit already sent may have been accepted; stopping that attempt is the task
    /// protocol's business (cancel by task and attempt), not placement's.
    pub fn abort(&mut self, task: TaskId, now: Time) {
        let _ = now;
        let Some(n) = self.negotiations.remove(&task) else { return };
        match &n.phase {
            Phase::Bidding { asked, .. } => self.release_offers(task, n.attempt, asked),
            Phase::Committing { rank, reservation, .. } => {
                if let Some(c) = n.candidate(*rank) {
                    self.release(c.host.peer.clone(), task, n.attempt, *reservation);
                }
            }
        }
    }

    /// A candidate answered a bid request.
    pub fn handle_bid_response(
        &mut self,
        from: &PeerId,
        task: TaskId,
        attempt: Attempt,
        response: BidResponse,
        now: Time,
    ) {
        let Some(mut n) = self.negotiations.remove(&task) else {
            // Decided or aborted already: an offer would hold capacity until its TTL for nothing.
            self.release_unused(from, task, attempt, &response);
            return;
        };
        if n.attempt != attempt {
            self.release_unused(from, task, attempt, &response);
            self.negotiations.insert(task, n);
            return;
        }
        let mut round_complete = false;
        match &mut n.phase {
            Phase::Bidding { asked, .. } => match asked.get_mut(from) {
                Some(a) if matches!(a.answer, Answer::Pending) => {
                    match response {
                        BidResponse::Offer { reservation, ttl_ms, score } => {
                            // Measured from arrival, so never later than the host's own expiry.
                            let expires_at = now + Duration::from_millis(u64::from(ttl_ms));
                            a.answer = Answer::Offer { reservation, score, expires_at };
                        }
                        BidResponse::Decline { reason } => {
                            a.answer = Answer::Declined;
                            if let (DeclineReason::Busy, Some(c)) =
                                (&reason, ranked_at(&n.kept, &n.ranked, a.rank))
                            {
                                self.busy.insert(from.clone(), (c.version, now));
                            }
                            n.misses.push((a.rank, Miss::Declined(reason)));
                        }
                    }
                    round_complete = asked.values().all(|a| !matches!(a.answer, Answer::Pending));
                }
                Some(Asked { answer: Answer::Offer { reservation: held, .. }, .. }) => {
                    // A duplicate answer: keep the offer held, give back any other one.
                    if !matches!(response, BidResponse::Offer { reservation, .. } if reservation == *held) {
                        self.release_unused(from, task, attempt, &response);
                    }
                }
                _ => self.release_unused(from, task, attempt, &response),
            },
            Phase::Committing { rank, reservation: committed, .. } => {
                let is_host = ranked_at(&n.kept, &n.ranked, *rank).is_some_and(|c| &c.host.peer == from);
                // Never release the reservation being committed because its bid answer repeats.
                let is_committed =
                    matches!(response, BidResponse::Offer { reservation, .. } if reservation == *committed);
                if !(is_host && is_committed) {
                    self.release_unused(from, task, attempt, &response);
                }
            }
        }
        let flow = if round_complete { self.decide(task, &mut n, now) } else { Flow::Continue };
        self.keep(task, n, flow);
    }

    /// The chosen host answered the commit.
    pub fn handle_commit_response(
        &mut self,
        from: &PeerId,
        task: TaskId,
        attempt: Attempt,
        response: CommitResponse,
        now: Time,
    ) {
        let Some(mut n) = self.negotiations.remove(&task) else { return };
        if n.attempt != attempt {
            self.negotiations.insert(task, n);
            return;
        }
        let committing_to = match &n.phase {
            Phase::Committing { rank, .. } => n.candidate(*rank).map(|c| c.host.clone()),
            Phase::Bidding { .. } => None,
        };
        let flow = match (&n.phase, committing_to, response) {
            (_, Some(host), response) if &host.peer == from => match response {
                CommitResponse::Accepted => {
                    self.emit(PlacementEvent::Placed { task, attempt, host });
                    Flow::Done
                }
                CommitResponse::Rejected { reason } => {
                    let why = format!("{} rejected the commit: {reason}", who(&host));
                    self.commit_failed(task, &mut n, why, false, now)
                }
            },
            // A host whose commit we gave up on did take it after all. While no other commit is
            // out, that is the placement: better than running the attempt twice.
            (Phase::Bidding { asked, .. }, _, CommitResponse::Accepted)
                if n.maybe_committed.contains(from) =>
            {
                match n.kept.iter().find(|c| &c.host.peer == from) {
                    Some(c) => {
                        let host = c.host.clone();
                        self.release_offers(task, attempt, asked);
                        self.emit(PlacementEvent::Placed { task, attempt, host });
                        Flow::Done
                    }
                    None => Flow::Continue,
                }
            }
            _ => Flow::Continue,
        };
        self.keep(task, n, flow);
    }

    /// A bid or commit request could not be delivered or answered.
    ///
    /// Failures of `Release` requests must not be reported here: they need no answer, and the
    /// host's TTL frees the reservation anyway.
    pub fn handle_request_failed(&mut self, to: &PeerId, task: TaskId, attempt: Attempt, now: Time) {
        let Some(mut n) = self.negotiations.remove(&task) else { return };
        if n.attempt != attempt {
            self.negotiations.insert(task, n);
            return;
        }
        let flow = match &mut n.phase {
            Phase::Bidding { asked, .. } => match asked.get_mut(to) {
                Some(a) if matches!(a.answer, Answer::Pending) => {
                    a.answer = Answer::Failed;
                    n.misses.push((a.rank, Miss::NoAnswer));
                    if asked.values().all(|a| !matches!(a.answer, Answer::Pending)) {
                        self.decide(task, &mut n, now)
                    } else {
                        Flow::Continue
                    }
                }
                _ => Flow::Continue,
            },
            Phase::Committing { rank, .. } => match ranked_at(&n.kept, &n.ranked, *rank) {
                Some(c) if &c.host.peer == to => {
                    let why = format!("the commit to {} failed", who(&c.host));
                    self.commit_failed(task, &mut n, why, true, now)
                }
                _ => Flow::Continue,
            },
        };
        self.keep(task, n, flow);
    }

    /// Runs what is due (bid and commit timeouts).
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<TaskId> =
            self.negotiations.iter().filter(|(_, n)| n.deadline() <= now).map(|(t, _)| *t).collect();
        for task in due {
            let Some(mut n) = self.negotiations.remove(&task) else { continue };
            let flow = match &n.phase {
                // `decide` counts whoever is still silent as not answering.
                Phase::Bidding { .. } => self.decide(task, &mut n, now),
                Phase::Committing { rank, .. } => {
                    let name = n.candidate(*rank).map(|c| who(&c.host)).unwrap_or_default();
                    let why = format!(
                        "{name} did not answer the commit within {} ms",
                        self.config.commit_timeout.as_millis()
                    );
                    self.commit_failed(task, &mut n, why, true, now)
                }
            };
            self.keep(task, n, flow);
        }
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.negotiations.values().map(Negotiation::deadline).min()
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<NegotiatorOutput> {
        self.outputs.pop_front()
    }

    /// Whether a negotiation for `task` is in flight.
    pub fn is_placing(&self, task: TaskId) -> bool {
        self.negotiations.contains_key(&task)
    }

    /// Puts a negotiation back unless it ended.
    fn keep(&mut self, task: TaskId, n: Negotiation, flow: Flow) {
        if let Flow::Continue = flow {
            self.negotiations.insert(task, n);
        }
    }

    fn emit(&mut self, event: PlacementEvent) {
        self.outputs.push_back(NegotiatorOutput::Event(event));
    }

    fn send(&mut self, to: PeerId, task: TaskId, attempt: Attempt, request: PlaceRequest) {
        self.outputs.push_back(NegotiatorOutput::Send { to, task, attempt, request });
    }

    fn release(&mut self, to: PeerId, task: TaskId, attempt: Attempt, reservation: ReservationId) {
        self.send(to, task, attempt, PlaceRequest::Release { reservation });
    }

    /// Releases `response` if it is an offer this negotiator will not use.
    fn release_unused(&mut self, from: &PeerId, task: TaskId, attempt: Attempt, response: &BidResponse) {
        if let BidResponse::Offer { reservation, .. } = response {
            self.release(from.clone(), task, attempt, *reservation);
        }
    }

    /// Releases every offer held in a bid round, in peer order.
    fn release_offers(&mut self, task: TaskId, attempt: Attempt, asked: &BTreeMap<PeerId, Asked>) {
        for (peer, a) in asked {
            if let Answer::Offer { reservation, .. } = a.answer {
                self.release(peer.clone(), task, attempt, reservation);
            }
        }
    }

    /// How many `Busy` answers are remembered (expired ones included until pruned).
    #[cfg(test)]
    pub(super) fn busy_remembered(&self) -> usize {
        self.busy.len()
    }

    /// `peer` ran one of this origin's attempts past its time (or went silent holding it): it is
    /// suspect for `suspect_for` from now. Returns whether it was not suspect before.
    pub fn suspect(&mut self, peer: &PeerId, now: Time) -> bool {
        if self.config.suspect_for.is_zero() {
            return false;
        }
        let until = now + self.config.suspect_for;
        if let Some(s) = self.suspects.get_mut(peer) {
            let was = s.until > now;
            s.strikes = if was { s.strikes.saturating_add(1) } else { 1 };
            s.until = until;
            return !was;
        }
        if self.suspects.len() >= MAX_SUSPECTS {
            self.suspects.retain(|_, s| s.until > now);
        }
        if self.suspects.len() >= MAX_SUSPECTS {
            // Full of live suspicions: the one that ends first goes. O(n), but only when the
            // table is full, and it is bounded.
            let first = self.suspects.iter().min_by_key(|(p, s)| (s.until, *p)).map(|(p, _)| p.clone());
            if let Some(p) = first {
                self.suspects.remove(&p);
            }
        }
        self.suspects.insert(peer.clone(), Suspicion { strikes: 1, until });
        true
    }

    /// Whether `peer` is suspect now.
    pub fn is_suspect(&self, peer: &PeerId, now: Time) -> bool {
        self.suspects.get(peer).is_some_and(|s| s.until > now)
    }

    /// The strikes held against `peer` while it is suspect (0 once forgiven).
    pub fn strikes(&self, peer: &PeerId, now: Time) -> u32 {
        self.suspects.get(peer).filter(|s| s.until > now).map_or(0, |s| s.strikes)
    }

    /// How many hosts are remembered as suspect (expired ones included until pruned).
    pub fn suspects_remembered(&self) -> usize {
        self.suspects.len()
    }

    /// Whether `peer` declined as `Busy` lately, since the record `version` was published.
    fn declined(&self, peer: &PeerId, version: RecordVersion, now: Time) -> bool {
        self.busy.get(peer).is_some_and(|&(seen, at)| version <= seen && now.since(at) < BUSY_MEMORY)
    }

    /// The kept hosts in the order they are asked: those that look free, in random order, then
    /// the probes of those that look full. Hosts that said `Busy` since the record we hold was
    /// published go after the others that look free (that record is stale, and asking them
    /// first again is a wasted bid round); probes that did are dropped.
    fn rank(&self, kept: &[Candidate], now: Time) -> Vec<usize> {
        let mut ranked: Vec<(bool, RankKey<'_>, usize)> = kept
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let key = RankKey {
                    suspect: c.suspect,
                    declined: self.declined(&c.host.peer, c.version, now),
                    draw: c.draw,
                    peer: &c.host.peer,
                    version: c.version,
                };
                (!c.looks_free, key, k)
            })
            .filter(|(probe, k, _)| !(*probe && k.declined))
            .collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        ranked.into_iter().map(|(_, _, k)| k).collect()
    }

    /// Asks the next untried candidates for a bid: `fanout` at first, then as many as were asked
    /// before (so the number asked doubles each round, up to `MAX_BATCH` a round). A round with
    /// no offer means the view is stale; a negotiation walking a big mesh three hosts per
    /// round trip took seconds. `false` if none are left.
    fn ask_next_batch(&mut self, task: TaskId, n: &mut Negotiation, now: Time) -> bool {
        let size = self.config.fanout.max(1).max(n.next.min(MAX_BATCH));
        let end = n.ranked.len().min(n.next.saturating_add(size));
        if n.next >= end {
            return false;
        }
        let mut asked = BTreeMap::new();
        for rank in n.next..end {
            let Some(peer) = n.candidate(rank).map(|c| c.host.peer.clone()) else { break };
            let request = PlaceRequest::Bid(BidRequest {
                task,
                attempt: n.attempt,
                origin_org: self.org.clone(),
                resources: n.spec.resources.clone(),
                constraints: n.spec.constraints.clone(),
            });
            self.send(peer.clone(), task, n.attempt, request);
            asked.insert(peer, Asked { rank, answer: Answer::Pending });
        }
        n.next = end;
        n.phase = Phase::Bidding { deadline: now + self.config.bid_timeout, asked };
        true
    }

    /// Ends a bid round with what arrived: commit to the best offer, or ask the next batch, or
    /// give up with `Waiting` / `Unplaceable`.
    fn decide(&mut self, task: TaskId, n: &mut Negotiation, now: Time) -> Flow {
        let Phase::Bidding { asked, .. } = &mut n.phase else { return Flow::Continue };
        let mut offers = Vec::new();
        for (peer, a) in asked.iter_mut() {
            match a.answer {
                Answer::Pending => {
                    a.answer = Answer::Failed;
                    n.misses.push((a.rank, Miss::NoAnswer));
                }
                // The host has dropped it already (our clock starts later than its own).
                Answer::Offer { expires_at, .. } if expires_at <= now => {
                    n.misses.push((a.rank, Miss::OfferExpired));
                }
                Answer::Offer { reservation, score, .. } => {
                    // Counted at most at what the host's record allows.
                    let candidate = ranked_at(&n.kept, &n.ranked, a.rank);
                    let ceiling = candidate.map_or(0, |c| c.ceiling);
                    let suspect = candidate.is_some_and(|c| c.suspect);
                    offers.push((a.rank, peer.clone(), reservation, score.min(ceiling), suspect))
                }
                Answer::Declined | Answer::Failed => {}
            }
        }
        // A suspect host wins only when nobody else offers; then the highest score; among equals
        // the better-ranked candidate.
        offers.sort_by(|a, b| a.4.cmp(&b.4).then(b.3.cmp(&a.3)).then(a.0.cmp(&b.0)));
        let mut offers = offers.into_iter();
        if let Some((rank, peer, reservation, _, _)) = offers.next() {
            let request = PlaceRequest::Commit(CommitRequest {
                reservation,
                task,
                attempt: n.attempt,
                origin_org: self.org.clone(),
                spec: n.spec.clone(),
            });
            self.send(peer, task, n.attempt, request);
            let mut losers: Vec<_> = offers.collect();
            losers.sort_by_key(|o| o.0);
            for (_, peer, reservation, _, _) in losers {
                self.release(peer, task, n.attempt, reservation);
            }
            n.phase = Phase::Committing { deadline: now + self.config.commit_timeout, rank, reservation };
            return Flow::Continue;
        }
        if self.ask_next_batch(task, n, now) {
            return Flow::Continue;
        }
        n.misses.sort_by_key(|m| m.0);
        let details: Vec<String> = n
            .misses
            .iter()
            .map(|(rank, miss)| match n.candidate(*rank) {
                Some(c) => format!("{}: {miss}", who(&c.host)),
                None => miss.to_string(),
            })
            .collect();
        let count = n.misses.len();
        let event = if n.misses.iter().any(|(_, m)| m.retry_may_help()) {
            let reason = format!(
                "{count} candidate node{} could run it but none can right now: {}",
                plural(count),
                details.join("; ")
            );
            PlacementEvent::Waiting { task, attempt: n.attempt, reason }
        } else {
            let reason =
                format!("all {count} candidate node{} declined: {}", plural(count), details.join("; "));
            PlacementEvent::Unplaceable { task, attempt: n.attempt, reason }
        };
        self.emit(event);
        Flow::Done
    }

    /// The commit did not take (or may not have): start over, or give up with `Waiting`.
    fn commit_failed(
        &mut self,
        task: TaskId,
        n: &mut Negotiation,
        why: String,
        maybe_taken: bool,
        now: Time,
    ) -> Flow {
        let committed = match n.phase {
            Phase::Committing { rank, reservation, .. } => {
                n.candidate(rank).map(|c| (c.host.peer.clone(), reservation))
            }
            Phase::Bidding { .. } => None,
        };
        if let Some((peer, reservation)) = committed {
            if maybe_taken {
                n.maybe_committed.insert(peer.clone());
            }
            // Frees the reservation if the commit never landed (or lands after this).
            self.release(peer, task, n.attempt, reservation);
        }
        if n.restarts >= MAX_RESTARTS {
            let reason = format!("{why}; gave up after {} commit attempts", n.restarts + 1);
            self.emit(PlacementEvent::Waiting { task, attempt: n.attempt, reason });
            return Flow::Done;
        }
        n.restarts += 1;
        n.ranked = self.rank(&n.kept, now);
        n.next = 0;
        n.misses.clear();
        if self.ask_next_batch(task, n, now) {
            Flow::Continue
        } else {
            self.emit(PlacementEvent::Waiting { task, attempt: n.attempt, reason: why });
            Flow::Done
        }
    }

    /// Why no known node could ever run `spec`, naming the most specific unmet constraint:
    /// orgs first, then labels, then the nodes' policies, then size.
    fn unplaceable_reason(&self, nodes: &[&NodeRecord], spec: &TaskSpec) -> String {
        let c = &spec.constraints;
        if nodes.is_empty() {
            return "no known node to run it on".to_owned();
        }
        let wanted_orgs = join(c.orgs.iter());
        let in_orgs: Vec<&NodeRecord> =
            nodes.iter().copied().filter(|n| c.orgs.is_empty() || c.orgs.contains(&n.org)).collect();
        if in_orgs.is_empty() {
            return format!("no known node is in org(s) {wanted_orgs}");
        }
        let has = |n: &NodeRecord, k: &String, v: &String| n.labels.get(k) == Some(v);
        let labelled: Vec<&NodeRecord> =
            in_orgs.iter().copied().filter(|n| c.node_labels.iter().all(|(k, v)| has(n, k, v))).collect();
        if labelled.is_empty() {
            let scope = if c.orgs.is_empty() { String::new() } else { format!(" in org(s) {wanted_orgs}") };
            let missing: Vec<String> = c
                .node_labels
                .iter()
                .filter(|(k, v)| !in_orgs.iter().any(|n| has(n, k, v)))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let all = join(c.node_labels.iter().map(|(k, v)| format!("{k}={v}")));
            return match missing.len() {
                0 => format!("no known node{scope} has all of the labels {all}"),
                1 => format!("no known node{scope} has label {}", missing.join("")),
                _ => format!("no known node{scope} has labels {}", missing.join(", ")),
            };
        }
        let isolated: Vec<&NodeRecord> = labelled
            .iter()
            .copied()
            .filter(|n| c.isolation.is_none_or(|wanted| n.isolation >= wanted))
            .collect();
        if let (true, Some(wanted)) = (isolated.is_empty(), c.isolation) {
            return format!("the task requires isolation {wanted}, and no known node offers it");
        }
        let accepting: Vec<&NodeRecord> =
            isolated.iter().copied().filter(|n| n.accepts.accepts(&self.org, &self.local)).collect();
        if accepting.is_empty() {
            let orgs: BTreeSet<&Org> = labelled.iter().map(|n| &n.org).collect();
            return format!("no node in org(s) {} accepts tasks from org {}", join(orgs.iter()), self.org);
        }
        let r = &spec.resources;
        format!(
            "no known node is large enough for cpu_millis={}, memory_mb={}, gpus={}",
            r.cpu_millis, r.memory_mb, r.gpus
        )
    }
}

/// The `k` best of `hosts` by rank key, best first: O(len) to select, O(k log k) to sort.
fn best<'a, 'b>(
    hosts: &'b mut Vec<(RankKey<'a>, &'a NodeRecord)>,
    k: usize,
) -> &'b [(RankKey<'a>, &'a NodeRecord)] {
    if hosts.len() > k {
        if k == 0 {
            hosts.clear();
        } else {
            hosts.select_nth_unstable_by(k - 1, |a, b| a.0.cmp(&b.0));
            hosts.truncate(k);
        }
    }
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    hosts
}

/// A candidate as people read it: org and node name.
fn who(host: &PlacedOn) -> String {
    if host.name.is_empty() { host.org.to_string() } else { format!("{} ({})", host.org, host.name) }
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
