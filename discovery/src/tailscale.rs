//! The Tailscale / Headscale source. An org joins a mesh by putting its node on the mesh's
//! tailnet with the mesh's ACL tag; this source asks the local tailscaled, through its LocalAPI
//! Unix socket, which tailnet peers are online and carry that tag, and reports their Tailscale
//! addresses on the mesh's p2p port. Talking only to the local daemon makes it work the same
//! whichever control server (Tailscale's or Headscale) runs the tailnet.
//!
//! [`TailscaleClient::whois`] is the other half: the node asks who is behind an inbound
//! connection's address and refuses it unless that tailnet node carries the tag.
//!
//! This module never dials peers, never changes tailscaled's state (it only reads `status` and
//! `whois`) and never decides trust beyond reporting tags: the node does that.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tailscale_localapi::{BackendState, Error as LocalApiError, LocalApi, UnixStreamClient};

use crate::{BoxFuture, Discovered, DiscoveryError, Source};

/// How the [`TailscaleSource`] finds the mesh on the tailnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleConfig {
    /// tailscaled's LocalAPI socket.
    pub socket: PathBuf,
    /// The ACL tag every mesh node carries (`tag:…`).
    pub tag: String,
    /// The mesh's p2p port, the same on every node (tailscaled knows addresses, not ports).
    pub port: u16,
    /// How often to ask tailscaled again.
    pub refresh: Duration,
}

impl TailscaleConfig {
    /// tailscaled's socket on Linux.
    pub const DEFAULT_SOCKET: &'static str = "/var/run/tailscale/tailscaled.sock";
    /// The tag mesh nodes carry unless configured otherwise.
    pub const DEFAULT_TAG: &'static str = "tag:orgmesh";
    /// The mesh's default p2p port.
    pub const DEFAULT_PORT: u16 = 7000;
    /// The default refresh interval.
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
}

impl Default for TailscaleConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(Self::DEFAULT_SOCKET),
            tag: Self::DEFAULT_TAG.into(),
            port: Self::DEFAULT_PORT,
            refresh: Self::DEFAULT_REFRESH,
        }
    }
}

/// A node of the tailnet, as tailscaled describes it in `status` or `whois`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailnetPeer {
    /// The node's stable id (`n…CNTRL`), for logs.
    pub stable_id: String,
    /// Its MagicDNS name without the trailing dot (`host.tailnet.ts.net`), else its host name.
    pub name: String,
    /// The machine's own host name.
    pub host_name: String,
    /// Its ACL tags.
    pub tags: Vec<String>,
    /// Its Tailscale addresses.
    pub ips: Vec<IpAddr>,
    /// Whether it is connected to the control server; `None` when tailscaled did not say
    /// (whois leaves it out when this node may not know).
    pub online: Option<bool>,
    /// The owner's login (`tagged-devices` for tagged nodes on Tailscale).
    pub login: String,
}

impl TailnetPeer {
    /// Whether the node carries `tag` (exact match, as ACL tags are compared).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// `/ip4/<ip>/tcp/<port>` or `/ip6/<ip>/tcp/<port>` for each of its addresses.
    pub fn multiaddrs(&self, port: u16) -> Vec<String> {
        self.ips
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => format!("/ip4/{v4}/tcp/{port}"),
                IpAddr::V6(v6) => format!("/ip6/{v6}/tcp/{port}"),
            })
            .collect()
    }

    fn from_status(
        peer: tailscale_localapi::PeerStatus,
        users: &std::collections::HashMap<i64, tailscale_localapi::UserProfile>,
    ) -> Self {
        let name = peer.dnsname.trim_end_matches('.');
        Self {
            stable_id: peer.id,
            name: if name.is_empty() { peer.hostname.clone() } else { name.to_string() },
            host_name: peer.hostname,
            tags: peer.tags,
            ips: peer.tailscale_ips,
            online: Some(peer.online),
            login: users.get(&peer.user_id).map(|u| u.login_name.clone()).unwrap_or_default(),
        }
    }

    fn from_whois(whois: tailscale_localapi::Whois) -> Self {
        let node = whois.node;
        let host_name = node.hostinfo.hostname.unwrap_or_default();
        let name = node.name.trim_end_matches('.');
        Self {
            stable_id: node.stable_id,
            name: if name.is_empty() { host_name.clone() } else { name.to_string() },
            host_name,
            tags: node.tags,
            // Node addresses are single-host prefixes (`100.64.0.1/32`).
            ips: node.addresses.iter().filter_map(|a| a.split('/').next()?.parse().ok()).collect(),
            online: node.online,
            login: whois.user_profile.login_name,
        }
    }
}

