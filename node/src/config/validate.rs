//! What a loaded configuration must satisfy: value ranges, well-formed tokens and peer ids, and
//! the security checks `orgmesh up` runs before it opens anything. Never changes a setting and
//! never touches the network or the disk.

use super::{ApiTls, ApiToken, Config, ConfigError, Refused};

/// One `[[api.tokens]]` or tokens-file entry, checked: a name, known scopes, 64 hex digits.
/// The one place both sources are checked, so they cannot drift apart.
pub(super) fn check_token(t: &ApiToken) -> Result<orgmesh_api::TokenEntry, String> {
    if t.name.trim().is_empty() {
        return Err("every token needs a name".into());
    }
    if t.scopes.is_empty() {
        return Err(format!("token {:?} has no scopes", t.name));
    }
    let scopes = t
        .scopes
        .iter()
        .map(|s| s.parse::<orgmesh_api::Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("token {:?}: {e}", t.name))?;
    let sha256 =
        orgmesh_api::auth::parse_sha256_hex(&t.sha256).map_err(|e| format!("token {:?}: {e}", t.name))?;
    Ok(orgmesh_api::TokenEntry { name: t.name.clone(), scopes, sha256 })
}

/// Whether the multiaddr `addr` binds loopback addresses only (anything unparsable, a DNS name or
/// an unspecified address counts as reachable beyond).
fn listens_on_loopback_only(addr: &str) -> bool {
    use libp2p::multiaddr::{Multiaddr, Protocol};
    let Ok(addr) = addr.parse::<Multiaddr>() else { return false };
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| Err(ConfigError::Invalid { key: key.into(), message });
        if let Err(e) = orgmesh_protocol::Org::new(self.node.org.clone()) {
            return invalid("node.org", e.to_string());
        }
        for entry in &self.policy.accept_from {
            if entry.parse::<libp2p::PeerId>().is_err() && orgmesh_protocol::Org::new(entry.clone()).is_err()
            {
                return invalid("policy.accept_from", format!("{entry:?} is neither an org nor a peer id"));
            }
        }
        for peer in self.trust.trusted_peers.iter().chain(self.trust.orgs.values().flatten()) {
            if peer.parse::<libp2p::PeerId>().is_err() {
                return invalid("trust", format!("{peer:?} is not a peer id"));
            }
        }
        if let Some(dns) = &self.discovery.dns
            && dns.domain.trim().is_empty()
        {
            return invalid("discovery.dns.domain", "must name the mesh's domain".into());
        }
        if self.limits.peer_requests_per_s == 0 || self.limits.peer_burst == 0 {
            return invalid("limits", "peer_requests_per_s and peer_burst must be at least 1".into());
        }
        if self.capacity.slots == 0 {
            return invalid("capacity.slots", "must be at least 1".into());
        }
        let g = &self.gossip;
        if g.interval_ms == 0 || g.suspect_after_ms <= g.interval_ms || g.dead_after_ms <= g.suspect_after_ms
        {
            return invalid("gossip", "need 0 < interval_ms < suspect_after_ms < dead_after_ms".into());
        }
        if g.fanout == 0 {
            return invalid("gossip.fanout", "must be at least 1".into());
        }
        if g.max_members == 0 {
            return invalid("gossip.max_members", "must be at least 1".into());
        }
        let p = &self.placement;
        if p.fanout == 0 || p.bid_timeout_ms == 0 || p.commit_timeout_ms == 0 || p.reservation_ttl_ms == 0 {
            return invalid(
                "placement",
                "need fanout, bid_timeout_ms, commit_timeout_ms and reservation_ttl_ms of at least 1".into(),
            );
        }
        let t = &self.tasks;
        if t.lease_renew_ms == 0 || t.lease_ttl_ms < 2 * t.lease_renew_ms {
            return invalid("tasks", "need 0 < lease_renew_ms and lease_ttl_ms >= 2 * lease_renew_ms".into());
        }
        let e = &self.executor;
        if e.output_cap_mb == 0 || e.work_dir_max_mb == 0 || e.pids_max < 8 {
            return invalid(
                "executor",
                "need output_cap_mb >= 1, work_dir_max_mb >= 1 and pids_max >= 8".into(),
            );
        }
        if e.sandbox_uid_base == 0
            || e.sandbox_uid_count == 0
            || e.sandbox_uid_base.checked_add(e.sandbox_uid_count).is_none()
        {
            return invalid("executor.sandbox_uid_base", "need a non-empty uid range above 0".into());
        }
        self.api_tokens()?;
        self.api_tls()?;
        if self.api.rate_per_s == 0 || self.api.burst == 0 {
            return invalid("api", "rate_per_s and burst must be at least 1".into());
        }
        if self.api.header_timeout_ms < 100 {
            return invalid("api.header_timeout_ms", "must be at least 100".into());
        }
        if self.api.max_connections == 0 {
            return invalid("api.max_connections", "must be at least 1".into());
        }
        if self.api.max_body_bytes < 1024 {
            return invalid("api.max_body_bytes", "must be at least 1024".into());
        }
        for addr in self.p2p.listen.iter().chain(&self.p2p.bootstrap).chain(&self.p2p.external_addrs) {
            if addr.parse::<libp2p::Multiaddr>().is_err() {
                return invalid("p2p", format!("{addr:?} is not a multiaddr"));
            }
        }
        Ok(())
    }

    /// The `policy.accept_from` entries that name an org no `[trust.orgs]` entry attests: any
    /// peer allowed to connect may claim such an org, so the entry admits whoever says they are
    /// it. A peer id needs no attestation (the connection proves it); an org pinned to an empty
    /// list is attested too (nobody may claim it). `orgmesh up` warns about each at start.
    pub fn unattested_accept_from(&self) -> Vec<&str> {
        let orgs = self.policy.accept_from.iter().filter(|e| e.parse::<libp2p::PeerId>().is_err());
        orgs.filter(|org| !self.trust.orgs.contains_key(org.as_str())).map(String::as_str).collect()
    }

    /// Every security check a start runs, in one place: `orgmesh up` runs exactly this before it
    /// opens anything, and the deploy-config tests run it on each shipped config. Returns the
    /// API's access policy (without its rate limit).
    pub fn security(&self) -> Result<orgmesh_api::Security, Refused> {
        let api = orgmesh_api::Security::new(self.api.addr, self.api_tokens()?, self.api.open_on_loopback)?;
        // Likewise the mesh's door: a p2p listener beyond loopback needs something deciding who enters.
        if let Some(problem) = self.p2p_exposure_problem() {
            return Err(Refused::OpenP2p(problem));
        }
        Ok(api)
    }

    /// Why this node must not start as configured, if its p2p listener is reachable beyond
    /// loopback while nothing decides who may connect: anyone who reaches the port could then bid
    /// for and commit work here. A trust source is a mesh key, a `trusted_peers` list, or
    /// Tailscale discovery checking every inbound connection (`verify_inbound`).
    pub fn p2p_exposure_problem(&self) -> Option<String> {
        let trusted = self.trust.mesh_key_file.is_some()
            || !self.trust.trusted_peers.is_empty()
            || self.discovery.tailscale.as_ref().is_some_and(|t| t.verify_inbound);
        if trusted {
            return None;
        }
        let exposed = self.p2p.listen.iter().find(|addr| !listens_on_loopback_only(addr))?;
        Some(format!(
            "the p2p listener {exposed} is reachable beyond loopback, but nothing decides who may connect: anyone \
             who reaches the port could bid for and commit work here. Fix: give the mesh a key \
             (trust.mesh_key_file or ORGMESH_MESH_KEY_FILE; `orgmesh init --mesh-key-file F` creates one), or list \
             trust.trusted_peers (ORGMESH_TRUSTED_PEERS), or use Tailscale discovery with verify_inbound = true, \
             or listen on loopback only (ORGMESH_P2P_LISTEN=/ip4/127.0.0.1/tcp/7000)"
        ))
    }

    /// `[[api.tokens]]` as the API checks them: parsed scopes and hashes.
    pub fn api_tokens(&self) -> Result<Vec<orgmesh_api::TokenEntry>, ConfigError> {
        self.api
            .tokens
            .iter()
            .map(|t| {
                check_token(t).map_err(|message| ConfigError::Invalid { key: "api.tokens".into(), message })
            })
            .collect()
    }

    /// How the API serves HTTPS; paths resolved against the config file's directory.
    pub fn api_tls(&self) -> Result<ApiTls, ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid { key: "api.tls".into(), message: message.into() };
        match (self.api.tls.as_deref(), &self.api.tls_cert, &self.api.tls_key) {
            (None, None, None) => Ok(ApiTls::Off),
            (None, Some(cert), Some(key)) => {
                Ok(ApiTls::Files { cert: self.base_dir.join(cert), key: self.base_dir.join(key) })
            }
            (None, _, _) => Err(invalid("tls_cert and tls_key go together")),
            (Some("tailscale"), None, None) => {
                let ts = self.discovery.tailscale.clone().unwrap_or_default();
                Ok(ApiTls::Tailscale {
                    socket: self.base_dir.join(ts.socket),
                    domain: self.api.tls_domain.clone(),
                })
            }
            (Some("tailscale"), _, _) => Err(invalid("tls = \"tailscale\" takes no tls_cert or tls_key")),
            (Some(_), _, _) => {
                Err(invalid("the only value is \"tailscale\" (for PEM files set tls_cert and tls_key)"))
            }
        }
    }
}
