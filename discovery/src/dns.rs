//! The DNS source: an org admin publishes its nodes in DNS and every node that knows the domain
//! finds them. It only reads DNS: it never dials, trusts or ranks what it finds, never writes to a
//! zone, and never serves an answer older than the TTL the zone gave it.
//!
//! # Records
//!
//! For the domain `example.org` the source reads:
//!
//! ```text
//! _orgmesh._tcp.example.org.  60 IN SRV  10 10 7000 node1.example.org.
//! node1.example.org.          60 IN A    192.0.2.10
//! node1.example.org.          60 IN AAAA 2001:db8::10
//! node1.example.org.          60 IN TXT  "peer_id=12D3KooW..."
//! ```
//!
//! - **SRV** `_orgmesh._tcp.<domain>`: one record per node, `priority weight port target`. The
//!   port is the node's libp2p TCP port. A target of `.` ("service not offered", RFC 2782) is
//!   skipped. Priority and weight only order the answer; every node is reported.
//! - **A / AAAA** at each target: the addresses to dial, reported as `/ip4/A/tcp/PORT` and
//!   `/ip6/AAAA/tcp/PORT`. A target with neither is skipped.
//! - **TXT** at each target: one TXT record whose text (its character-strings concatenated) is
//!   exactly `peer_id=<id>`, where `<id>` is the node's libp2p peer id in base58 (the `12D3KooW…`
//!   form that `orgmesh id` prints). The key is matched case-insensitively (RFC 1464); there is no
//!   whitespace around `=`. Other TXT records at the target are ignored. The id must decode to a
//!   libp2p peer id (an identity multihash of at most 42 bytes or a sha2-256 multihash); a
//!   missing, malformed or ambiguous (two different ids) `peer_id` leaves the peer id unknown, and
//!   the node is still reported by address: its id is learned when the connection is made.
//!
//! # TTLs
//!
//! Each [`Source::discover`] asks the servers again (the resolver's cache is emptied first, so a
//! record removed from the zone is gone from the very next list), and [`Source::refresh_interval`]
//! is the smallest TTL among the records of the last answer (SRV, CNAME, A, AAAA and TXT),
//! clamped to `[min_refresh, max_refresh]`. The node asks again after that interval, so a record
//! removed from the zone disappears from the node's view within its TTL. When the SRV set is
//! empty the negative TTL from the zone's SOA is used, and after a failure `min_refresh`.
//!
//! # Failures
//!
//! NXDOMAIN or no SRV records is an empty list, not an error. A server that cannot be reached,
//! times out, or answers with an error code (SERVFAIL, REFUSED, …) for any of the queries is
//! [`DiscoveryError::Unavailable`]: a partial list would read as "those nodes are gone".

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use orgmesh_protocol::PeerId;

use crate::{BoxFuture, Discovered, DiscoveryError, Source};

/// The SRV owner label prepended to the configured domain.
pub(crate) const SRV_PREFIX: &str = "_orgmesh._tcp";

/// The TXT attribute that carries a node's peer id.
pub(crate) const PEER_ID_KEY: &str = "peer_id";

/// How many targets are resolved at once: each costs three queries, and a multiplexed
/// connection refuses more than a few dozen in flight.
const CONCURRENT_TARGETS: usize = 8;

/// Where and how to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The domain whose `_orgmesh._tcp` SRV records list the nodes, e.g. `example.org`.
    pub domain: String,
    /// Name servers to ask (UDP, then TCP for truncated answers). Empty: the system's
    /// `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// The shortest refresh interval, however small the TTLs (default 5 s).
    pub min_refresh: Duration,
    /// The longest refresh interval, however large the TTLs (default 300 s).
    pub max_refresh: Duration,
    /// How long one query may take before it is retried or given up (default 5 s).
    pub query_timeout: Duration,
}

impl DnsConfig {
    /// Default shortest refresh interval.
    pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(5);
    /// Default longest refresh interval.
    pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(300);
    /// Default per-query timeout.
    pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

