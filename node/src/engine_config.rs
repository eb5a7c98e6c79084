//! The one place where `orgmesh.toml` becomes the protocol's state-machine settings. The file's
//! defaults are the protocol's own (`Default` of each `*Config`), so the node and the simulator
//! start from the same numbers; the test below fails if they drift. Never reads the environment.

use std::time::Duration;

use orgmesh_protocol::lifecycle::LeaseConfig;
use orgmesh_protocol::membership::MembershipConfig;
use orgmesh_protocol::placement::PlacementConfig;

use crate::config::Config;

/// Gossip and failure detection.
pub fn membership(config: &Config) -> MembershipConfig {
    let g = &config.gossip;
    MembershipConfig {
        gossip_interval: Duration::from_millis(g.interval_ms),
        suspect_after: Duration::from_millis(g.suspect_after_ms),
        dead_after: Duration::from_millis(g.dead_after_ms),
        ..MembershipConfig::default()
    }
}

/// Negotiations this node runs for its own tasks.
pub fn placement(config: &Config) -> PlacementConfig {
    let p = &config.placement;
    PlacementConfig {
        fanout: p.fanout,
        bid_timeout: Duration::from_millis(p.bid_timeout_ms),
        commit_timeout: Duration::from_millis(p.commit_timeout_ms),
    }
}

/// How long an offer of this node holds its capacity.
pub fn reservation_ttl(config: &Config) -> Duration {
    Duration::from_millis(config.placement.reservation_ttl_ms)
}

/// Leases this node keeps as an origin, and the renewals it sends as a host.
pub fn leases(config: &Config) -> LeaseConfig {
    let t = &config.tasks;
    LeaseConfig {
        renew_every: Duration::from_millis(t.lease_renew_ms),
        ttl: Duration::from_millis(t.lease_ttl_ms),
        stall_after: Duration::from_millis(t.lease_ttl_ms / 2),
        overdue_grace: Duration::from_secs(t.overdue_grace_s),
    }
}

#[cfg(test)]
mod tests {
    use orgmesh_protocol::placement::DEFAULT_RESERVATION_TTL;

    use super::*;

    /// The node ships the protocol's defaults; a default changed on one side only fails here.
    #[test]
    fn the_default_config_is_the_protocols_defaults() {
        let config = Config::default();
        let (ours, theirs) = (membership(&config), MembershipConfig::default());
        assert_eq!(
            (
                ours.gossip_interval,
                ours.fanout,
                ours.suspect_after,
                ours.dead_after,
                ours.forget_after,
                ours.max_digest
            ),
            (
                theirs.gossip_interval,
                theirs.fanout,
                theirs.suspect_after,
                theirs.dead_after,
                theirs.forget_after,
                theirs.max_digest
            )
        );
        let (ours, theirs) = (placement(&config), PlacementConfig::default());
        assert_eq!(
            (ours.fanout, ours.bid_timeout, ours.commit_timeout),
            (theirs.fanout, theirs.bid_timeout, theirs.commit_timeout)
        );
        assert_eq!(reservation_ttl(&config), DEFAULT_RESERVATION_TTL);
        assert_eq!(leases(&config), LeaseConfig::default());
    }

    #[test]
    fn the_file_reaches_the_state_machines() {
        let config: Config = toml::from_str(
            "[gossip]\ninterval_ms = 200\nsuspect_after_ms = 900\ndead_after_ms = 1300\n\
             [placement]\nfanout = 5\nbid_timeout_ms = 700\ncommit_timeout_ms = 1100\nreservation_ttl_ms = 4000\n\
             [tasks]\nlease_renew_ms = 300\nlease_ttl_ms = 1000\noverdue_grace_s = 7\n",
        )
        .expect("a valid file");
        let m = membership(&config);
        assert_eq!(
            (m.gossip_interval, m.suspect_after, m.dead_after),
            (Duration::from_millis(200), Duration::from_millis(900), Duration::from_millis(1300))
        );
        let p = placement(&config);
        assert_eq!(
            (p.fanout, p.bid_timeout, p.commit_timeout),
            (5, Duration::from_millis(700), Duration::from_millis(1100))
        );
        assert_eq!(reservation_ttl(&config), Duration::from_secs(4));
        let l = leases(&config);
        assert_eq!(
            (l.renew_every, l.ttl, l.stall_after, l.overdue_grace),
            (
                Duration::from_millis(300),
                Duration::from_secs(1),
                Duration::from_millis(500),
                Duration::from_secs(7)
            )
        );
    }
}
