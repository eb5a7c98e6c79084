//! The `[section]` types of `orgmesh.toml`, each with the default a node runs with when the
//! file leaves it out. Plain data: never reads files or the environment beyond the machine facts
//! a default needs, and never checks ranges (that is `validate`'s).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orgmesh_protocol::settings::millis;

use serde::{Deserialize, Serialize};

/// `[node]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// This node's org (one node per org).
    pub org: String,
    /// A human name; defaults to the org.
    pub name: Option<String>,
    /// Where redb, the identity key and task working dirs live.
    pub data_dir: PathBuf,
    /// Labels matched by `constraints.node_labels`.
    pub labels: BTreeMap<String, String>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self { org: default_org(), name: None, data_dir: PathBuf::from("."), labels: BTreeMap::new() }
    }
}

fn default_org() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let org: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    if org.is_empty() { "default".into() } else { org }
}

/// `[p2p]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pSection {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Extra multiaddrs to advertise (e.g. a NAT's public address).
    pub external_addrs: Vec<String>,
    /// Peers to contact at start: multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// The node's ed25519 key (protobuf encoding), relative to `data_dir`.
    pub identity_file: PathBuf,
}

impl Default for P2pSection {
    fn default() -> Self {
        Self {
            // Loopback until a trust source says who may connect from beyond it.
            listen: vec!["/ip4/127.0.0.1/tcp/7000".into()],
            external_addrs: Vec::new(),
            bootstrap: Vec::new(),
            identity_file: PathBuf::from("identity.key"),
        }
    }
}

/// `[api]`: where the REST API listens and who may call it (see `docs/security.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Where the REST API listens; loopback by default.
    pub addr: SocketAddr,
    /// Tokenless requests get every scope, as `anonymous@loopback`, when `addr` is a loopback
    /// address. Never opens a non-loopback API.
    pub open_on_loopback: bool,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open), milliseconds.
    pub header_timeout_ms: u64,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Sustained requests per second per token (per client IP for tokenless callers).
    pub rate_per_s: u32,
    /// Requests at once per token (per client IP for tokenless callers).
    pub burst: u32,
    /// Browser origins allowed to call the API (CORS), e.g. `https://dash.example.com`.
    pub cors_origins: Vec<String>,
    /// `"tailscale"`: serve HTTPS with a certificate from tailscaled (socket of
    /// `[discovery.tailscale]`, else the default). Unset: HTTPS only if `tls_cert` is set.
    pub tls: Option<String>,
    /// PEM certificate chain for HTTPS, relative to the config file.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS, relative to the config file.
    pub tls_key: Option<PathBuf>,
    /// With `tls = "tailscale"`: the domain to ask a certificate for (default: tailscaled's
    /// first cert domain, this node's MagicDNS name).
    pub tls_domain: Option<String>,
    /// Bearer tokens, stored as SHA-256 (`orgmesh token create` prints an entry). Not written
    /// when empty, so `[[api.tokens]]` entries can be appended to the file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<ApiToken>,
    /// A file of more `[[tokens]]` entries (the same fields as `[[api.tokens]]`), relative to
    /// the config file: how a Kubernetes Secret or a Docker secret hands a node its tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            open_on_loopback: true,
            max_body_bytes: orgmesh_api::MAX_BODY_BYTES,
            header_timeout_ms: 10_000,
            max_connections: 16_384,
            // High enough for scripts and the 2,000 tasks/s throughput target; a limit is for
            // a runaway client, not for normal use.
            rate_per_s: 2000,
            burst: 4000,
            cors_origins: Vec::new(),
            tls: None,
            tls_cert: None,
            tls_key: None,
            tls_domain: None,
            tokens: Vec::new(),
            tokens_file: None,
        }
    }
}

/// `[[api.tokens]]`: one bearer token, kept only as its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it; recorded as the actor of what it does.
    pub name: String,
    /// `read`, `submit`, `admin` (admin implies the others).
    pub scopes: Vec<String>,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