    /// The system resolver and default intervals for `domain`.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            nameservers: Vec::new(),
            min_refresh: Self::DEFAULT_MIN_REFRESH,
            max_refresh: Self::DEFAULT_MAX_REFRESH,
            query_timeout: Self::DEFAULT_QUERY_TIMEOUT,
        }
    }
}

/// Finds nodes through DNS SRV, A/AAAA and TXT records (see the module docs for the format).
#[derive(Debug)]
pub struct DnsSource {
    resolver: TokioResolver,
    srv_name: Name,
    min_refresh: Duration,
    max_refresh: Duration,
    refresh: Duration,
}

impl DnsSource {
    /// Checks the configuration and builds the resolver. Fails with
    /// [`DiscoveryError::InvalidEntry`] for a bad domain or refresh bounds, and with
    /// [`DiscoveryError::Unavailable`] when `nameservers` is empty and the system configuration
    /// cannot be read.
    pub fn new(config: DnsConfig) -> Result<Self, DiscoveryError> {
        let invalid =
            |entry: &str, reason: String| DiscoveryError::InvalidEntry { entry: entry.into(), reason };
        if config.min_refresh.is_zero() || config.min_refresh > config.max_refresh {
            return Err(invalid(
                "min_refresh",
                format!("must be non-zero and at most max_refresh ({:?})", config.max_refresh),
            ));
        }
        if config.query_timeout.is_zero() {
            return Err(invalid("query_timeout", "must be non-zero".into()));
        }
        let domain = config.domain.trim_end_matches('.');
        if domain.is_empty() {
            return Err(invalid(&config.domain, "empty domain".into()));
        }
        let domain_name = Name::from_ascii(domain).map_err(|e| invalid(&config.domain, e.to_string()))?;
        let srv_name = Name::from_ascii(SRV_PREFIX)
            .and_then(|prefix| prefix.append_domain(&domain_name))
            .map_err(|e| invalid(&config.domain, e.to_string()))?;

        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| DiscoveryError::Unavailable(format!("system DNS configuration: {e}")))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = config.query_timeout;
        // Nodes are published in DNS; a stale /etc/hosts line must not shadow the zone.
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = builder
            .build()
            .map_err(|e| DiscoveryError::Unavailable(format!("building the DNS resolver: {e}")))?;

