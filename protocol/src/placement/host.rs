//! The candidate side of placement: this node's capacity ledger. Offers reserve capacity for a
//! TTL; a commit turns a reservation into a running attempt; releases and expiry give it back.
//! Answers are synchronous: the driver sends the returned response on the request's channel.
//!
//! Never: read a clock, run anything, or trust a peer's word beyond what it can only hurt itself
//! with (a peer may release or commit only its own reservations).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ReservationId;
use crate::ids::{Attempt, Org, PeerId, TaskId};
use crate::record::{AcceptPolicy, Capacity, Isolation};
use crate::task::Resources;
use crate::time::Time;
use crate::wire::place::{BidRequest, BidResponse, CommitRequest, CommitResponse, DeclineReason};

/// What this node offers to the mesh.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// GPUs.
    pub gpus: u32,
    /// Concurrent tasks.
    pub slots: u32,
    /// How long an offer's reservation holds without a commit.
    pub reservation_ttl: Duration,
}

/// The shipped default of [`HostConfig::reservation_ttl`]: long enough for a bid round
/// (`PlacementConfig::bid_timeout`) and a commit (`commit_timeout`) to follow an offer.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(3);

/// Capacity held for one offer until it is committed, released or expires.
#[derive(Clone, Debug)]
struct Reservation {
    origin: PeerId,
    task: TaskId,
    attempt: Attempt,
    resources: Resources,
    /// When the first bid made it; repeats refresh it at most `MAX_HOLD` TTLs from here.
    created_at: Time,
    expires_at: Time,
}

/// How many TTLs one reservation may be held by repeating its bid. A repeat is a lost answer or
/// a restarted round, so one refresh is plenty; without a bound one bid every TTL held a slot
/// for ever.
const MAX_HOLD: u32 = 2;

/// Amounts in use, summed wide so a ledger over its totals cannot
/// overflow.
#[derive(Default)]
struct Used {
    slots: u64,
    cpu_millis: u64,
    memory_mb: u64,
    gpus: u64,
}

impl Used {
    fn add(&mut self, r: &Resources) {
        self.slots += 1;
        self.cpu_millis += u64::from(r.cpu_millis);
        self.memory_mb = self.memory_mb.saturating_add(r.memory_mb);
        self.gpus += u64::from(r.gpus);
    }
}

fn left_u32(total: u32, used: u64) -> u32 {
    u32::try_from(u64::from(total).saturating_sub(used)).unwrap_or(0)
}