/// A read-only client of tailscaled's LocalAPI, shared by the source (which lists peers) and the
/// node (which asks who is behind an inbound connection). Cheap to clone; every call opens its own
/// connection and gives up after a timeout, so a hung tailscaled cannot stall the caller.
#[derive(Clone)]
pub struct TailscaleClient {
    api: LocalApi<UnixStreamClient>,
    socket: PathBuf,
    timeout: Duration,
}

impl fmt::Debug for TailscaleClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailscaleClient")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TailscaleClient {
    /// How long one LocalAPI call may take unless [`with_timeout`](Self::with_timeout) says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client of the tailscaled listening on `socket`. Nothing is opened until the first call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        Self { api: LocalApi::new_with_socket_path(&socket), socket, timeout: Self::DEFAULT_TIMEOUT }
    }

    /// Sets how long one call may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every peer in tailscaled's current network map, online or not, tagged or not, without this
    /// node itself, ordered by name.
    ///
    /// Fails with [`DiscoveryError::Unavailable`] when the socket cannot be reached, the call times
    /// out, tailscaled refuses it or answers something unreadable, or tailscaled is not `Running`
    /// (logged out, stopped, starting): then it has no current peer list to give.
    pub async fn peers(&self) -> Result<Vec<TailnetPeer>, DiscoveryError> {
        let status =
            self.within("status", self.api.status()).await?.map_err(|e| self.unavailable("status", &e))?;
        if !matches!(status.backend_state, BackendState::Running) {
            return Err(DiscoveryError::Unavailable(format!(
                "tailscaled at {} is {:?}, not Running: this node is not on the tailnet (run `tailscale up`)",
                self.socket.display(),
                status.backend_state
            )));
        }
        let me = status.self_status.public_key;
        let users = status.user;
        let mut peers: Vec<TailnetPeer> = status
            .peer
            .into_iter()
            // tailscaled never lists itself under Peer; checked anyway, as this node must never
            // report itself.
            .filter(|(key, peer)| *key != me && peer.public_key != me)
            .map(|(_, peer)| TailnetPeer::from_status(peer, &users))
            .collect();
        // The peer map is a hash map: sort so that the same tailnet gives the same list.
        peers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.stable_id.cmp(&b.stable_id)));
        Ok(peers)
    }

    /// Who is behind `addr` (an inbound connection's remote address): the tailnet node with that
    /// IP, or `Ok(None)` when tailscaled knows no node there (a connection from outside the
    /// tailnet). tailscaled matches on the IP; the port is passed along as it asks.
    ///
    /// `Ok(None)` covers every non-200 answer, because the LocalAPI client does not expose the
    /// status code: tailscaled's 404 "no match for IP:port", but also a 403 on a socket this user
    /// may not read. Either way the caller should refuse the connection (a misconfigured socket
    /// also shows up as [`peers`](Self::peers) failing). `Err(Unavailable)` means tailscaled could
    /// not be asked at all (unreachable, timed out, unreadable answer); refuse then too.
    pub async fn whois(&self, addr: SocketAddr) -> Result<Option<TailnetPeer>, DiscoveryError> {
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d, which tailscaled would not
        // match; rebuilding the address also drops IPv6 scope ids and flow labels.
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        match self.within("whois", self.api.whois(addr)).await? {
            Ok(whois) => Ok(Some(TailnetPeer::from_whois(whois))),
            Err(LocalApiError::UnprocessableEntity) => Ok(None),
            Err(e) => Err(self.unavailable("whois", &e)),
        }
    }

    /// A TLS certificate for this node from tailscaled (`GET /localapi/v0/cert/<domain>?type=pair`,
    /// which has tailscaled obtain or renew it): for `domain`, else the first of the status's
    /// `CertDomains` (this node's MagicDNS name when the tailnet has HTTPS certificates enabled).
    ///
    /// Fails with [`DiscoveryError::Unavailable`] when tailscaled cannot be asked, names no cert
    /// domain, or refuses (HTTPS certificates disabled on the tailnet, a domain not this node's).
    pub async fn certificate(&self, domain: Option<&str>) -> Result<TailnetCertificate, DiscoveryError> {
        let domain = match domain {
            Some(d) => d.to_string(),
            None => {
                let status = self
                    .within("status", self.api.status())
                    .await?
                    .map_err(|e| self.unavailable("status", &e))?;
                status.cert_domains.into_iter().next().ok_or_else(|| {
                    DiscoveryError::Unavailable(format!(
                        "tailscaled at {} names no certificate domain: enable HTTPS certificates for the \
                         tailnet, or set [api] tls_domain",
                        self.socket.display()
                    ))
                })?
            }
        };
        let (key, chain) = self
            .within("cert", self.api.certificate_pair(&domain))
            .await?
            .map_err(|e| self.unavailable(&format!("cert for {domain}"), &e))?;
        Ok(TailnetCertificate { chain_der: chain.into_iter().map(|c| c.0).collect(), key_der: key.0, domain })
    }

    async fn within<T>(
        &self,
        what: &str,
        call: impl Future<Output = tailscale_localapi::Result<T>>,
    ) -> Result<tailscale_localapi::Result<T>, DiscoveryError> {
        tokio::time::timeout(self.timeout, call).await.map_err(|_| {
            DiscoveryError::Unavailable(format!(
                "tailscaled LocalAPI at {} did not answer {what} within {:?}",
                self.socket.display(),
                self.timeout
            ))
        })
    }

    /// A message that says what to check; the LocalAPI crate's own texts are terse.
    fn unavailable(&self, what: &str, e: &LocalApiError) -> DiscoveryError {
        let socket = self.socket.display();
        DiscoveryError::Unavailable(match e {
            LocalApiError::IoError(io) => format!(
                "cannot reach tailscaled LocalAPI at {socket}: {io} \
                 (is tailscaled running, and may this user open its socket?)"
            ),
            LocalApiError::UnprocessableEntity => {
                format!("tailscaled LocalAPI at {socket} refused the {what} request")
            }
            LocalApiError::ParsingError(json) => {
                format!("tailscaled LocalAPI at {socket} sent a {what} answer that could not be read: {json}")
            }
            other => {
                let cause = std::error::Error::source(other).map(|c| format!(": {c}")).unwrap_or_default();
                format!("{what} request to tailscaled LocalAPI at {socket} failed: {other}{cause}")
            }
        })
    }
}