        Ok(Self {
            resolver,
            srv_name,
            min_refresh: config.min_refresh,
            max_refresh: config.max_refresh,
            refresh: config.min_refresh,
        })
    }

    /// The SRV name queried, e.g. `_orgmesh._tcp.example.org.`.
    pub fn srv_name(&self) -> String {
        self.srv_name.to_string()
    }

    /// One full resolution: the peers and the smallest TTL seen (seconds), if any.
    async fn resolve(&self) -> Result<(Vec<Discovered>, Option<u32>), DiscoveryError> {
        // The source re-queries on its own TTL-driven schedule; a cached answer would only
        // delay what the zone says now (and a cached NXDOMAIN would hide a new node for the
        // SOA's negative TTL).
        self.resolver.clear_cache();

        let mut ttl = MinTtl::default();
        let srv = match self.resolver.lookup(self.srv_name.clone(), RecordType::SRV).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => {
                ttl.see_negative(&e);
                return Ok((Vec::new(), ttl.0));
            }
            Err(e) => return Err(unavailable(&self.srv_name, RecordType::SRV, &e)),
        };

        // (priority, reverse weight, target, port): the order the answer is reported in.
        let mut entries: Vec<(u16, std::cmp::Reverse<u16>, Name, u16)> = Vec::new();
        for record in srv.answers() {
            ttl.see(record);
            if let RData::SRV(srv) = &record.data {
                if srv.target.is_root() {
                    continue;
                }
                let mut target = srv.target.clone();
                target.set_fqdn(true);
                entries.push((srv.priority, std::cmp::Reverse(srv.weight), target.to_lowercase(), srv.port));
            }
        }
        entries.sort();
        entries.dedup();

        // One node per target name, with every port the SRV set gives it.
        let mut targets: Vec<(Name, Vec<u16>)> = Vec::new();
        for (_, _, target, port) in entries {
            match targets.iter_mut().find(|(name, _)| *name == target) {
                Some((_, ports)) => ports.push(port),
                None => targets.push((target, vec![port])),
            }
        }

        let answers: Vec<Result<TargetAnswer, DiscoveryError>> = futures::stream::iter(targets)
            .map(|(target, ports)| self.resolve_target(target, ports))
            .buffered(CONCURRENT_TARGETS)
            .collect()
            .await;

        let mut peers = Vec::new();
        for answer in answers {
            let answer = answer?;
            if let Some(t) = answer.min_ttl {
                ttl.see_secs(t);
            }
            if answer.addrs.is_empty() {
                tracing::debug!(target = %answer.target, "SRV target without A/AAAA records; skipped");
                continue;
            }
            peers.push(Discovered { peer: answer.peer, addrs: answer.addrs });
        }
        Ok((peers, ttl.0))
    }

    /// A, AAAA and TXT of one SRV target.
    async fn resolve_target(&self, target: Name, ports: Vec<u16>) -> Result<TargetAnswer, DiscoveryError> {
        let (a, aaaa, txt) = tokio::join!(
            self.records(&target, RecordType::A),
            self.records(&target, RecordType::AAAA),
            self.records(&target, RecordType::TXT),
        );
        let (a, aaaa, txt) = (a?, aaaa?, txt?);

        let mut ttl = MinTtl::default();
        let mut ips = Vec::new();
        for record in a.iter().chain(&aaaa) {
            ttl.see(record);
            match &record.data {
                RData::A(v4) => ips.push(IpAddr::V4(v4.0)),
                RData::AAAA(v6) => ips.push(IpAddr::V6(v6.0)),
                _ => {}
            }
        }
        txt.iter().for_each(|record| ttl.see(record));

        let addrs = ports
            .iter()
            .flat_map(|port| {
                ips.iter().map(move |ip| match ip {
                    IpAddr::V4(v4) => format!("/ip4/{v4}/tcp/{port}"),
                    IpAddr::V6(v6) => format!("/ip6/{v6}/tcp/{port}"),
                })
            })
            .collect();

        let texts: Vec<Vec<u8>> = txt
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(t) => Some(t.txt_data.iter().flat_map(|s| s.iter().copied()).collect()),
                _ => None,
            })
            .collect();
        let peer = peer_from_txt(&target, &texts);

        Ok(TargetAnswer { target, peer, addrs, min_ttl: ttl.0 })
    }

    /// The answer records for one query; "no such name" and "no such record" are empty.
    ///
    /// Negative TTLs here are not counted: the source asks again at the positive TTLs anyway,
    /// and a v4-only node's AAAA NODATA would otherwise set the pace for the whole list.
    async fn records(&self, name: &Name, rtype: RecordType) -> Result<Vec<Record>, DiscoveryError> {
        match self.resolver.lookup(name.clone(), rtype).await {
            Ok(lookup) => Ok(lookup.answers().to_vec()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(unavailable(name, rtype, &e)),
        }
    }
}

impl Source for DnsSource {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn discover(&mut self) -> BoxFuture<'_, Result<Vec<Discovered>, DiscoveryError>> {
        Box::pin(async move {
            match self.resolve().await {
                Ok((peers, ttl)) => {
                    self.refresh = match ttl {
                        Some(secs) => {
                            Duration::from_secs(u64::from(secs)).clamp(self.min_refresh, self.max_refresh)
                        }
                        None => self.min_refresh,
                    };
                    Ok(peers)
                }
                Err(e) => {
                    // Try again soon: the zone may be back before any TTL would have run out.
                    self.refresh = self.min_refresh;
                    Err(e)
                }
            }
        })
    }

    fn refresh_interval(&self) -> Duration {
        self.refresh
    }
}

/// What one SRV target resolved to.
struct TargetAnswer {
    target: Name,
    peer: Option<PeerId>,
    addrs: Vec<String>,
    min_ttl: Option<u32>,
}