/// How the API serves HTTPS, resolved from `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTls {
    /// Plain HTTP.
    Off,
    /// PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A certificate from tailscaled's LocalAPI.
    Tailscale {
        /// tailscaled's socket.
        socket: PathBuf,
        /// The domain, if not tailscaled's first cert domain.
        domain: Option<String>,
    },
}

/// `[capacity]`: what this node offers; unset values come from the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacitySection {
    /// Concurrent tasks.
    pub slots: u32,
    /// CPU in thousandths of a core; default: every core.
    pub cpu_millis: Option<u32>,
    /// Memory in MiB; default: the machine's.
    pub memory_mb: Option<u64>,
    /// GPUs.
    pub gpus: u32,
}

impl Default for CapacitySection {
    fn default() -> Self {
        Self { slots: 4, cpu_millis: None, memory_mb: None, gpus: 0 }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Orgs (or node peer ids) whose tasks this node runs; empty means every org in the mesh.
    pub accept_from: Vec<String>,
}

/// `[trust]`: who may be part of this node's mesh at all.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSection {
    /// The mesh's pre-shared key file (libp2p private network, `swarm.key` format), relative to
    /// the config file. A node without the same key cannot complete a connection.
    pub mesh_key_file: Option<PathBuf>,
    /// Peer ids allowed to connect and to appear in this node's view; empty means anyone who can
    /// connect (with the mesh key, if one is set).
    pub trusted_peers: Vec<String>,
    /// Which peer ids may claim which org (`acme = ["12D3KooW..."]`); orgs not listed may be
    /// claimed by anyone trusted.
    pub orgs: BTreeMap<String, Vec<String>>,
}

/// `[discovery]`: peer sources besides the static bootstrap list; each is off until configured.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySection {
    /// Tailscale / Headscale through the local tailscaled's LocalAPI.
    pub tailscale: Option<TailscaleSection>,
    /// DNS SRV records `_orgmesh._tcp.<domain>` with `peer_id=` TXT records at their targets.
    pub dns: Option<DnsSection>,
    /// mDNS on the local network (off by default: a LAN is rarely where other orgs are).
    pub mdns: bool,
}

/// `[discovery.tailscale]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailscaleSection {
    /// tailscaled's LocalAPI socket.
    pub socket: PathBuf,
    /// Only tailnet nodes with this tag are peers.
    pub tag: String,
    /// The mesh's p2p port on every tailnet node; default: this node's own p2p port.
    pub port: Option<u16>,
    /// Seconds between two reads of the tailnet's status.
    pub refresh_s: u64,
    /// Check every inbound connection with `whois`: a tailnet node without the tag is refused.
    pub verify_inbound: bool,
}

impl Default for TailscaleSection {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/var/run/tailscale/tailscaled.sock"),
            tag: "tag:orgmesh".into(),
            port: None,
            refresh_s: 10,
            verify_inbound: true,
        }
    }
}

/// `[discovery.dns]`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// The mesh's domain: SRV records live at `_orgmesh._tcp.<domain>`.
    pub domain: String,
    /// Name servers (`IP:port`); empty means the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Never re-resolve faster than this many seconds, whatever the TTLs say.
    pub min_refresh_s: Option<u64>,
}

/// `[limits]`: what one peer may ask of this node before it is throttled and then banned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Sustained inbound requests per second per peer.
    pub peer_requests_per_s: u32,
    /// Burst of inbound requests per peer.
    pub peer_burst: u32,
    /// Seconds a misbehaving peer is banned at first; doubles at each repeat, up to an hour.
    pub ban_s: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self { peer_requests_per_s: 5_000, peer_burst: 20_000, ban_s: 30 }
    }
}

