//! Per-peer admission control: a token bucket on inbound requests, charged by what a request
//! costs to serve (see `cost`), and strikes for what a well-behaved peer never sends (malformed
//! or oversized frames, records that fail verification, requests beyond the bucket). A peer over
//! the line is banned for a back-off period that doubles at each repeat. Every map is bounded:
//! peer ids cost nothing to mint, so idle entries are dropped first and the longest bans kept.
//! Decides only; the event loop disconnects and blocks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use orgmesh_protocol::engine::Request;
use orgmesh_protocol::wire::gossip::GossipRequest;
use orgmesh_protocol::wire::task::TaskRequest;
use orgmesh_protocol::{PeerId, Time};

/// Peers whose bucket and strikes are tracked at once. A forgotten bucket is a full one, as for
/// any new peer: no worse than the identity a rogue would mint instead.
const MAX_BUDGETS: usize = 4096;
/// Bans held at once; when full, a new ban displaces the shortest one held if that is shorter
/// (a first offence's, typically), so repeat offenders stay banned.
const MAX_BANS: usize = 1024;
/// Repeat offenders whose next ban length is remembered.
const MAX_HISTORY: usize = 4096;

/// What serving `request` costs, in the bucket's units (a small request is 1): the signature
/// checks of a `Push`, the entries of a digest or a renewal, the bytes of a log chunk. An honest
/// peer's requests stay small: a 10,000-node mesh's digests are at most 400 entries (cost 7).
pub(crate) fn cost(request: &Request) -> u32 {
    let units = match request {
        Request::Gossip(GossipRequest::Push { updates }) => updates.len(),
        Request::Gossip(GossipRequest::Syn { digest }) => digest.len() / 64,
        Request::Task(TaskRequest::Renew { attempts }) => attempts.len() / 64,
        Request::Task(TaskRequest::Log { data, .. }) => data.len() / (64 * 1024),
        // One signature check, as for one record of a `Push`.
        Request::Receipt(_) => 1,
        Request::Place(_) | Request::Task(_) => 0,
    };
    u32::try_from(units).unwrap_or(u32::MAX).saturating_add(1)
}

/// Strike points within `WINDOW` that get a peer banned.
const BAN_AT: u32 = 100;
/// Strikes older than this are forgiven.
const WINDOW: Duration = Duration::from_secs(10);
/// The longest ban.
const MAX_BAN: Duration = Duration::from_secs(3600);

/// What to do with a peer's request or offence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serve it.
    Allow,
    /// Drop this request (the peer is over its rate).
    Drop,
    /// Disconnect and ban the peer for this long.
    Ban(Duration),
}

/// How bad an offence is, in strike points.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Offence {
    /// A request beyond the rate limit.
    OverRate = 1,
    /// A gossip record that failed verification or trust policy.
    RejectedRecord = 5,
    /// A frame that did not decode or was over the size limit.
    Malformed = 10,
}

#[derive(Debug)]
struct Budget {
    tokens: f64,
    refilled: Time,
    strikes: u32,
    window_start: Time,
}

#[derive(Debug)]
struct Ban {
    until: Time,
    /// How long it was: the longer, the worse the offender (repeats double it).
    length: Duration,
}

/// The admission state of every peer.
#[derive(Debug)]
pub(crate) struct Guard {
    rate: f64,
    burst: f64,
    first_ban: Duration,
    budgets: HashMap<PeerId, Budget>,
    bans: BTreeMap<PeerId, Ban>,
    /// The length of each peer's next ban; it survives the ban's end, so a repeat offender is
    /// banned longer.
    history: HashMap<PeerId, Duration>,
    /// Peers whose ban was dropped early to make room for a worse offender: to unblock.
    released: Vec<PeerId>,
}