/// The smallest TTL seen, in seconds.
#[derive(Default)]
struct MinTtl(Option<u32>);

impl MinTtl {
    fn see(&mut self, record: &Record) {
        self.see_secs(record.ttl);
    }

    fn see_secs(&mut self, secs: u32) {
        self.0 = Some(self.0.map_or(secs, |t| t.min(secs)));
    }

    /// The negative TTL of an NXDOMAIN/NODATA answer (from the zone's SOA), when it has one.
    fn see_negative(&mut self, error: &NetError) {
        if let NetError::Dns(DnsError::NoRecordsFound(no_records)) = error
            && let Some(secs) = no_records.negative_ttl
        {
            self.see_secs(secs);
        }
    }
}

fn unavailable(name: &Name, rtype: RecordType, error: &NetError) -> DiscoveryError {
    DiscoveryError::Unavailable(format!("DNS {rtype} query for {name}: {error}"))
}

/// The peer id published at `target`: exactly one distinct valid `peer_id=` value, else `None`.
fn peer_from_txt(target: &Name, texts: &[Vec<u8>]) -> Option<PeerId> {
    let mut found: Vec<PeerId> = Vec::new();
    for text in texts {
        let Ok(text) = std::str::from_utf8(text) else { continue };
        let Some((key, value)) = text.split_once('=') else { continue };
        if !key.eq_ignore_ascii_case(PEER_ID_KEY) {
            continue;
        }
        match parse_peer_id(value) {
            Some(peer) if !found.contains(&peer) => found.push(peer),
            Some(_) => {}
            None => tracing::warn!(%target, value, "TXT peer_id is not a libp2p peer id; ignored"),
        }
    }
    match found.len() {
        0 | 1 => found.pop(),
        _ => {
            tracing::warn!(%target, "several different TXT peer_id values; dialling by address only");
            None
        }
    }
}