/// A certificate tailscaled issued for this node.
#[derive(Clone, PartialEq, Eq)]
pub struct TailnetCertificate {
    /// The name it is for (`node.tailnet.ts.net`).
    pub domain: String,
    /// The certificate chain, leaf first, DER.
    pub chain_der: Vec<Vec<u8>>,
    /// The private key, DER (PKCS#8, SEC1 or PKCS#1, as tailscaled wrote it).
    pub key_der: Vec<u8>,
}

impl fmt::Debug for TailnetCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("TailnetCertificate")
            .field("domain", &self.domain)
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

/// Reports the tailnet's online peers that carry the mesh tag, at their Tailscale addresses on the
/// mesh port. The peer id is left unknown: the node learns it when the connection is made.
#[derive(Debug)]
pub struct TailscaleSource {
    config: TailscaleConfig,
    client: TailscaleClient,
    /// Failures in a row, to retry sooner than `refresh` while tailscaled is away.
    failures: u32,
}

impl TailscaleSource {
    /// The first retry after a failure; each further failure doubles it, up to `refresh`.
    pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

    /// A source for `config`. Fails with [`DiscoveryError::InvalidEntry`] if the tag is not a valid
    /// ACL tag (`tag:` then a letter, then letters, digits or dashes), which would match no node.
    pub fn new(config: TailscaleConfig) -> Result<Self, DiscoveryError> {
        check_tag(&config.tag).map_err(|reason| DiscoveryError::InvalidEntry {
            entry: config.tag.clone(),
            reason: reason.into(),
        })?;
        let client = TailscaleClient::new(&config.socket);
        Ok(Self { config, client, failures: 0 })
    }

    /// A client of the same tailscaled, for the node's whois check of inbound connections.
    pub fn client(&self) -> TailscaleClient {
        self.client.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &TailscaleConfig {
        &self.config
    }

    fn report(&self, peers: Vec<TailnetPeer>) -> Vec<Discovered> {
        peers
            .into_iter()
            .filter(|p| p.online == Some(true) && p.has_tag(&self.config.tag))
            .map(|p| p.multiaddrs(self.config.port))
            .filter(|addrs| !addrs.is_empty())
            .map(|addrs| Discovered { peer: None, addrs })
            .collect()
    }
}

impl Source for TailscaleSource {
    fn name(&self) -> &'static str {
        "tailscale"
    }