/// The capacity ledger of one node.
///
/// Inputs: `handle_bid`, `handle_commit`, `handle_release` (each answers synchronously),
/// `finished`, `set_draining`, `set_policy`, `handle_timeout`. Outputs: the
/// answers, `capacity()` for the gossiped record, `running()`, and `poll_timeout()`, the next
/// reservation expiry.
///
/// Each reservation and each running attempt takes one slot plus its resources; free is total
/// minus both. Reservation ids come from a counter that restarts with the process; a commit is
/// checked against origin, task and attempt as well, so a reused id cannot commit someone else's
/// reservation.
///
/// Draining and policy changes apply to bids, not to commits: a live reservation is a promise for
/// its (short) TTL, so its commit is accepted even if the node started draining or changed policy
/// after offering. A draining node still finishes what it runs.
pub struct Host {
    config: HostConfig,
    org: Org,
    labels: BTreeMap<String, String>,
    policy: AcceptPolicy,
    draining: bool,
    /// How tasks run here.
    isolation: Isolation,
    /// Whether tasks from other orgs are taken at all: not while the configured sandbox cannot
    /// be built.
    runs_other_orgs: bool,
    next_reservation: u64,
    reservations: BTreeMap<ReservationId, Reservation>,
    running: BTreeMap<(TaskId, Attempt), (PeerId, Resources)>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("org", &self.org)
            .field("draining", &self.draining)
            .field("reservations", &self.reservations.len())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A ledger for a node of `org` with `labels`, taking work under `policy`.
    pub fn new(config: HostConfig, org: Org, labels: BTreeMap<String, String>, policy: AcceptPolicy) -> Self {
        Self {
            config,
            org,
            labels,
            policy,
            draining: false,
            isolation: Isolation::None,
            runs_other_orgs: true,
            next_reservation: 1,
            reservations: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }

    /// How this node confines tasks, and whether it takes other orgs' tasks at all (a node whose
    /// configured sandbox cannot be built does not).
    pub fn set_isolation(&mut self, isolation: Isolation, runs_other_orgs: bool) {
        self.isolation = isolation;
        self.runs_other_orgs = runs_other_orgs;
    }

    /// Answers a bid: reserves and offers, or declines with a reason. A repeated bid for the same
    /// task and attempt from the same origin returns the same reservation.
    pub fn handle_bid(&mut self, from: &PeerId, request: &BidRequest, now: Time) -> BidResponse {
        self.handle_timeout(now);
        // A repeat of a bid we already hold a reservation for (its answer was lost, or the origin
        // restarted its round). Found up front so a decline below also drops it: after a decline
        // the origin will never commit it.
        let existing = self
            .reservations
            .iter()
            .find(|(_, r)| &r.origin == from && r.task == request.task && r.attempt == request.attempt)
            .map(|(id, _)| *id);

        if let Err(reason) = self.check_bid(from, request) {
            if let Some(id) = existing {
                self.reservations.remove(&id);
            }
            return BidResponse::Decline { reason };
        }

        let expires_at = now + self.config.reservation_ttl;
        if let Some(id) = existing {
            let ttl = self.config.reservation_ttl;
            if let Some(r) = self.reservations.get_mut(&id).filter(|r| r.resources == request.resources) {
                r.expires_at = expires_at.min(r.created_at + ttl.saturating_mul(MAX_HOLD));
                let left = r.expires_at.since(now);
                let score = self.score_with(None);
                return self.offer_for(id, score, left);
            }
            // Same attempt, different resources: the old reservation is stale; judge afresh.
            self.reservations.remove(&id);
        }

        if !self.capacity().fits_now(&request.resources) && !self.make_room(from, &request.resources) {
            return BidResponse::Decline { reason: DeclineReason::Busy };
        }
        let score = self.score_with(Some(&request.resources));
        let id = ReservationId(self.next_reservation);
        self.next_reservation += 1;
        self.reservations.insert(
            id,
            Reservation {
                origin: from.clone(),
                task: request.task,
                attempt: request.attempt,
                resources: request.resources.clone(),
                created_at: now,
                expires_at,
            },
        );
        self.offer(id, score)
    }

    /// The most reservations one origin may hold while another origin finds no room: half the
    /// slots (at least one). Alone, an origin may reserve everything free; but an origin that
    /// bids for everything and commits nothing must not keep every other origin `Busy`.
    fn fair_share(&self) -> usize {
        usize::try_from(self.config.slots.div_ceil(2)).unwrap_or(usize::MAX).max(1)
    }

    /// Makes room for `from`'s bid by dropping the newest reservations of origins holding more
    /// than their fair share (never `from`'s own): more than half the slots, or more than half
    /// the CPU, memory or GPUs (one reservation asking for all the memory blocks as well as many
    /// asking for a slot each). Returns whether the bid fits now. A dropped reservation's commit
    /// is then rejected, and its origin negotiates again.
    ///
    /// Cost: a pass over the reservations per reservation dropped. Every reservation holds a
    /// slot and a bid that does not fit is declined, so there are never more than `slots` of
    /// them, whatever a peer sends: a flood costs each bid O(slots), not O(bids).
    fn make_room(&mut self, from: &PeerId, resources: &Resources) -> bool {
        let fair = self.fair_share();
        let c = &self.config;
        let half = |total: u64| total.div_ceil(2);
        let (cpu, mem, gpus) = (half(u64::from(c.cpu_millis)), half(c.memory_mb), half(u64::from(c.gpus)));
        loop {
            if self.capacity().fits_now(resources) {
                return true;
            }
            let mut held: BTreeMap<&PeerId, (Used, ReservationId)> = BTreeMap::new();
            for (id, r) in &self.reservations {
                if &r.origin != from {
                    let (used, newest) = held.entry(&r.origin).or_insert_with(|| (Used::default(), *id));
                    used.add(&r.resources);
                    *newest = (*newest).max(*id);
                }
            }
            let over =
                |u: &Used| u.slots > fair as u64 || u.cpu_millis > cpu || u.memory_mb > mem || u.gpus > gpus;
            let Some(newest) = held.values().filter(|(u, _)| over(u)).map(|(_, id)| *id).max() else {
                return false;
            };
            self.reservations.remove(&newest);
        }
    }

    /// Answers a commit: only the origin that holds the reservation may commit it, before it
    /// expires. `Accepted` means the driver must now run the attempt. A repeated commit of an
    /// attempt already running is accepted again (the first answer may have been lost).
    pub fn handle_commit(&mut self, from: &PeerId, request: &CommitRequest, now: Time) -> CommitResponse {
        let key = (request.task, request.attempt);
        if let Some((origin, _)) = self.running.get(&key) {
            if origin == from {
                // The retry may carry a reservation of its own (a repeated bid round); free it.
                if self.reservations.get(&request.reservation).is_some_and(|r| &r.origin == from) {
                    self.reservations.remove(&request.reservation);
                }
                return CommitResponse::Accepted;
            }
            return reject("this attempt already runs here for another origin");
        }

        // Looked up before expiring, so an expired reservation is named as such.
        let id = request.reservation;
        let verdict = match self.reservations.get(&id) {
            None => Err(format!("unknown reservation {} (expired or released)", id.0)),
            Some(r) if &r.origin != from => Err(format!("reservation {} belongs to another origin", id.0)),
            Some(r) if r.task != request.task || r.attempt != request.attempt => {
                Err(format!("reservation {} is for another task or attempt", id.0))
            }
            Some(r) if r.expires_at <= now => Err(format!("reservation {} expired", id.0)),
            // The ledger counts what was reserved; running more than that would overcommit.
            Some(r) if r.resources != request.spec.resources => {
                Err(format!("reservation {} was made for other resources than the spec asks", id.0))
            }
            Some(_) => Ok(()),
        };
        self.handle_timeout(now);
        match verdict {
            Ok(()) => match self.reservations.remove(&id) {
                Some(r) => {
                    self.running.insert(key, (r.origin, r.resources));
                    CommitResponse::Accepted
                }
                None => reject("reservation vanished"),
            },
            Err(reason) => CommitResponse::Rejected { reason },
        }
    }

    /// Gives back a reservation (only its origin may).
    pub fn handle_release(&mut self, from: &PeerId, reservation: ReservationId, now: Time) {
        if self.reservations.get(&reservation).is_some_and(|r| &r.origin == from) {
            self.reservations.remove(&reservation);
        }
        self.handle_timeout(now);
    }

    /// An attempt this node ran has ended: its resources are free again. Returns whether it was known.
    pub fn finished(&mut self, task: TaskId, attempt: Attempt) -> bool {
        self.running.remove(&(task, attempt)).is_some()
    }

    /// Takes capacity for an attempt without a bid: tests fill a host with it. A restarted node
    /// does not need it (its attempts died with it and are reported lost).
    #[cfg(test)]
    pub(crate) fn adopt_running(
        &mut self,
        origin: PeerId,
        task: TaskId,
        attempt: Attempt,
        resources: Resources,
    ) {
        self.running.insert((task, attempt), (origin, resources));
    }

    /// What this node has and has left, for its gossiped record.
    pub fn capacity(&self) -> Capacity {
        let mut used = Used::default();
        for r in self.reservations.values() {
            used.add(&r.resources);
        }
        for (_, r) in self.running.values() {
            used.add(r);
        }
        let c = &self.config;
        Capacity {
            cpu_millis: c.cpu_millis,
            cpu_millis_free: left_u32(c.cpu_millis, used.cpu_millis),
            memory_mb: c.memory_mb,
            memory_mb_free: c.memory_mb.saturating_sub(used.memory_mb),
            gpus: c.gpus,
            gpus_free: left_u32(c.gpus, used.gpus),
            slots: c.slots,
            free_slots: left_u32(c.slots, used.slots),
            running_tasks: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
        }
    }

    /// Stops (or resumes) offering: a draining host declines every bid.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Changes the acceptance policy.
    pub fn set_policy(&mut self, policy: AcceptPolicy) {
        self.policy = policy;
    }

    /// Expires reservations whose TTL ran out.
    pub fn handle_timeout(&mut self, now: Time) {
        self.reservations.retain(|_, r| r.expires_at > now);
    }

    /// The earliest reservation expiry.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.reservations.values().map(|r| r.expires_at).min()
    }