/// A base58 libp2p peer id: the node converts it with `libp2p::PeerId::from_str`, which only
/// accepts an identity multihash of at most 42 bytes (an inlined public key) or a sha2-256 one.
/// Checking here keeps a truncated id from making the node drop the entry altogether.
fn parse_peer_id(text: &str) -> Option<PeerId> {
    let peer = PeerId::new(text).ok()?;
    let bytes = base58_decode(text)?;
    let valid = match bytes.as_slice() {
        [0x00, len, digest @ ..] => usize::from(*len) == digest.len() && digest.len() <= 42,
        [0x12, 0x20, digest @ ..] => digest.len() == 32,
        _ => false,
    };
    valid.then_some(peer)
}

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Bitcoin-alphabet base58, as libp2p uses. Inputs are bounded by [`PeerId::MAX_LEN`], so the
/// quadratic schoolbook conversion is fine.
fn base58_decode(text: &str) -> Option<Vec<u8>> {
    // Little-endian base-256 digits of the number.
    let mut digits: Vec<u8> = Vec::new();
    for c in text.bytes() {
        let mut carry = BASE58_ALPHABET.iter().position(|&a| a == c)? as u32;
        for digit in &mut digits {
            carry += u32::from(*digit) * 58;
            *digit = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            digits.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    // Each leading '1' is a leading zero byte.
    let zeros = text.bytes().take_while(|&c| c == b'1').count();
    let mut out = vec![0u8; zeros];
    out.extend(digits.iter().rev());
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::fixtures::dns::DnsFixture;

    const DOMAIN: &str = "mesh.orgmesh.test";

    fn base58_encode(bytes: &[u8]) -> String {
        let mut digits: Vec<u8> = Vec::new(); // little-endian base-58 digits
        for &byte in bytes {
            let mut carry = u32::from(byte);
            for digit in &mut digits {
                carry += u32::from(*digit) << 8;
                *digit = (carry % 58) as u8;
                carry /= 58;
            }
            while carry > 0 {
                digits.push((carry % 58) as u8);
                carry /= 58;
            }
        }
        let zeros = bytes.iter().take_while(|&&b| b == 0).count();
        let mut out = "1".repeat(zeros);
        out.extend(digits.iter().rev().map(|&d| BASE58_ALPHABET[usize::from(d)] as char));
        out
    }

    /// A well-formed ed25519 peer id (identity multihash of a protobuf public key), `12D3KooW…`.
    fn peer_id(seed: u8) -> String {
        let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        bytes.extend([seed; 32]);
        base58_encode(&bytes)
    }

    fn config(fixture: &DnsFixture) -> DnsConfig {
        DnsConfig {
            nameservers: vec![fixture.addr()],
            min_refresh: Duration::from_secs(1),
            query_timeout: Duration::from_millis(500),
            ..DnsConfig::new(DOMAIN)
        }
    }

    fn localhost(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn peer_ids_round_trip_and_are_checked() {
        let id = peer_id(7);
        assert!(id.starts_with("12D3KooW"), "{id}");
        assert_eq!(base58_decode(&id).map(|b| base58_encode(&b)), Some(id.clone()));
        assert!(parse_peer_id(&id).is_some());
        // Valid base58 and a plausible PeerId to `protocol`, but not a multihash.
        assert!(parse_peer_id("12D3KooWabc").is_none());
        assert!(parse_peer_id(&id[..id.len() - 1]).is_none());
        assert!(parse_peer_id("not base58!").is_none());
        assert!(parse_peer_id("").is_none());
        // A sha2-256 (legacy RSA-style) id.
        let mut sha = vec![0x12, 0x20];
        sha.extend([9u8; 32]);
        assert!(parse_peer_id(&base58_encode(&sha)).is_some());
    }

    #[test]
    fn txt_parsing() {
        let target = Name::from_ascii("n.example.").unwrap();
        let id = peer_id(1);
        let txt = |items: &[&str]| -> Vec<Vec<u8>> { items.iter().map(|s| s.as_bytes().to_vec()).collect() };
        let expected = PeerId::new(id.clone()).ok();
        assert_eq!(peer_from_txt(&target, &txt(&[&format!("peer_id={id}")])), expected);
        assert_eq!(peer_from_txt(&target, &txt(&["v=orgmesh1", &format!("PEER_ID={id}")])), expected);
        assert_eq!(
            peer_from_txt(&target, &txt(&[&format!("peer_id={id}"), &format!("peer_id={id}")])),
            expected
        );
        assert_eq!(peer_from_txt(&target, &txt(&[&format!("peer_id={id}"), "peer_id=garbage"])), expected);
        assert_eq!(
            peer_from_txt(&target, &txt(&[&format!("peer_id={id}"), &format!("peer_id={}", peer_id(2))])),
            None
        );
        assert_eq!(peer_from_txt(&target, &txt(&[&format!("peer_id = {id}")])), None);
        assert_eq!(peer_from_txt(&target, &txt(&[&id])), None);
        assert_eq!(peer_from_txt(&target, &[vec![0xff, b'=', b'x']]), None);
        assert_eq!(peer_from_txt(&target, &[]), None);
    }

    #[test]
    fn rejects_bad_config() {
        let bad = |c: DnsConfig| matches!(DnsSource::new(c), Err(DiscoveryError::InvalidEntry { .. }));
        let local =
            || DnsConfig { nameservers: vec!["127.0.0.1:53".parse().unwrap()], ..DnsConfig::new(DOMAIN) };
        assert!(bad(DnsConfig { domain: String::new(), ..local() }));
        assert!(bad(DnsConfig { domain: "bad..domain".into(), ..local() }));
        assert!(bad(DnsConfig { min_refresh: Duration::ZERO, ..local() }));
        assert!(bad(DnsConfig {
            min_refresh: Duration::from_secs(10),
            max_refresh: Duration::from_secs(1),
            ..local()
        }));
        assert!(bad(DnsConfig { query_timeout: Duration::ZERO, ..local() }));
        let source = DnsSource::new(DnsConfig { domain: "Example.ORG.".into(), ..local() }).unwrap();
        assert_eq!(source.srv_name(), "_orgmesh._tcp.Example.ORG.");
        assert_eq!(source.name(), "dns");
        assert_eq!(source.refresh_interval(), DnsConfig::DEFAULT_MIN_REFRESH);
    }

    #[tokio::test]
    async fn three_published_nodes_are_discovered() {
        let fixture = DnsFixture::start(DOMAIN).await;
        let ids: Vec<String> = (1..=3).map(peer_id).collect();
        fixture.set_node("node1", localhost(1), 7001, Some(&ids[0]), 30).await;
        fixture.set_node("node2", localhost(2), 7002, Some(&ids[1]), 30).await;
        fixture.set_node("node3", localhost(3), 7003, Some(&ids[2]), 30).await;
        fixture.add_ip("node3", IpAddr::V6(Ipv6Addr::LOCALHOST)).await;

        let mut source = DnsSource::new(config(&fixture)).unwrap();
        let mut found = source.discover().await.unwrap();
        found.sort_by(|a, b| a.addrs.cmp(&b.addrs));
        assert_eq!(
            found,
            vec![
                Discovered {
                    peer: PeerId::new(ids[0].clone()).ok(),
                    addrs: vec!["/ip4/127.0.0.1/tcp/7001".into()]
                },
                Discovered {
                    peer: PeerId::new(ids[1].clone()).ok(),
                    addrs: vec!["/ip4/127.0.0.2/tcp/7002".into()]
                },
                Discovered {
                    peer: PeerId::new(ids[2].clone()).ok(),
                    addrs: vec!["/ip4/127.0.0.3/tcp/7003".into(), "/ip6/::1/tcp/7003".into()],
                },
            ]
        );
        assert_eq!(source.refresh_interval(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn removed_node_disappears_after_its_ttl() {
        let fixture = DnsFixture::start(DOMAIN).await;
        fixture.set_node("node1", localhost(1), 7001, Some(&peer_id(1)), 2).await;
        fixture.set_node("node2", localhost(2), 7002, Some(&peer_id(2)), 1).await;
        let mut source = DnsSource::new(config(&fixture)).unwrap();

        assert_eq!(source.discover().await.unwrap().len(), 2);
        // The SRV set shares one TTL, the smallest of its nodes'.
        assert_eq!(source.refresh_interval(), Duration::from_secs(1));

        assert!(fixture.remove_node("node2").await);
        tokio::time::sleep(source.refresh_interval()).await;
        let found = source.discover().await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].addrs, vec!["/ip4/127.0.0.1/tcp/7001".to_string()]);
        assert_eq!(source.refresh_interval(), Duration::from_secs(2));

        // A lower TTL is followed down again, and clamped to the configured bounds.
        fixture.set_node("node1", localhost(1), 7001, Some(&peer_id(1)), 0).await;
        source.discover().await.unwrap();
        assert_eq!(source.refresh_interval(), Duration::from_secs(1));
        fixture.set_node("node1", localhost(1), 7001, Some(&peer_id(1)), 86_400).await;
        source.discover().await.unwrap();
        assert_eq!(source.refresh_interval(), DnsConfig::DEFAULT_MAX_REFRESH);

        // The last node gone: NXDOMAIN is an empty list, not an error.
        assert!(fixture.remove_node("node1").await);
        assert_eq!(source.discover().await.unwrap(), vec![]);
        assert_eq!(source.refresh_interval(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn resolver_cache_never_outlives_the_zone() {
        let fixture = DnsFixture::start(DOMAIN).await;
        fixture.set_node("node1", localhost(1), 7001, Some(&peer_id(1)), 60).await;
        fixture.set_node("node2", localhost(2), 7002, Some(&peer_id(2)), 60).await;
        let mut source = DnsSource::new(config(&fixture)).unwrap();
        assert_eq!(source.discover().await.unwrap().len(), 2);
        assert_eq!(source.refresh_interval(), Duration::from_secs(60));

        // Each discover asks the server afresh, so the change shows at once (the node itself
        // only asks again after the TTL).
        fixture.remove_node("node2").await;
        fixture.set_node("node3", localhost(3), 7003, None, 60).await;
        let mut addrs: Vec<String> =
            source.discover().await.unwrap().into_iter().flat_map(|d| d.addrs).collect();
        addrs.sort();
        assert_eq!(addrs, vec!["/ip4/127.0.0.1/tcp/7001".to_string(), "/ip4/127.0.0.3/tcp/7003".to_string()]);
    }

    #[tokio::test]
    async fn large_zone_is_read_whole() {
        // 100 SRV records do not fit a UDP answer: the resolver retries over TCP, and the
        // targets are resolved a few at a time.
        let fixture = DnsFixture::start(DOMAIN).await;
        for i in 0..100u8 {
            fixture
                .set_node(&format!("node{i}"), localhost(i + 1), 7000 + u16::from(i), Some(&peer_id(i)), 30)
                .await;
        }
        let mut source = DnsSource::new(config(&fixture)).unwrap();
        let found = source.discover().await.unwrap();
        assert_eq!(found.len(), 100);
        assert!(found.iter().all(|d| d.peer.is_some() && d.addrs.len() == 1));
    }

    #[tokio::test]
    async fn refused_answer_is_unavailable() {
        let fixture = DnsFixture::start(DOMAIN).await;
        let mut source =
            DnsSource::new(DnsConfig { domain: "elsewhere.test".into(), ..config(&fixture) }).unwrap();
        assert!(matches!(source.discover().await, Err(DiscoveryError::Unavailable(_))));
    }

    #[tokio::test]
    async fn empty_zone_is_an_empty_list() {
        let fixture = DnsFixture::start(DOMAIN).await;
        let mut source = DnsSource::new(config(&fixture)).unwrap();
        assert_eq!(source.discover().await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn missing_txt_means_unknown_peer() {
        let fixture = DnsFixture::start(DOMAIN).await;
        fixture.set_node("node1", localhost(1), 7001, None, 30).await;
        let mut source = DnsSource::new(config(&fixture)).unwrap();
        let found = source.discover().await.unwrap();
        assert_eq!(found, vec![Discovered { peer: None, addrs: vec!["/ip4/127.0.0.1/tcp/7001".into()] }]);
    }

    #[tokio::test]
    async fn malformed_txt_is_ignored() {
        let fixture = DnsFixture::start(DOMAIN).await;
        fixture.set_node("bad-alphabet", localhost(1), 7001, Some("0OIl not base58"), 30).await;
        fixture.set_node("not-multihash", localhost(2), 7002, Some("12D3KooWabc"), 30).await;
        fixture.set_node("no-key", localhost(3), 7003, None, 30).await;
        fixture.set_txt("no-key", &[&peer_id(3)]).await;
        fixture.set_node("other-attrs", localhost(4), 7004, None, 30).await;
        fixture.set_txt("other-attrs", &["v=orgmesh1", &format!("peer_id={}", peer_id(4))]).await;

        let mut source = DnsSource::new(config(&fixture)).unwrap();
        let mut found = source.discover().await.unwrap();
        found.sort_by(|a, b| a.addrs.cmp(&b.addrs));
        let peers: Vec<Option<PeerId>> = found.into_iter().map(|d| d.peer).collect();
        assert_eq!(peers, vec![None, None, None, PeerId::new(peer_id(4)).ok()]);
    }

    #[tokio::test]
    async fn server_down_is_unavailable() {
        let fixture = DnsFixture::start(DOMAIN).await;
        fixture.set_node("node1", localhost(1), 7001, Some(&peer_id(1)), 30).await;
        let mut source = DnsSource::new(config(&fixture)).unwrap();
        assert_eq!(source.discover().await.unwrap().len(), 1);

        fixture.stop().await;
        let started = std::time::Instant::now();
        match source.discover().await {
            Err(DiscoveryError::Unavailable(reason)) => assert!(reason.contains("_orgmesh._tcp"), "{reason}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(source.refresh_interval(), Duration::from_secs(1));
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
}