    fn discover(&mut self) -> BoxFuture<'_, Result<Vec<Discovered>, DiscoveryError>> {
        Box::pin(async move {
            match self.client.peers().await {
                Ok(peers) => {
                    self.failures = 0;
                    let found = self.report(peers);
                    tracing::debug!(peers = found.len(), "tailscale: tagged online peers");
                    Ok(found)
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    Err(e)
                }
            }
        })
    }

    fn refresh_interval(&self) -> Duration {
        if self.failures == 0 {
            return self.config.refresh;
        }
        // 1 s, 2 s, 4 s, … so a restarted tailscaled is noticed quickly without a log line a second.
        let backoff = Self::RETRY_AFTER_FAILURE.saturating_mul(1 << (self.failures - 1).min(16));
        backoff.min(self.config.refresh)
    }
}

/// Tailscale's rule for ACL tags (tailcfg.CheckTag).
fn check_tag(tag: &str) -> Result<(), &'static str> {
    let name = tag.strip_prefix("tag:").ok_or("tags must start with 'tag:'")?;
    let first = name.bytes().next().ok_or("tag names must not be empty")?;
    if !first.is_ascii_alphabetic() {
        return Err("tag names must start with a letter, after 'tag:'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("tag names can only contain numbers, letters, or dashes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::tailscale::{FakeNode, LocalApiFixture};

    const TAG: &str = "tag:orgmesh";

    fn config(socket: &Path) -> TailscaleConfig {
        TailscaleConfig { socket: socket.to_path_buf(), ..TailscaleConfig::default() }
    }

    async fn mesh_fixture(dir: &Path) -> LocalApiFixture {
        let me = FakeNode::numbered("org-a", 1).with_tag(TAG);
        LocalApiFixture::start(dir.join("tailscaled.sock"), me).await.expect("start fixture")
    }

    fn addrs(found: &[Discovered]) -> Vec<Vec<String>> {
        found.iter().map(|d| d.addrs.clone()).collect()
    }

    #[tokio::test]
    async fn reports_online_tagged_peers_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fx = mesh_fixture(dir.path()).await;
        fx.set_peers([
            FakeNode::numbered("org-b", 2).with_tag(TAG),
            FakeNode::numbered("org-c", 3).with_tag(TAG).offline(),
            FakeNode::numbered("laptop", 4),
            FakeNode::numbered("db", 5).with_tag("tag:prod"),
            FakeNode::new("org-d", ["100.64.0.6".parse().expect("ip")]).with_tag("tag:prod").with_tag(TAG),
        ]);
        let mut source =
            TailscaleSource::new(TailscaleConfig { port: 7100, ..config(fx.socket()) }).expect("source");
        let found = source.discover().await.expect("discover");
        assert!(found.iter().all(|d| d.peer.is_none()));
        assert_eq!(
            addrs(&found),
            vec![
                vec!["/ip4/100.64.0.2/tcp/7100".to_string(), "/ip6/fd7a:115c:a1e0::2/tcp/7100".to_string()],
                vec!["/ip4/100.64.0.6/tcp/7100".to_string()],
            ]
        );
        assert_eq!(source.refresh_interval(), TailscaleConfig::DEFAULT_REFRESH);
    }

    #[tokio::test]
    async fn peers_come_and_go_between_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fx = mesh_fixture(dir.path()).await;
        let mut source = TailscaleSource::new(config(fx.socket())).expect("source");
        assert_eq!(source.discover().await.expect("discover"), vec![]);

        fx.add_peer(FakeNode::numbered("org-b", 2).with_tag(TAG));
        let b = vec!["/ip4/100.64.0.2/tcp/7000".to_string(), "/ip6/fd7a:115c:a1e0::2/tcp/7000".to_string()];
        assert_eq!(addrs(&source.discover().await.expect("discover")), vec![b.clone()]);

        assert!(fx.set_online("org-b", false));
        assert_eq!(source.discover().await.expect("discover"), vec![]);
        assert!(fx.set_online("org-b", true));
        assert_eq!(addrs(&source.discover().await.expect("discover")), vec![b.clone()]);

        assert!(fx.set_tags("org-b", ["tag:other"]));
        assert_eq!(source.discover().await.expect("discover"), vec![]);
        assert!(fx.set_tags("org-b", [TAG]));
        assert_eq!(addrs(&source.discover().await.expect("discover")), vec![b]);

        assert!(fx.remove_peer("org-b"));
        assert_eq!(source.discover().await.expect("discover"), vec![]);
    }

    #[tokio::test]
    async fn unreachable_localapi_is_unavailable_and_retried_sooner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("tailscaled.sock");
        let mut source = TailscaleSource::new(config(&socket)).expect("source");

        let err = source.discover().await.expect_err("nobody listens");
        let DiscoveryError::Unavailable(message) = err else { panic!("want Unavailable, got {err:?}") };
        assert!(
            message.contains("cannot reach tailscaled") && message.contains(&socket.display().to_string()),
            "{message}"
        );
        assert_eq!(source.refresh_interval(), Duration::from_secs(1));
        assert!(source.discover().await.is_err());
        assert_eq!(source.refresh_interval(), Duration::from_secs(2));
        for _ in 0..10 {
            assert!(source.discover().await.is_err());
        }
        assert_eq!(source.refresh_interval(), TailscaleConfig::DEFAULT_REFRESH, "capped by refresh");

        // tailscaled comes (back) up: the next call works and the normal interval returns.
        let fx = LocalApiFixture::start(&socket, FakeNode::numbered("org-a", 1).with_tag(TAG))
            .await
            .expect("fixture");
        fx.add_peer(FakeNode::numbered("org-b", 2).with_tag(TAG));
        assert_eq!(source.discover().await.expect("discover").len(), 1);
        assert_eq!(source.refresh_interval(), TailscaleConfig::DEFAULT_REFRESH);

        // And goes away again.
        fx.stop().await;
        assert!(matches!(source.discover().await, Err(DiscoveryError::Unavailable(_))));
    }

    #[tokio::test]
    async fn hung_or_garbled_localapi_is_unavailable() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().expect("tempdir");

        // Accepts nothing: the request sits in the backlog and no answer ever comes.
        let hung = dir.path().join("hung.sock");
        let _listener = tokio::net::UnixListener::bind(&hung).expect("bind");
        let client = TailscaleClient::new(&hung).with_timeout(Duration::from_millis(200));
        let err = client.peers().await.expect_err("no answer");
        assert!(err.to_string().contains("did not answer status"), "{err}");
        assert!(client.whois("100.64.0.2:1".parse().expect("addr")).await.is_err());

        // Answers 200 with something that is not a status.
        let garbled = dir.path().join("garbled.sock");
        let listener = tokio::net::UnixListener::bind(&garbled).expect("bind");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let body = "{\"Version\": 1}";
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        let mut source = TailscaleSource::new(config(&garbled)).expect("source");
        let err = source.discover().await.expect_err("garbled");
        assert!(err.to_string().contains("could not be read"), "{err}");
    }

    #[tokio::test]
    async fn logged_out_tailscaled_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fx = mesh_fixture(dir.path()).await;
        fx.add_peer(FakeNode::numbered("org-b", 2).with_tag(TAG));
        fx.set_backend_state("NeedsLogin");
        let mut source = TailscaleSource::new(config(fx.socket())).expect("source");
        let err = source.discover().await.expect_err("not running");
        assert!(err.to_string().contains("NeedsLogin"), "{err}");
    }

    #[tokio::test]
    async fn peers_lists_everyone_but_self() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fx = mesh_fixture(dir.path()).await;
        fx.set_peers([
            FakeNode::numbered("org-b", 2).with_tag(TAG).offline(),
            FakeNode::numbered("laptop", 4),
        ]);
        let peers = TailscaleClient::new(fx.socket()).peers().await.expect("peers");
        let names: Vec<&str> = peers.iter().map(|p| p.host_name.as_str()).collect();
        assert_eq!(names, ["laptop", "org-b"]);
        assert_eq!(peers[1].name, "org-b.tail0f1x7.ts.net");
        assert_eq!(peers[1].online, Some(false));
        assert_eq!(peers[1].login, "tagged-devices");
        assert_eq!(peers[0].login, "admin@example.com");
    }

    #[tokio::test]
    async fn whois_names_the_node_and_its_tags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fx = mesh_fixture(dir.path()).await;
        fx.set_peers([FakeNode::numbered("org-b", 2).with_tag(TAG), FakeNode::numbered("laptop", 4)]);
        let source = TailscaleSource::new(config(fx.socket())).expect("source");
        let client = source.client();

        let b = client.whois("100.64.0.2:51234".parse().expect("addr")).await.expect("whois").expect("known");
        assert_eq!(b.name, "org-b.tail0f1x7.ts.net");
        assert_eq!(b.host_name, "org-b");
        assert!(b.has_tag(TAG));
        assert_eq!(b.online, Some(true));
        assert_eq!(b.ips.len(), 2);

        // IPv6, and IPv4 seen through a dual-stack socket.
        let v6 = client.whois("[fd7a:115c:a1e0::2]:7000".parse().expect("addr")).await.expect("whois");
        assert!(v6.is_some_and(|p| p.has_tag(TAG)));
        let mapped = client.whois("[::ffff:100.64.0.2]:7000".parse().expect("addr")).await.expect("whois");
        assert_eq!(mapped.map(|p| p.host_name), Some("org-b".to_string()));

        let laptop =
            client.whois("100.64.0.4:7000".parse().expect("addr")).await.expect("whois").expect("known");
        assert!(!laptop.has_tag(TAG));

        assert_eq!(client.whois("100.99.9.9:7000".parse().expect("addr")).await, Ok(None));
        assert_eq!(client.whois("127.0.0.1:7000".parse().expect("addr")).await, Ok(None));

        fx.stop().await;
        let down = client.whois("100.64.0.2:7000".parse().expect("addr")).await;
        assert!(matches!(down, Err(DiscoveryError::Unavailable(_))), "{down:?}");
    }

    #[tokio::test]
    async fn certificate_pair_comes_from_the_cert_domain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fx = mesh_fixture(dir.path()).await;
        let client = TailscaleClient::new(fx.socket());
        // HTTPS certificates not enabled: no cert domain, and the endpoint refuses.
        let none = client.certificate(None).await;
        assert!(
            matches!(&none, Err(DiscoveryError::Unavailable(m)) if m.contains("no certificate domain")),
            "{none:?}"
        );
        let refused = client.certificate(Some("org-a.tail0f1x7.ts.net")).await;
        assert!(matches!(refused, Err(DiscoveryError::Unavailable(_))), "{refused:?}");

        // Base64 of three zero bytes: the client passes DER through untouched.
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                   -----BEGIN PRIVATE KEY-----\nAAAB\n-----END PRIVATE KEY-----\n";
        fx.set_cert("org-a.tail0f1x7.ts.net", pem);
        let cert = client.certificate(None).await.expect("certificate");
        assert_eq!(cert.domain, "org-a.tail0f1x7.ts.net");
        assert_eq!(cert.chain_der, vec![vec![0u8, 0, 0]]);
        assert_eq!(cert.key_der, vec![0u8, 0, 1]);
        assert!(!format!("{cert:?}").contains("key_der"), "Debug must not print the key");
        let other = client.certificate(Some("elsewhere.example.com")).await;
        assert!(matches!(other, Err(DiscoveryError::Unavailable(_))), "{other:?}");
    }

    #[test]
    fn rejects_tags_that_match_nothing() {
        for bad in ["orgmesh", "tag:", "tag:1mesh", "tag:org_mesh", "tag:org mesh"] {
            let err = TailscaleSource::new(TailscaleConfig { tag: bad.into(), ..TailscaleConfig::default() });
            assert!(matches!(err, Err(DiscoveryError::InvalidEntry { .. })), "{bad}");
        }
        assert!(
            TailscaleSource::new(TailscaleConfig {
                tag: "tag:org-mesh-2".into(),
                ..TailscaleConfig::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn multiaddrs_per_family() {
        let p = TailnetPeer {
            stable_id: String::new(),
            name: "x".into(),
            host_name: "x".into(),
            tags: vec![],
            ips: vec!["100.64.0.9".parse().expect("ip"), "fd7a:115c:a1e0::9".parse().expect("ip")],
            online: Some(true),
            login: String::new(),
        };
        assert_eq!(p.multiaddrs(1), ["/ip4/100.64.0.9/tcp/1", "/ip6/fd7a:115c:a1e0::9/tcp/1"]);
    }
}
