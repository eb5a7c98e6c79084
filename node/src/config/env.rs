//! `ORGMESH_*` overrides applied on top of the file, one variable per setting. Never reads the
//! process environment itself: the caller passes a lookup, so tests and `load` decide what it sees.

use std::path::PathBuf;

use super::{Config, ConfigError, DnsSection, TailscaleSection, parse_labels};

/// A numeric setting an `ORGMESH_*` variable can override: parsed as the setting's own type, so
/// a value out of its range is an error, not silently clamped.
trait SetFromEnv {
    fn set(&mut self, text: &str) -> Result<(), String>;
}

impl<T: std::str::FromStr> SetFromEnv for T
where
    T::Err: std::fmt::Display,
{
    fn set(&mut self, text: &str) -> Result<(), String> {
        *self = text.parse().map_err(|e: T::Err| e.to_string())?;
        Ok(())
    }
}

impl Config {
    pub(super) fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid { key: key.into(), message };
        let list = |v: String| -> Vec<String> {
            v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
        };
        if let Some(v) = env("ORGMESH_ORG") {
            self.node.org = v;
        }
        if let Some(v) = env("ORGMESH_NAME") {
            self.node.name = Some(v);
        }
        if let Some(v) = env("ORGMESH_DATA_DIR") {
            self.node.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("ORGMESH_LABELS") {
            self.node.labels = parse_labels(&list(v)).map_err(|m| invalid("ORGMESH_LABELS", m))?;
        }
        if let Some(v) = env("ORGMESH_API_ADDR") {
            self.api.addr = v.parse().map_err(|e| invalid("ORGMESH_API_ADDR", format!("{e}")))?;
        }
        if let Some(v) = env("ORGMESH_API_TOKENS_FILE") {
            self.api.tokens_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ORGMESH_API_OPEN_ON_LOOPBACK") {
            self.api.open_on_loopback = matches!(v.as_str(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = env("ORGMESH_P2P_LISTEN") {
            self.p2p.listen = list(v);
        }
        if let Some(v) = env("ORGMESH_BOOTSTRAP") {
            self.p2p.bootstrap = list(v);
        }
        if let Some(v) = env("ORGMESH_SLOTS") {
            self.capacity.slots = v.parse().map_err(|e| invalid("ORGMESH_SLOTS", format!("{e}")))?;
        }
        if let Some(v) = env("ORGMESH_ACCEPT_FROM") {
            self.policy.accept_from = list(v);
        }
        if let Some(v) = env("ORGMESH_MESH_KEY_FILE") {
            self.trust.mesh_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ORGMESH_TRUSTED_PEERS") {
            self.trust.trusted_peers = list(v);
        }
        if let Some(v) = env("ORGMESH_TAILSCALE_SOCKET") {
            self.discovery.tailscale.get_or_insert_with(TailscaleSection::default).socket = PathBuf::from(v);
        }
        if let Some(v) = env("ORGMESH_MDNS") {
            self.discovery.mdns = matches!(v.as_str(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = env("ORGMESH_DNS_DOMAIN") {
            self.discovery.dns.get_or_insert_with(DnsSection::default).domain = v;
        }
        let number = |key: &str, slot: &mut dyn SetFromEnv| -> Result<(), ConfigError> {
            match env(key) {
                Some(v) => slot.set(&v).map_err(|e| invalid(key, e)),
                None => Ok(()),
            }
        };
        number("ORGMESH_PEER_REQUESTS_PER_S", &mut self.limits.peer_requests_per_s)?;
        number("ORGMESH_PEER_BURST", &mut self.limits.peer_burst)?;
        number("ORGMESH_API_RATE_PER_S", &mut self.api.rate_per_s)?;
        number("ORGMESH_API_BURST", &mut self.api.burst)?;
        number("ORGMESH_BAN_S", &mut self.limits.ban_s)?;
        number("ORGMESH_GOSSIP_INTERVAL_MS", &mut self.gossip.interval_ms)?;
        number("ORGMESH_SUSPECT_AFTER_MS", &mut self.gossip.suspect_after_ms)?;
        number("ORGMESH_DEAD_AFTER_MS", &mut self.gossip.dead_after_ms)?;
        number("ORGMESH_MAX_MEMBERS", &mut self.gossip.max_members)?;
        if let Some(kind) = env("ORGMESH_EXECUTOR") {
            self.executor.kind = kind
                .parse()
                .map_err(|message| ConfigError::Invalid { key: "ORGMESH_EXECUTOR".into(), message })?;
        }
        if let Some(v) = env("ORGMESH_ISOLATION") {
            self.executor.isolation = v
                .parse()
                .map_err(|message| ConfigError::Invalid { key: "ORGMESH_ISOLATION".into(), message })?;
        }
        if let Some(v) = env("ORGMESH_SANDBOX_NETWORK") {
            self.executor.network = v
                .parse()
                .map_err(|message| ConfigError::Invalid { key: "ORGMESH_SANDBOX_NETWORK".into(), message })?;
        }
        number("ORGMESH_OUTPUT_CAP_MB", &mut self.executor.output_cap_mb)?;
        number("ORGMESH_KILL_GRACE_S", &mut self.executor.kill_grace_s)?;
        number("ORGMESH_WORK_DIR_MAX_MB", &mut self.executor.work_dir_max_mb)?;
        number("ORGMESH_LEASE_RENEW_MS", &mut self.tasks.lease_renew_ms)?;
        number("ORGMESH_LEASE_TTL_MS", &mut self.tasks.lease_ttl_ms)?;
        number("ORGMESH_STOP_GRACE_S", &mut self.tasks.stop_grace_s)?;
        number("ORGMESH_OVERDUE_GRACE_S", &mut self.tasks.overdue_grace_s)?;
        number("ORGMESH_START_WITHIN_S", &mut self.tasks.start_within_s)?;
        Ok(())
    }
}