/// `[tasks]`: how placed attempts are kept alive, and how a stopping node lets go of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksSection {
    /// Milliseconds between two lease renewals by an executing node.
    pub lease_renew_ms: u64,
    /// Milliseconds without a renewal before a task shows `unreachable` (its spec's
    /// `replace_after_s` then decides when it is placed elsewhere).
    pub lease_ttl_ms: u64,
    /// Seconds a stopping node (SIGTERM) lets running attempts finish before handing them back.
    pub stop_grace_s: u64,
    /// Seconds past a task's `timeout_s` after which this node, as its origin, gives up an
    /// attempt that has not finished, whatever the host says.
    pub overdue_grace_s: u64,
    /// Seconds after placement within which a host must report an attempt `Started`; this node,
    /// as origin, gives up an attempt renewed past it without starting (0: never).
    pub start_within_s: u64,
}

impl Default for TasksSection {
    fn default() -> Self {
        let engine = orgmesh_protocol::lifecycle::LeaseConfig::default();
        Self {
            lease_renew_ms: millis(engine.renew_every),
            lease_ttl_ms: millis(engine.ttl),
            stop_grace_s: 30,
            overdue_grace_s: engine.overdue_grace.as_secs(),
            start_within_s: engine.start_within.as_secs(),
        }
    }
}

impl TasksSection {
    /// The leases this node keeps as an origin, and the renewals it sends as a host.
    pub fn leases(&self) -> orgmesh_protocol::lifecycle::LeaseConfig {
        orgmesh_protocol::lifecycle::LeaseConfig {
            renew_every: Duration::from_millis(self.lease_renew_ms),
            ttl: Duration::from_millis(self.lease_ttl_ms),
            // Half the ttl: a gap that long would have cost the hosts half their lease.
            stall_after: Duration::from_millis(self.lease_ttl_ms / 2),
            overdue_grace: Duration::from_secs(self.overdue_grace_s),
            start_within: Duration::from_secs(self.start_within_s),
        }
    }
}

/// `[executor]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSection {
    /// Where each attempt gets its own working directory, relative to `data_dir`.
    pub work_dir: PathBuf,
    /// Seconds between SIGTERM and SIGKILL when a task is cancelled or times out.
    pub kill_grace_s: u64,
    /// `process` (the default) runs each attempt as a child process; `noop` runs nothing and
    /// succeeds at once, for benchmarks and simulations only.
    pub kind: crate::executor::ExecutorKind,
    /// `sandbox` (the default): every attempt runs confined (see docs/security.md); a host that
    /// cannot build the sandbox refuses other orgs' work. `none`: attempts run as the node's own
    /// user, unconfined, an explicit choice of the admin.
    pub isolation: crate::sandbox::Isolation,
    /// What a sandboxed attempt's network reaches: `none` (loopback of its own only),
    /// `outbound` (routes out through slirp4netns, but not to the host's loopback) or `host`.
    pub network: crate::sandbox::NetworkMode,
    /// First of the uids (and gids) handed to sandboxed attempts, one per running attempt.
    pub sandbox_uid_base: u32,
    /// How many uids from `sandbox_uid_base` on: at most this many attempts run at once.
    pub sandbox_uid_count: u32,
    /// Most processes and threads of one sandboxed attempt.
    pub pids_max: u32,
    /// Size cap of a sandboxed attempt's work dir (and of its `/tmp`), MiB.
    pub work_dir_max_mb: u64,
    /// Most output kept of one attempt, and stored of one task, MiB; a log cut there ends with
    /// a marker saying so.
    pub output_cap_mb: u64,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// The `setpriv` binary (util-linux).
    pub setpriv: PathBuf,
    /// The slirp4netns binary, for network `outbound`.
    pub slirp4netns: PathBuf,
}

impl Default for ExecutorSection {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from("work"),
            kill_grace_s: 5,
            kind: crate::executor::ExecutorKind::Process,
            isolation: crate::sandbox::Isolation::Sandbox,
            network: crate::sandbox::NetworkMode::None,
            sandbox_uid_base: 200_000,
            sandbox_uid_count: 65_536,
            pids_max: 512,
            work_dir_max_mb: 1024,
            output_cap_mb: crate::output_cap::DEFAULT_OUTPUT_CAP_MB,
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            setpriv: PathBuf::from("/usr/bin/setpriv"),
            slirp4netns: PathBuf::from("/usr/bin/slirp4netns"),
        }
    }
}