impl Guard {
    /// `rate` requests per second sustained, `burst` at once, first ban `first_ban` long.
    pub(crate) fn new(rate: u32, burst: u32, first_ban: Duration) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            first_ban,
            budgets: HashMap::new(),
            bans: BTreeMap::new(),
            history: HashMap::new(),
            released: Vec::new(),
        }
    }

    fn budget(&mut self, peer: &PeerId, now: Time) -> &mut Budget {
        let burst = self.burst;
        if !self.budgets.contains_key(peer) && self.budgets.len() >= MAX_BUDGETS {
            self.make_room(now);
        }
        self.budgets.entry(peer.clone()).or_insert(Budget {
            tokens: burst,
            refilled: now,
            strikes: 0,
            window_start: now,
        })
    }

    /// Drops the budgets of idle peers (bucket full again, no strikes in the window); if every
    /// one is busy, the least recently refilled. One scan frees many slots.
    fn make_room(&mut self, now: Time) {
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        self.budgets.retain(|_, b| {
            let idle = now.since(b.refilled) >= full_after;
            let forgiven = b.strikes == 0 || now.since(b.window_start) > WINDOW;
            !(idle && forgiven)
        });
        if self.budgets.len() >= MAX_BUDGETS
            && let Some(oldest) = self.budgets.iter().min_by_key(|(_, b)| b.refilled).map(|(p, _)| p.clone())
        {
            self.budgets.remove(&oldest);
        }
    }

    /// An inbound request from `peer` costing `cost` (see [`cost`]).
    pub(crate) fn request(&mut self, peer: &PeerId, cost: u32, now: Time) -> Verdict {
        if self.is_banned(peer) {
            return Verdict::Drop;
        }
        let (rate, burst) = (self.rate, self.burst);
        // A request dearer than the whole bucket could never pass otherwise.
        let cost = f64::from(cost.max(1)).min(burst);
        let budget = self.budget(peer, now);
        let elapsed = now.since(budget.refilled).as_secs_f64();
        budget.tokens = (budget.tokens + elapsed * rate).min(burst);
        budget.refilled = now;
        if budget.tokens >= cost {
            budget.tokens -= cost;
            Verdict::Allow
        } else {
            match self.offence(peer, Offence::OverRate, now) {
                Verdict::Allow => Verdict::Drop,
                other => other,
            }
        }
    }

    /// `peer` did something a well-behaved peer never does.
    pub(crate) fn offence(&mut self, peer: &PeerId, offence: Offence, now: Time) -> Verdict {
        if self.is_banned(peer) {
            return Verdict::Drop;
        }
        let budget = self.budget(peer, now);
        if now.since(budget.window_start) > WINDOW {
            budget.strikes = 0;
            budget.window_start = now;
        }
        budget.strikes = budget.strikes.saturating_add(offence as u32);
        if budget.strikes < BAN_AT {
            return Verdict::Allow;
        }
        self.budgets.remove(peer);
        let length = self.history.get(peer).copied().unwrap_or(self.first_ban);
        self.remember(peer, (length * 2).min(MAX_BAN));
        let until = now + length;
        if self.bans.len() >= MAX_BANS {
            let mildest =
                self.bans.iter().min_by_key(|(_, b)| (b.length, b.until)).map(|(p, b)| (p.clone(), b.length));
            match mildest {
                Some((p, shorter)) if shorter < length => {
                    self.bans.remove(&p);
                    self.released.push(p);
                }
                // Every ban held is as long or longer: this request is dropped, the peer not banned.
                _ => return Verdict::Drop,
            }
        }
        self.bans.insert(peer.clone(), Ban { until, length });
        Verdict::Ban(length)
    }

    /// Records `peer`'s next ban length, dropping first offenders' records when full.
    fn remember(&mut self, peer: &PeerId, next: Duration) {
        if !self.history.contains_key(peer) && self.history.len() >= MAX_HISTORY {
            let first = (self.first_ban * 2).min(MAX_BAN);
            self.history.retain(|_, length| *length > first);
            if self.history.len() >= MAX_HISTORY
                && let Some(mildest) = self.history.iter().min_by_key(|(_, l)| **l).map(|(p, _)| p.clone())
            {
                self.history.remove(&mildest);
            }
        }
        self.history.insert(peer.clone(), next);
    }

    /// Whether `peer` is banned now.
    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.bans.contains_key(peer)
    }

    /// Ends the bans that ran out (or were displaced); returns the peers to unblock.
    pub(crate) fn expire(&mut self, now: Time) -> Vec<PeerId> {
        let mut over: Vec<PeerId> =
            self.bans.iter().filter(|(_, b)| b.until <= now).map(|(p, _)| p.clone()).collect();
        for p in &over {
            self.bans.remove(p);
        }
        over.append(&mut self.released);
        over
    }

    /// When the next ban runs out (at once if one was displaced).
    pub(crate) fn next_expiry(&self) -> Option<Time> {
        if !self.released.is_empty() {
            return Some(Time(0));
        }
        self.bans.values().map(|b| b.until).min()
    }

    /// How many peers are banned now.
    pub(crate) fn banned_count(&self) -> usize {
        self.bans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::new("12D3KooWfxood").unwrap()
    }

    #[test]
    fn bucket_allows_the_rate_and_drops_the_excess() {
        let mut g = Guard::new(100, 10, Duration::from_secs(30));
        let p = peer();
        let allowed = (0..20).filter(|_| g.request(&p, 1, Time(0)) == Verdict::Allow).count();
        assert_eq!(allowed, 10, "the burst");
        // 100 ms later: 10 more tokens.
        let allowed = (0..20).filter(|_| g.request(&p, 1, Time(100)) == Verdict::Allow).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn a_flood_gets_banned_and_bans_double() {
        let mut g = Guard::new(100, 10, Duration::from_secs(30));
        let p = peer();
        let verdicts: Vec<Verdict> = (0..200).map(|_| g.request(&p, 1, Time(0))).collect();
        assert!(verdicts.contains(&Verdict::Ban(Duration::from_secs(30))), "{verdicts:?}");
        assert!(g.is_banned(&p));
        assert_eq!(g.request(&p, 1, Time(1)), Verdict::Drop);
        assert_eq!(g.expire(Time(29_000)), Vec::<PeerId>::new());
        assert_eq!(g.expire(Time(30_000)), vec![p.clone()]);
        assert!(!g.is_banned(&p));
        let again: Vec<Verdict> = (0..200).map(|_| g.request(&p, 1, Time(40_000))).collect();
        assert!(again.contains(&Verdict::Ban(Duration::from_secs(60))), "the second ban is twice as long");
    }

    #[test]
    fn malformed_frames_weigh_more_and_strikes_are_forgiven_over_time() {
        let mut g = Guard::new(100, 10, Duration::from_secs(30));
        let p = peer();
        for i in 0..9 {
            assert_eq!(g.offence(&p, Offence::Malformed, Time(i)), Verdict::Allow);
        }
        // Eleven seconds later the window restarted: nine more are still fine.
        for i in 0..9 {
            assert_eq!(g.offence(&p, Offence::Malformed, Time(11_000 + i)), Verdict::Allow);
        }
        assert!(matches!(g.offence(&p, Offence::Malformed, Time(11_100)), Verdict::Ban(_)));
    }

    fn minted(i: usize) -> PeerId {
        // Digits spelled as letters: base58 has no '0'.
        let tag: String = format!("{i:06}").bytes().map(|d| char::from(b'a' + (d - b'0'))).collect();
        PeerId::new(format!("12D3KooWmint{tag}")).unwrap()
    }

    #[test]
    fn a_request_is_charged_what_it_costs_to_serve() {
        use orgmesh_protocol::wire::gossip::GossipUpdate;
        use orgmesh_protocol::{NodeRecord, SignedRecord};
        let record = NodeRecord {
            peer_id: peer(),
            org: orgmesh_protocol::Org::new("acme").unwrap(),
            name: "n".into(),
            addrs: Vec::new(),
            labels: Default::default(),
            capacity: Default::default(),
            accepts: Default::default(),
            draining: false,
            isolation: Default::default(),
            software: "t".into(),
            version: Default::default(),
        };
        let update = GossipUpdate { record: SignedRecord { record, signature: vec![] }.into(), heartbeat: 0 };
        let push = Request::Gossip(GossipRequest::Push { updates: vec![update; 256] });
        assert_eq!(cost(&push), 257, "one per signature to check, plus the message");
        let renew = Request::Task(TaskRequest::Renew { attempts: Vec::new() });
        assert_eq!(cost(&renew), 1);
        let log = Request::Task(TaskRequest::Log {
            task: orgmesh_protocol::TaskId::new(1, 1),
            attempt: orgmesh_protocol::Attempt(1),
            offset: 0,
            data: vec![0; 256 * 1024],
        });
        assert_eq!(cost(&log), 5);
        // A bucket of 1,000 takes three full pushes, not a thousand.
        let mut g = Guard::new(100, 1_000, Duration::from_secs(30));
        let p = peer();
        let allowed = (0..10).filter(|_| g.request(&p, cost(&push), Time(0)) == Verdict::Allow).count();
        assert_eq!(allowed, 3);
        // A request dearer than the whole bucket still passes once it is full.
        let mut g = Guard::new(1, 10, Duration::from_secs(30));
        assert_eq!(g.request(&p, 257, Time(0)), Verdict::Allow);
    }

    #[test]
    fn a_hundred_thousand_minted_peers_leave_every_map_bounded() {
        let mut g = Guard::new(100, 10, Duration::from_secs(30));
        for i in 0..100_000 {
            let p = minted(i);
            let now = Time(i as u64);
            g.request(&p, 1, now);
            // Every tenth one floods and gets banned.
            if i % 10 == 0 {
                for _ in 0..10 {
                    g.offence(&p, Offence::Malformed, now);
                }
            }
        }
        assert!(g.budgets.len() <= MAX_BUDGETS, "{}", g.budgets.len());
        assert!(g.bans.len() <= MAX_BANS, "{}", g.bans.len());
        assert!(g.history.len() <= MAX_HISTORY, "{}", g.history.len());
    }

    #[test]
    fn a_full_ban_list_keeps_the_worst_offenders() {
        let mut g = Guard::new(100, 10, Duration::from_secs(30));
        let worst = minted(999_999);
        // Banned three times and served them: its next ban is 240 s.
        for round in 0..3u64 {
            let now = Time(round * 1_000_000);
            for _ in 0..10 {
                g.offence(&worst, Offence::Malformed, now);
            }
            g.expire(Time(round * 1_000_000 + 999_000));
        }
        let at = Time(3_000_000);
        for i in 0..5_000 {
            for _ in 0..10 {
                g.offence(&minted(i), Offence::Malformed, at);
            }
        }
        assert_eq!(g.bans.len(), MAX_BANS, "first offenders past the cap are not held");
        let verdicts: Vec<Verdict> = (0..10).map(|_| g.offence(&worst, Offence::Malformed, at)).collect();
        assert!(verdicts.contains(&Verdict::Ban(Duration::from_secs(240))), "{verdicts:?}");
        assert!(g.is_banned(&worst), "a repeat offender displaces a first offence");
        assert_eq!(g.bans.len(), MAX_BANS);
        assert_eq!(g.next_expiry(), Some(Time(0)), "the displaced one is unblocked at once");
        assert_eq!(g.expire(at).len(), 1);
        // More first offenders do not displace the repeat offender's longer ban.
        for i in 5_000..6_000 {
            for _ in 0..10 {
                g.offence(&minted(i), Offence::Malformed, at);
            }
        }
        assert!(g.is_banned(&worst));
    }
}