    /// Attempts running here, with the origin that owns each.
    pub fn running(&self) -> Vec<(PeerId, TaskId, Attempt)> {
        self.running.iter().map(|((task, attempt), (origin, _))| (origin.clone(), *task, *attempt)).collect()
    }

    /// Why this node would refuse the bid whatever is free, if it would.
    fn check_bid(&self, from: &PeerId, request: &BidRequest) -> Result<(), DeclineReason> {
        if self.draining {
            return Err(DeclineReason::Draining);
        }
        if !self.policy.accepts(&request.origin_org, from) {
            return Err(DeclineReason::Policy);
        }
        if !self.runs_other_orgs && request.origin_org != self.org {
            return Err(DeclineReason::Unfit(
                "this node cannot build its sandbox, so it runs no other org's work; see its /readyz".into(),
            ));
        }
        let c = &request.constraints;
        // Checked here too: the origin's view of this node may be stale, or the origin may lie.
        if let Some(wanted) = c.isolation.filter(|wanted| self.isolation < *wanted) {
            return Err(DeclineReason::Unfit(format!(
                "node gives isolation {}, the task requires {wanted}",
                self.isolation
            )));
        }
        if !c.orgs.is_empty() && !c.orgs.contains(&self.org) {
            return Err(DeclineReason::Unfit(format!("node is in org {}, not a requested one", self.org)));
        }
        if let Some((k, v)) = c.node_labels.iter().find(|(k, v)| self.labels.get(*k) != Some(*v)) {
            return Err(DeclineReason::Unfit(format!("node lacks label {k}={v}")));
        }
        if !self.capacity().fits_ever(&request.resources) {
            let (r, c) = (&request.resources, &self.config);
            return Err(DeclineReason::Unfit(format!(
                "needs cpu_millis={}, memory_mb={}, gpus={}; node has cpu_millis={}, memory_mb={}, gpus={}",
                r.cpu_millis, r.memory_mb, r.gpus, c.cpu_millis, c.memory_mb, c.gpus
            )));
        }
        Ok(())
    }

