//! The state machines' timing as an operator writes it (milliseconds, TOML), with the shipped
//! defaults taken from each `*Config`'s `Default`: the node's `orgmesh.toml` and the simulator's
//! scenarios read these same types and translate them here, once. Never validates a deployment
//! (the node does, with its own error type).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::membership::MembershipConfig;
use crate::placement::{DEFAULT_RESERVATION_TTL, PlacementConfig};

/// Gossip and failure detection (`[gossip]` in `orgmesh.toml`, `[membership]` in a scenario).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSettings {
    /// Milliseconds between gossip rounds (and heartbeat bumps).
    pub interval_ms: u64,
    /// Peers contacted per round.
    pub fanout: usize,
    /// Milliseconds of silence before a peer is `suspect`.
    pub suspect_after_ms: u64,
    /// Milliseconds of silence before a peer is `dead`.
    pub dead_after_ms: u64,
    /// Most peers the membership table holds (the remembered peers table too).
    pub max_members: usize,
}

impl Default for GossipSettings {
    fn default() -> Self {
        let shipped = MembershipConfig::default();
        Self {
            interval_ms: millis(shipped.gossip_interval),
            fanout: shipped.fanout,
            suspect_after_ms: millis(shipped.suspect_after),
            dead_after_ms: millis(shipped.dead_after),
            max_members: shipped.max_members,
        }
    }
}

impl GossipSettings {
    /// The membership state machine's configuration.
    pub fn to_config(&self) -> MembershipConfig {
        MembershipConfig {
            gossip_interval: Duration::from_millis(self.interval_ms),
            fanout: self.fanout,
            suspect_after: Duration::from_millis(self.suspect_after_ms),
            dead_after: Duration::from_millis(self.dead_after_ms),
            max_members: self.max_members,
            ..MembershipConfig::default()
        }
    }
}

/// Placement negotiation, and how long a host's offer holds (`[placement]` in both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementSettings {
    /// Hosts asked for a bid at once.
    pub fanout: usize,
    /// Milliseconds to wait for bids before deciding with what arrived.
    pub bid_timeout_ms: u64,
    /// Milliseconds to wait for a commit's answer before trying another host.
    pub commit_timeout_ms: u64,
    /// Milliseconds an offer holds its capacity without a commit.
    pub reservation_ttl_ms: u64,
    /// Seconds a host whose attempt never finished (overdue, or its lease expired) stays suspect
    /// to this origin: asked last, chosen only when no other host offers.
    pub suspect_for_s: u64,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        let shipped = PlacementConfig::default();
        Self {
            fanout: shipped.fanout,
            bid_timeout_ms: millis(shipped.bid_timeout),
            commit_timeout_ms: millis(shipped.commit_timeout),
            reservation_ttl_ms: millis(DEFAULT_RESERVATION_TTL),
            suspect_for_s: shipped.suspect_for.as_secs(),
        }
    }
}

impl PlacementSettings {
    /// The negotiator's configuration.
    pub fn to_config(&self) -> PlacementConfig {
        PlacementConfig {
            fanout: self.fanout,
            bid_timeout: Duration::from_millis(self.bid_timeout_ms),
            commit_timeout: Duration::from_millis(self.commit_timeout_ms),
            suspect_for: Duration::from_secs(self.suspect_for_s),
        }
    }

    /// How long a host's offer holds (`HostConfig::reservation_ttl`).
    pub fn reservation_ttl(&self) -> Duration {
        Duration::from_millis(self.reservation_ttl_ms)
    }
}

/// A duration in the milliseconds the files speak (saturating).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults in milliseconds translate back to exactly the state machines' own defaults.
    #[test]
    fn the_default_settings_are_the_state_machines_defaults() {
        let (ours, theirs) = (GossipSettings::default().to_config(), MembershipConfig::default());
        assert_eq!(
            (
                ours.gossip_interval,
                ours.fanout,
                ours.suspect_after,
                ours.dead_after,
                ours.forget_after,
                ours.max_digest,
                ours.max_members
            ),
            (
                theirs.gossip_interval,
                theirs.fanout,
                theirs.suspect_after,
                theirs.dead_after,
                theirs.forget_after,
                theirs.max_digest,
                theirs.max_members
            )
        );
        let placement = PlacementSettings::default();
        let (ours, theirs) = (placement.to_config(), PlacementConfig::default());
        assert_eq!(
            (ours.fanout, ours.bid_timeout, ours.commit_timeout, ours.suspect_for),
            (theirs.fanout, theirs.bid_timeout, theirs.commit_timeout, theirs.suspect_for)
        );
        assert_eq!(placement.reservation_ttl(), DEFAULT_RESERVATION_TTL);
    }
}
