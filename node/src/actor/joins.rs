//! Which `peer.joined` events get written: one per peer, for a bounded set of peers, and at most
//! `PER_WINDOW` a minute; past that, one `peer.joined_suppressed {count}` per window says how many
//! were left out. Identities cost nothing to mint, and each join would otherwise be a write and a
//! line in every event stream. Decides only; never writes.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use orgmesh_protocol::{PeerId, Time};

/// `peer.joined` events written per window at most.
pub(crate) const PER_WINDOW: u32 = 120;
/// The window of `PER_WINDOW`.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// What to do with a `Joined` from membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// Write `peer.joined`.
    Write,
    /// Already written for this peer.
    Known,
    /// Over this window's budget: counted for the window's summary.
    Suppressed,
}

/// The peers whose join was written, oldest first, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct Joins {
    cap: usize,
    seen: BTreeSet<PeerId>,
    order: VecDeque<PeerId>,
    window_start: Time,
    written: u32,
    suppressed: u64,
}

impl Joins {
    /// Remembers up to `cap` peers (the membership table's cap: more cannot be members at once).
    pub(crate) fn new(cap: usize, now: Time) -> Self {
        Self {
            cap: cap.max(1),
            seen: BTreeSet::new(),
            order: VecDeque::new(),
            window_start: now,
            written: 0,
            suppressed: 0,
        }
    }

    /// A peer's record was seen for the first time by membership.
    pub(crate) fn joined(&mut self, peer: &PeerId, now: Time) -> Join {
        if self.seen.contains(peer) {
            return Join::Known;
        }
        self.roll(now);
        if self.written >= PER_WINDOW {
            self.suppressed += 1;
            return Join::Suppressed;
        }
        self.written += 1;
        while self.seen.len() >= self.cap {
            let Some(oldest) = self.order.pop_front() else { break };
            self.seen.remove(&oldest);
        }
        self.seen.insert(peer.clone());
        self.order.push_back(peer.clone());
        Join::Write
    }

    /// A peer left the membership table: a later return is a join again.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        if self.seen.remove(peer) {
            self.order.retain(|p| p != peer);
        }
    }

    /// The count of joins suppressed in a window that has ended, once.
    pub(crate) fn summary(&mut self, now: Time) -> Option<u64> {
        if now.since(self.window_start) < WINDOW || self.suppressed == 0 {
            return None;
        }
        let count = std::mem::take(&mut self.suppressed);
        self.roll(now);
        Some(count)
    }

    /// How many peers are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }

    fn roll(&mut self, now: Time) {
        if now.since(self.window_start) >= WINDOW && self.suppressed == 0 {
            self.window_start = now;
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: usize) -> PeerId {
        // Digits spelled as letters: base58 has no '0'.
        let tag: String = format!("{i:06}").bytes().map(|d| char::from(b'a' + (d - b'0'))).collect();
        PeerId::new(format!("12D3KooWjoin{tag}")).unwrap()
    }

    #[test]
    fn a_flood_of_joins_writes_a_bounded_number_then_one_summary() {
        let mut j = Joins::new(500, Time(0));
        let verdicts: Vec<Join> = (0..10_000).map(|i| j.joined(&peer(i), Time(i as u64))).collect();
        let written = verdicts.iter().filter(|v| **v == Join::Write).count();
        assert_eq!(written, PER_WINDOW as usize);
        assert!(j.len() <= 500);
        assert_eq!(j.summary(Time(30_000)), None, "the window is not over");
        assert_eq!(j.summary(Time(60_000)), Some(10_000 - u64::from(PER_WINDOW)));
        assert_eq!(j.summary(Time(60_001)), None, "once");
        assert_eq!(j.joined(&peer(20_000), Time(60_002)), Join::Write, "a new window");
    }

    #[test]
    fn a_peer_joins_once_until_forgotten_and_the_set_stays_within_its_cap() {
        let mut j = Joins::new(3, Time(0));
        assert_eq!(j.joined(&peer(1), Time(0)), Join::Write);
        assert_eq!(j.joined(&peer(1), Time(1)), Join::Known);
        j.forget(&peer(1));
        assert_eq!(j.joined(&peer(1), Time(2)), Join::Write);
        for i in 2..10 {
            j.joined(&peer(i), Time(3));
        }
        assert_eq!(j.len(), 3);
    }
}