    /// The idle fraction, in permille, once `extra` is taken too (`None`: as things stand).
    fn score_with(&self, extra: Option<&Resources>) -> u16 {
        let mut c = self.capacity();
        if let Some(r) = extra {
            c.free_slots = c.free_slots.saturating_sub(1);
            c.cpu_millis_free = c.cpu_millis_free.saturating_sub(r.cpu_millis);
            c.memory_mb_free = c.memory_mb_free.saturating_sub(r.memory_mb);
            c.gpus_free = c.gpus_free.saturating_sub(r.gpus);
        }
        // idle_fraction is clamped to [0, 1], so this is at most 1000.
        (c.idle_fraction() * 1000.0).round().clamp(0.0, 1000.0) as u16
    }

    fn offer(&self, reservation: ReservationId, score: u16) -> BidResponse {
        self.offer_for(reservation, score, self.config.reservation_ttl)
    }

    /// An offer that holds for `ttl` from now.
    fn offer_for(&self, reservation: ReservationId, score: u16, ttl: Duration) -> BidResponse {
        let ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        BidResponse::Offer { reservation, ttl_ms, score }
    }
}

fn reject(reason: &str) -> CommitResponse {
    CommitResponse::Rejected { reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Constraints, TaskSpec};

    fn peer(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    fn org(s: &str) -> Org {
        Org::new(s).unwrap()
    }

    fn host(slots: u32) -> Host {
        let config = HostConfig {
            cpu_millis: 4000,
            memory_mb: 8192,
            gpus: 0,
            slots,
            reservation_ttl: Duration::from_millis(5000),
        };
        let labels = BTreeMap::from([("zone".to_owned(), "b".to_owned())]);
        Host::new(config, org("globex"), labels, AcceptPolicy::AnyOrg)
    }

    fn bid(task: u128) -> BidRequest {
        BidRequest {
            task: TaskId::new(1, task),
            attempt: Attempt::FIRST,
            origin_org: org("acme"),
            resources: Resources { cpu_millis: 1000, memory_mb: 1024, gpus: 0 },
            constraints: Constraints::default(),
        }
    }

    fn commit(reservation: ReservationId, bid: &BidRequest) -> CommitRequest {
        let mut spec = TaskSpec::new(vec!["true".into()]);
        spec.resources = bid.resources.clone();
        spec.constraints = bid.constraints.clone();
        CommitRequest {
            reservation,
            task: bid.task,
            attempt: bid.attempt,
            origin_org: bid.origin_org.clone(),
            spec,
        }
    }

    fn offered(resp: BidResponse) -> (ReservationId, u16) {
        match resp {
            BidResponse::Offer { reservation, score, .. } => (reservation, score),
            other => panic!("expected an offer, got {other:?}"),
        }
    }

    fn declined(resp: BidResponse) -> DeclineReason {
        match resp {
            BidResponse::Decline { reason } => reason,
            other => panic!("expected a decline, got {other:?}"),
        }
    }

    /// An origin that bids for every slot and commits nothing holds them only until another
    /// origin needs room: then its reservations past half the slots give way, newest first, and
    /// their commits are refused; it cannot take them back from the other origin.
    #[test]
    fn an_origin_reserving_every_slot_gives_way_to_another_origin() {
        let mut h = host(4);
        let (flooder, honest) = (peer("12D3KooWrogue"), peer("12D3KooWhonest"));
        let held: Vec<ReservationId> =
            (1..=4).map(|n| offered(h.handle_bid(&flooder, &bid(n), Time(0))).0).collect();
        assert_eq!(
            declined(h.handle_bid(&flooder, &bid(5), Time(1))),
            DeclineReason::Busy,
            "alone, it fills the host"
        );
        let (mine, _) = offered(h.handle_bid(&honest, &bid(100), Time(2)));
        let (second, _) = offered(h.handle_bid(&honest, &bid(101), Time(3)));
        assert_eq!(
            declined(h.handle_bid(&honest, &bid(102), Time(4))),
            DeclineReason::Busy,
            "only past the fair share"
        );
        assert_eq!(
            declined(h.handle_bid(&flooder, &bid(6), Time(5))),
            DeclineReason::Busy,
            "nor can it take them back"
        );
        // The flooder's two newest reservations went; its oldest two still hold.
        for (n, id) in held.iter().enumerate() {
            let response = h.handle_commit(&flooder, &commit(*id, &bid(n as u128 + 1)), Time(6));
            assert_eq!(response == CommitResponse::Accepted, n < 2, "reservation {n}: {response:?}");
        }
        assert_eq!(h.handle_commit(&honest, &commit(mine, &bid(100)), Time(7)), CommitResponse::Accepted);
        assert_eq!(h.handle_commit(&honest, &commit(second, &bid(101)), Time(7)), CommitResponse::Accepted);
    }

    #[test]
    fn offer_reserves_and_scores_the_idle_fraction_after_taking_the_task() {
        let mut h = host(4);
        let a = peer("12D3KooWorigin");
        let resp = h.handle_bid(&a, &bid(1), Time(0));
        assert_eq!(resp, BidResponse::Offer { reservation: ReservationId(1), ttl_ms: 5000, score: 792 });
        // slots 3/4, cpu 3000/4000, mem 7168/8192: (0.75 + 0.75 + 0.875) / 3 = 0.7917.
        let c = h.capacity();
        assert_eq!((c.free_slots, c.cpu_millis_free, c.memory_mb_free, c.running_tasks), (3, 3000, 7168, 0));
        assert_eq!(h.poll_timeout(), Some(Time(5000)));
    }

    #[test]
    fn repeated_bid_returns_the_same_reservation_and_refreshes_it() {
        let mut h = host(4);
        let a = peer("12D3KooWorigin");
        let (r1, s1) = offered(h.handle_bid(&a, &bid(1), Time(0)));
        let (r2, s2) = offered(h.handle_bid(&a, &bid(1), Time(1000)));
        assert_eq!((r1, s1), (r2, s2));
        assert_eq!(h.capacity().free_slots, 3, "counted once");
        assert_eq!(h.poll_timeout(), Some(Time(6000)), "expiry refreshed");
        // Another origin bidding for the same task id is a different bid.
        let (r3, _) = offered(h.handle_bid(&peer("12D3KooWother"), &bid(1), Time(1000)));
        assert_ne!(r3, r1);
        assert_eq!(h.capacity().free_slots, 2);
    }

    #[test]
    fn commit_is_idempotent_and_only_for_the_bidder() {
        let mut h = host(4);
        let (a, b) = (peer("12D3KooWorigin"), peer("12D3KooWintruder"));
        let req = bid(1);
        let (r, _) = offered(h.handle_bid(&a, &req, Time(0)));
        let c = commit(r, &req);
        assert!(
            matches!(h.handle_commit(&b, &c, Time(10)), CommitResponse::Rejected { reason } if reason.contains("another origin"))
        );
        assert_eq!(h.handle_commit(&a, &c, Time(10)), CommitResponse::Accepted);
        assert_eq!(h.handle_commit(&a, &c, Time(20)), CommitResponse::Accepted, "lost-answer retry");
        assert!(matches!(h.handle_commit(&b, &c, Time(20)), CommitResponse::Rejected { .. }));
        assert_eq!(h.running(), vec![(a.clone(), req.task, Attempt::FIRST)]);
        let cap = h.capacity();
        assert_eq!((cap.free_slots, cap.running_tasks, cap.cpu_millis_free), (3, 1, 3000));
        assert_eq!(h.poll_timeout(), None);
        assert!(h.finished(req.task, Attempt::FIRST));
        assert!(!h.finished(req.task, Attempt::FIRST));
        assert_eq!(h.capacity().free_slots, 4);
    }

    #[test]
    fn commit_checks_task_attempt_and_resources() {
        let mut h = host(4);
        let a = peer("12D3KooWorigin");
        let req = bid(1);
        let (r, _) = offered(h.handle_bid(&a, &req, Time(0)));
        let mut other_task = commit(r, &req);
        other_task.task = TaskId::new(1, 99);
        assert!(
            matches!(h.handle_commit(&a, &other_task, Time(1)), CommitResponse::Rejected { reason } if reason.contains("another task"))
        );
        let mut bigger = commit(r, &req);
        bigger.spec.resources.cpu_millis = 4000;
        assert!(
            matches!(h.handle_commit(&a, &bigger, Time(1)), CommitResponse::Rejected { reason } if reason.contains("resources"))
        );
        assert!(matches!(
            h.handle_commit(&a, &commit(ReservationId(77), &req), Time(1)),
            CommitResponse::Rejected { reason } if reason.contains("unknown reservation 77")
        ));
        assert_eq!(h.handle_commit(&a, &commit(r, &req), Time(1)), CommitResponse::Accepted);
    }

    #[test]
    fn reservations_expire_and_late_commits_are_rejected() {
        let mut h = host(1);
        let a = peer("12D3KooWorigin");
        let req = bid(1);
        let (r, _) = offered(h.handle_bid(&a, &req, Time(0)));
        assert_eq!(declined(h.handle_bid(&a, &bid(2), Time(10))), DeclineReason::Busy);
        h.handle_timeout(Time(4999));
        assert_eq!(h.capacity().free_slots, 0, "still held before the TTL");
        // A commit at the expiry instant is too late and says so.
        assert!(
            matches!(h.handle_commit(&a, &commit(r, &req), Time(5000)), CommitResponse::Rejected { reason } if reason.contains("expired"))
        );
        assert_eq!(h.capacity().free_slots, 1);
        assert_eq!(h.poll_timeout(), None);

        let (r2, _) = offered(h.handle_bid(&a, &bid(2), Time(6000)));
        assert_eq!(h.poll_timeout(), Some(Time(11_000)));
        h.handle_timeout(Time(11_000));
        assert_eq!(h.capacity().free_slots, 1, "handle_timeout frees an uncommitted offer");
        assert!(matches!(
            h.handle_commit(&a, &commit(r2, &bid(2)), Time(11_001)),
            CommitResponse::Rejected { .. }
        ));
    }

    #[test]
    fn release_only_by_the_owner() {
        let mut h = host(2);
        let (a, b) = (peer("12D3KooWorigin"), peer("12D3KooWintruder"));
        let (r, _) = offered(h.handle_bid(&a, &bid(1), Time(0)));
        h.handle_release(&b, r, Time(1));
        assert_eq!(h.capacity().free_slots, 1);
        h.handle_release(&a, r, Time(2));
        assert_eq!(h.capacity().free_slots, 2);
        h.handle_release(&a, r, Time(3)); // twice is harmless
        assert_eq!(h.capacity().free_slots, 2);
    }

    #[test]
    fn declines_say_why() {
        let mut h = host(1);
        let a = peer("12D3KooWorigin");
        let mut req = bid(1);
        req.constraints.orgs = vec![org("initech")];
        assert!(
            matches!(declined(h.handle_bid(&a, &req, Time(0))), DeclineReason::Unfit(w) if w.contains("globex"))
        );
        req.constraints.orgs = vec![org("globex")];
        req.constraints.node_labels.insert("gpu".into(), "yes".into());
        assert!(
            matches!(declined(h.handle_bid(&a, &req, Time(0))), DeclineReason::Unfit(w) if w.contains("gpu=yes"))
        );
        req.constraints.node_labels = BTreeMap::from([("zone".into(), "b".into())]);
        req.resources.gpus = 1;
        assert!(
            matches!(declined(h.handle_bid(&a, &req, Time(0))), DeclineReason::Unfit(w) if w.contains("gpus=1"))
        );
        req.resources.gpus = 0;
        offered(h.handle_bid(&a, &req, Time(0)));

        h.set_policy(AcceptPolicy::orgs(vec![org("globex")]));
        assert_eq!(declined(h.handle_bid(&a, &bid(2), Time(0))), DeclineReason::Policy);
        h.set_policy(AcceptPolicy::AnyOrg);
        h.set_draining(true);
        assert_eq!(declined(h.handle_bid(&a, &bid(2), Time(0))), DeclineReason::Draining);
        h.set_draining(false);
        assert_eq!(declined(h.handle_bid(&a, &bid(2), Time(0))), DeclineReason::Busy);
    }

    #[test]
    fn draining_declines_bids_but_honours_live_reservations() {
        let mut h = host(2);
        let a = peer("12D3KooWorigin");
        let (req1, req2) = (bid(1), bid(2));
        let (r1, _) = offered(h.handle_bid(&a, &req1, Time(0)));
        offered(h.handle_bid(&a, &req2, Time(0)));
        h.set_draining(true);
        assert_eq!(h.handle_commit(&a, &commit(r1, &req1), Time(10)), CommitResponse::Accepted);
        // A repeated bid is answered as things stand now, and its stale reservation goes.
        assert_eq!(declined(h.handle_bid(&a, &req2, Time(10))), DeclineReason::Draining);
        let c = h.capacity();
        assert_eq!((c.free_slots, c.running_tasks), (1, 1));
    }

    #[test]
    fn adopted_attempts_take_capacity_even_beyond_the_totals() {
        let mut h = host(1);
        let o = peer("12D3KooWorigin");
        let big = Resources { cpu_millis: 3000, memory_mb: 6000, gpus: 0 };
        h.adopt_running(o.clone(), TaskId::new(1, 1), Attempt(2), big.clone());
        h.adopt_running(o.clone(), TaskId::new(1, 2), Attempt(1), big);
        let c = h.capacity();
        assert_eq!((c.free_slots, c.cpu_millis_free, c.memory_mb_free, c.running_tasks), (0, 0, 0, 2));
        assert_eq!(declined(h.handle_bid(&o, &bid(3), Time(0))), DeclineReason::Busy);
        assert_eq!(h.running().len(), 2);
        assert!(h.finished(TaskId::new(1, 1), Attempt(2)));
        assert_eq!(h.capacity().running_tasks, 1);
    }
}
