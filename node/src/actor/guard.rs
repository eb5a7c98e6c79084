//! Per-peer admission control: a token bucket on inbound requests, and strikes for what a
//! well-behaved peer never sends (malformed or oversized frames, records that fail verification,
//! requests beyond the bucket). A peer over the line is banned for a back-off period that doubles
//! at each repeat. Decides only; the event loop disconnects and blocks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use orgmesh_protocol::{PeerId, Time};

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
        }
    }

    fn budget(&mut self, peer: &PeerId, now: Time) -> &mut Budget {
        let burst = self.burst;
        self.budgets.entry(peer.clone()).or_insert(Budget {
            tokens: burst,
            refilled: now,
            strikes: 0,
            window_start: now,
        })
    }

    /// An inbound request from `peer`.
    pub(crate) fn request(&mut self, peer: &PeerId, now: Time) -> Verdict {
        if self.is_banned(peer) {
            return Verdict::Drop;
        }
        let (rate, burst) = (self.rate, self.burst);
        let budget = self.budget(peer, now);
        let elapsed = now.since(budget.refilled).as_secs_f64();
        budget.tokens = (budget.tokens + elapsed * rate).min(burst);
        budget.refilled = now;
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
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
        self.history.insert(peer.clone(), (length * 2).min(MAX_BAN));
        self.bans.insert(peer.clone(), Ban { until: now + length });
        Verdict::Ban(length)
    }

    /// Whether `peer` is banned now.
    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.bans.contains_key(peer)
    }

    /// Ends the bans that ran out; returns the peers to unblock.
    pub(crate) fn expire(&mut self, now: Time) -> Vec<PeerId> {
        let over: Vec<PeerId> =
            self.bans.iter().filter(|(_, b)| b.until <= now).map(|(p, _)| p.clone()).collect();
        for p in &over {
            self.bans.remove(p);
        }
        over
    }

    /// When the next ban runs out.
    pub(crate) fn next_expiry(&self) -> Option<Time> {
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
        let allowed = (0..20).filter(|_| g.request(&p, Time(0)) == Verdict::Allow).count();
        assert_eq!(allowed, 10, "the burst");
        // 100 ms later: 10 more tokens.
        let allowed = (0..20).filter(|_| g.request(&p, Time(100)) == Verdict::Allow).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn a_flood_gets_banned_and_bans_double() {
        let mut g = Guard::new(100, 10, Duration::from_secs(30));
        let p = peer();
        let verdicts: Vec<Verdict> = (0..200).map(|_| g.request(&p, Time(0))).collect();
        assert!(verdicts.contains(&Verdict::Ban(Duration::from_secs(30))), "{verdicts:?}");
        assert!(g.is_banned(&p));
        assert_eq!(g.request(&p, Time(1)), Verdict::Drop);
        assert_eq!(g.expire(Time(29_000)), Vec::<PeerId>::new());
        assert_eq!(g.expire(Time(30_000)), vec![p.clone()]);
        assert!(!g.is_banned(&p));
        let again: Vec<Verdict> = (0..200).map(|_| g.request(&p, Time(40_000))).collect();
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
}
