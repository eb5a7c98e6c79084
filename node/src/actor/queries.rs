//! What the event loop answers about itself: `GET /v1/node` (with its counters), `/v1/peers`
//! and `/readyz`. Read-only: nothing here changes the loop's state.

use std::collections::{BTreeMap, BTreeSet};

use orgmesh_api::{Check, NodeInfo, PeerEntry};
use orgmesh_protocol::engine::EngineCounters;
use orgmesh_protocol::{Time, Timestamp};

use super::EventLoop;

/// Counters of things the driver dropped or refused (the engine counts its own), served in
/// `GET /v1/node` and `/metrics`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub(crate) inbound_failures: u64,
    pub(crate) malformed_frames: u64,
    pub(crate) outbound_failures: u64,
    pub(crate) rejected_records: u64,
    pub(crate) rate_limited_requests: u64,
    pub(crate) bans: u64,
    pub(crate) refused_connections: u64,
    pub(crate) unchecked_requests: u64,
}

impl Counters {
    fn to_map(&self, engine: EngineCounters) -> BTreeMap<String, u64> {
        [
            ("inbound_failures", self.inbound_failures),
            ("malformed_frames", self.malformed_frames),
            ("outbound_failures", self.outbound_failures),
            ("rejected_records", self.rejected_records),
            ("stale_reports", engine.stale_reports),
            ("attempts_lost", engine.attempts_lost),
            ("attempts_overdue", engine.attempts_overdue),
            ("attempts_unstarted", engine.attempts_unstarted),
            ("foreign_entries", engine.foreign_entries),
            ("forged_heartbeats", engine.forged_heartbeats),
            ("hosts_suspected", engine.hosts_suspected),
            ("members_refused", engine.members_refused),
            ("members_evicted", engine.members_evicted),
            ("introductions_refused", engine.introductions_refused),
            ("unlooked_renewals", engine.unlooked_renewals),
            ("bad_receipts", engine.bad_receipts),
            ("rate_limited_requests", self.rate_limited_requests),
            ("bans", self.bans),
            ("refused_connections", self.refused_connections),
            ("unchecked_requests", self.unchecked_requests),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl EventLoop {
    pub(super) fn node_info(&self) -> NodeInfo {
        let local = self.engine.membership().local();
        NodeInfo {
            peer_id: self.facts.peer.clone(),
            org: self.facts.org.clone(),
            name: self.facts.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen_addrs: self.advertised_addrs(),
            labels: local.labels.clone(),
            capacity: self.engine.host().capacity(),
            started_at: self.facts.started_at,
            draining: local.draining,
            isolation: local.isolation,
            counters: {
                let mut c = self.counters.to_map(self.engine.counters());
                c.insert("banned_peers_now".into(), self.guard.banned_count() as u64);
                c
            },
        }
    }

    pub(super) fn peer_entries(&self, now: Time) -> Vec<PeerEntry> {
        let wall_now = crate::wall_clock();
        let mut entries: Vec<PeerEntry> = self
            .engine
            .membership()
            .peers()
            .into_iter()
            .map(|p| {
                let ago = now.since(p.last_seen).as_millis() as u64;
                PeerEntry {
                    sources: self.sources_of(&p.record.peer_id),
                    peer_id: p.record.peer_id,
                    org: p.record.org,
                    name: p.record.name,
                    state: p.state,
                    addrs: p.record.addrs,
                    labels: p.record.labels,
                    capacity: p.record.capacity,
                    last_seen: Timestamp(wall_now.0.saturating_sub(ago)),
                    draining: p.record.draining,
                    isolation: p.record.isolation,
                }
            })
            .collect();
        entries.sort_by(|a, b| (&a.org, &a.peer_id).cmp(&(&b.org, &b.peer_id)));
        entries
    }

    pub(super) fn readiness(&self) -> Vec<Check> {
        let listeners = self.swarm.listeners().count();
        let mut checks = vec![Check {
            name: "p2p".into(),
            ok: listeners > 0,
            detail: format!("{listeners} listen address(es)"),
        }];
        let names: BTreeSet<&'static str> =
            self.discovered.keys().chain(self.source_errors.keys()).copied().collect();
        for source in names {
            let listed = self.discovered.get(source).map_or(0, Vec::len);
            checks.push(match self.source_errors.get(source) {
                Some(error) => {
                    Check { name: format!("discovery:{source}"), ok: false, detail: error.clone() }
                }
                None => Check {
                    name: format!("discovery:{source}"),
                    ok: true,
                    detail: format!("{listed} peer(s) listed"),
                },
            });
        }
        if self.facts.executor == crate::executor::ExecutorKind::Process {
            checks.push(self.sandbox_check());
        }
        checks
    }

    /// Whether attempts get the isolation this node was configured for, and if not, why.
    fn sandbox_check(&self) -> Check {
        let name = "sandbox".to_string();
        match (&self.facts.sandbox, &self.facts.sandbox_unavailable) {
            (Some(sandbox), _) => Check { name, ok: true, detail: sandbox.describe() },
            (None, Some(why)) => Check {
                name,
                ok: false,
                detail: format!(
                    "cannot build the sandbox: {why}; work from other orgs is refused until it can be built \
                     (or executor.isolation = \"none\" runs it unconfined, as this node's user)"
                ),
            },
            (None, None) => Check {
                name,
                ok: true,
                detail: "isolation none (executor.isolation): attempts run unconfined, as this node's user"
                    .into(),
            },
        }
    }
}
