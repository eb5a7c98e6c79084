//! `orgmesh.toml`: every setting of a node, with defaults good enough that `orgmesh up` runs with
//! no file at all, and `ORGMESH_*` environment overrides on top. Paths in the file are relative to
//! the file's directory. Never reads anything but the file and the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orgmesh_protocol::settings::{GossipSettings, PlacementSettings, millis};

use serde::{Deserialize, Serialize};

/// Why a node refuses to start with a configuration that loaded (see [`Config::security`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// A token entry is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API's policy cannot be built: a non-loopback API without tokens, or two tokens of one
    /// name.
    #[error(transparent)]
    Api(#[from] orgmesh_api::SecurityError),
    /// The p2p listener is reachable beyond loopback and nothing decides who may connect; the
    /// message names the fixes.
    #[error("{0}")]
    OpenP2p(String),
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed (from the file or an `ORGMESH_*` variable).
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The key or variable.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// One `[[api.tokens]]` or tokens-file entry, checked: a name, known scopes, 64 hex digits.
/// The one place both sources are checked, so they cannot drift apart.
fn check_token(t: &ApiToken) -> Result<orgmesh_api::TokenEntry, String> {
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

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Who this node is.
    pub node: NodeSection,
    /// The libp2p side.
    pub p2p: P2pSection,
    /// The local REST API.
    pub api: ApiSection,
    /// What this node offers.
    pub capacity: CapacitySection,
    /// Whose work this node runs.
    pub policy: PolicySection,
    /// Gossip and failure-detection timing.
    pub gossip: GossipSettings,
    /// Placement negotiation timing.
    pub placement: PlacementSettings,
    /// Leases on placed attempts, and graceful stop.
    pub tasks: TasksSection,
    /// How tasks run here.
    pub executor: ExecutorSection,
    /// Who may join and connect.
    pub trust: TrustSection,
    /// Limits on what one peer may ask of this node.
    pub limits: LimitsSection,
    /// Where to find peers besides `p2p.bootstrap`.
    pub discovery: DiscoverySection,
    /// Where the file was loaded from (not a TOML key).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

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
}

impl Default for TasksSection {
    fn default() -> Self {
        let engine = orgmesh_protocol::lifecycle::LeaseConfig::default();
        Self {
            lease_renew_ms: millis(engine.renew_every),
            lease_ttl_ms: millis(engine.ttl),
            stop_grace_s: 30,
            overdue_grace_s: engine.overdue_grace.as_secs(),
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
    /// Loads `path` if given (else defaults with `./orgmesh-data` as data dir), then applies
    /// `ORGMESH_*` overrides from `env`.
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                let mut config = Config::parse(&text)
                    .map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?;
                config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                config
            }
            None => {
                let mut config = Config::default();
                config.node.data_dir = PathBuf::from("orgmesh-data");
                config
            }
        };
        config.apply_env(env)?;
        config.read_tokens_file()?;
        config.validate()?;
        Ok(config)
    }

    /// Adds the entries of `api.tokens_file` to `api.tokens`.
    fn read_tokens_file(&mut self) -> Result<(), ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TokensFile {
            #[serde(default)]
            tokens: Vec<ApiToken>,
        }
        let Some(file) = &self.api.tokens_file else { return Ok(()) };
        let path = self.base_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        // Not toml's own message: it quotes the offending line, and a token pasted here in the
        // clear would end up in the log. The line number and a value-free reason are enough.
        let parsed: TokensFile = toml::from_str(&text).map_err(|e| {
            let line =
                e.span().map_or(0, |span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let reason =
                if e.message().contains(['"', '\'']) { "a value of the wrong type" } else { e.message() };
            ConfigError::Parse {
                path: path.clone(),
                message: format!(
                    "line {line}: {reason} (the file holds [[tokens]] entries with name, scopes and sha256)"
                ),
            }
        })?;
        // Checked here as well as by `api_tokens`, so a bad entry is named by its file and
        // position, not as one of `api.tokens` that orgmesh.toml does not contain.
        let key = || format!("api.tokens_file {}", path.display());
        if parsed.tokens.is_empty() {
            // An empty mount (a Secret with the wrong key, a credential never filled in) would
            // otherwise surface as "a public API needs tokens", pointing away from the file.
            return Err(ConfigError::Invalid {
                key: key(),
                message: "the file has no [[tokens]] entries".into(),
            });
        }
        for (i, token) in parsed.tokens.iter().enumerate() {
            check_token(token).map_err(|message| ConfigError::Invalid {
                key: key(),
                message: format!("entry {}: {message}", i + 1),
            })?;
        }
        self.api.tokens.extend(parsed.tokens);
        Ok(())
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Parses and validates TOML text as `up` would, without files or environment (for `init`'s
    /// output checks and the fuzzer).
    pub fn parse_and_validate(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text)
            .map_err(|message| ConfigError::Parse { path: PathBuf::from("<text>"), message })?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
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

    /// The data directory, resolved against the config file's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join(&self.node.data_dir)
    }

    /// The node's name.
    pub fn name(&self) -> String {
        self.node.name.clone().unwrap_or_else(|| self.node.org.clone())
    }

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.data_dir().join(&self.p2p.identity_file)
    }

    /// The mesh key file, resolved against the config file's directory.
    pub fn mesh_key_path(&self) -> Option<PathBuf> {
        self.trust.mesh_key_file.as_ref().map(|p| self.base_dir.join(p))
    }

    /// Serializes as TOML (for `orgmesh init`), with the loopback rule explained where it is set.
    pub fn to_toml(&self) -> String {
        let text = toml::to_string_pretty(self).unwrap_or_default();
        let key = format!("open_on_loopback = {}", self.api.open_on_loopback);
        text.replacen(&key, &format!("{LOOPBACK_COMMENT}{key}"), 1)
    }
}

/// What `orgmesh init` writes above `open_on_loopback`.
const LOOPBACK_COMMENT: &str = "\
# Tokenless requests get every scope (as \"anonymous@loopback\") while the API listens on a
# loopback address. Set to false to require a token for everything but /healthz and /readyz.
# A non-loopback API always needs tokens: create one with `orgmesh token create`.
";

/// Parses `K=V` pairs.
pub fn parse_labels(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{p:?} is not KEY=VALUE")),
        })
        .collect()
}

/// CPU and memory of this machine, for capacity defaults.
pub fn machine_resources() -> (u32, u64) {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024);
    (cpus * 1000, mem_mb)
}

#[cfg(test)]
mod tests {
    use orgmesh_protocol::lifecycle::LeaseConfig;
    use orgmesh_protocol::membership::MembershipConfig;
    use orgmesh_protocol::settings::{GossipSettings, PlacementSettings};

    /// The node ships the protocol's defaults (the protocol's own test covers the gossip and
    /// placement settings' translation); a lease default changed on one side only fails here.
    #[test]
    fn the_default_config_is_the_protocols_defaults() {
        let config = Config::default();
        assert_eq!(config.gossip, GossipSettings::default());
        assert_eq!(config.placement, PlacementSettings::default());
        assert_eq!(config.tasks.leases(), LeaseConfig::default());
    }

    #[test]
    fn a_gossip_fanout_of_zero_is_refused() {
        let config: Config = toml::from_str("[gossip]\nfanout = 0\n").expect("parses");
        let err = config.validate().expect_err("a mesh that never gossips");
        assert!(err.to_string().contains("gossip.fanout"), "{err}");
    }

    #[test]
    fn the_file_reaches_the_state_machines() {
        let config: Config = toml::from_str(
            "[gossip]\ninterval_ms = 200\nfanout = 4\nsuspect_after_ms = 900\ndead_after_ms = 1300\n\
             [placement]\nfanout = 5\nbid_timeout_ms = 700\ncommit_timeout_ms = 1100\nreservation_ttl_ms = 4000\n\
             [tasks]\nlease_renew_ms = 300\nlease_ttl_ms = 1000\noverdue_grace_s = 7\n",
        )
        .expect("a valid file");
        let m: MembershipConfig = config.gossip.to_config();
        assert_eq!(
            (m.gossip_interval, m.fanout, m.suspect_after, m.dead_after),
            (Duration::from_millis(200), 4, Duration::from_millis(900), Duration::from_millis(1300))
        );
        let p = config.placement.to_config();
        assert_eq!(
            (p.fanout, p.bid_timeout, p.commit_timeout),
            (5, Duration::from_millis(700), Duration::from_millis(1100))
        );
        assert_eq!(config.placement.reservation_ttl(), Duration::from_secs(4));
        let l = config.tasks.leases();
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

    use super::*;

    #[test]
    fn defaults_work_without_a_file() {
        let c = Config::load(None, |_| None).unwrap();
        assert_eq!(c.api.addr.to_string(), "127.0.0.1:7070");
        assert_eq!(c.data_dir(), PathBuf::from("orgmesh-data"));
    }

    #[test]
    fn the_sandbox_network_is_none_outbound_or_host_from_file_or_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orgmesh.toml");
        std::fs::write(&path, "[executor]\nnetwork = \"outbound\"\n").unwrap();
        let c = Config::load(Some(&path), |_| None).unwrap();
        assert_eq!(c.executor.network, crate::sandbox::NetworkMode::Outbound);
        assert_eq!(c.executor.slirp4netns, PathBuf::from("/usr/bin/slirp4netns"));
        let env = |v: &'static str| move |k: &str| (k == "ORGMESH_SANDBOX_NETWORK").then(|| v.to_string());
        let c = Config::load(Some(&path), env("host")).unwrap();
        assert_eq!(c.executor.network, crate::sandbox::NetworkMode::Host);
        let c = Config::load(None, env("outbound")).unwrap();
        assert_eq!(c.executor.network, crate::sandbox::NetworkMode::Outbound);
        assert!(Config::load(None, env("bridge")).is_err());
        std::fs::write(&path, "[executor]\nnetwork = \"everything\"\n").unwrap();
        assert!(Config::load(Some(&path), |_| None).is_err());
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orgmesh.toml");
        std::fs::write(&path, "[node]\norg = \"acme\"\ndata_dir = \"d\"\n[capacity]\nslots = 2\n").unwrap();
        let env = |k: &str| match k {
            "ORGMESH_SLOTS" => Some("7".to_string()),
            "ORGMESH_LABELS" => Some("zone=b,gpu=no".to_string()),
            _ => None,
        };
        let c = Config::load(Some(&path), env).unwrap();
        assert_eq!(c.node.org, "acme");
        assert_eq!(c.capacity.slots, 7);
        assert_eq!(c.node.labels.get("zone").map(String::as_str), Some("b"));
        assert_eq!(c.data_dir(), dir.path().join("d"));
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse("[node]\norgg = \"x\"").unwrap_err();
        assert!(err.contains("orgg"), "{err}");
        let e = Config::load(None, |k| (k == "ORGMESH_ORG").then(|| "Bad Org".to_string())).unwrap_err();
        assert!(e.to_string().contains("node.org"), "{e}");
        // Numbers are parsed as the setting's own type: out of range is an error, not a clamp.
        let e =
            Config::load(None, |k| (k == "ORGMESH_API_RATE_PER_S").then(|| "5000000000".into())).unwrap_err();
        assert!(e.to_string().contains("ORGMESH_API_RATE_PER_S"), "{e}");
        let c = Config::load(None, |k| (k == "ORGMESH_API_BURST").then(|| "17".into())).unwrap();
        assert_eq!(c.api.burst, 17);
    }

    #[test]
    fn toml_round_trip() {
        let c = Config::default();
        let text = c.to_toml();
        let back = Config::parse(&text).unwrap();
        assert_eq!(back.p2p.listen, c.p2p.listen);
        assert!(back.api.open_on_loopback);
        assert!(text.contains("# Tokenless requests get every scope"), "{text}");
    }

    #[test]
    fn api_tokens_and_tls_are_checked() {
        let hash = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let ok = format!(
            "[api]\nopen_on_loopback = false\n[[api.tokens]]\nname = \"ci\"\nscopes = [\"submit\"]\nsha256 = \"{hash}\"\n"
        );
        let c = Config::parse(&ok).unwrap();
        let tokens = c.api_tokens().unwrap();
        assert_eq!(tokens[0].name, "ci");
        assert_eq!(tokens[0].scopes, vec![orgmesh_api::Scope::Submit]);
        assert!(!c.api.open_on_loopback);
        let bad_scope = ok.replace("\"submit\"", "\"root\"");
        assert!(Config::parse(&bad_scope).unwrap().validate().is_err());
        let bad_hash = ok.replace(hash, "abc");
        assert!(Config::parse(&bad_hash).unwrap().validate().is_err());

        let files = Config::parse("[api]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert!(matches!(files.api_tls().unwrap(), ApiTls::Files { .. }));
        assert!(Config::parse("[api]\ntls_cert = \"c.pem\"\n").unwrap().validate().is_err());
        let ts =
            Config::parse("[api]\ntls = \"tailscale\"\n[discovery.tailscale]\nsocket = \"/s\"\n").unwrap();
        assert_eq!(ts.api_tls().unwrap(), ApiTls::Tailscale { socket: PathBuf::from("/s"), domain: None });
        assert!(Config::parse("[api]\ntls = \"acme\"\n").unwrap().validate().is_err());
    }

    #[test]
    fn accept_from_orgs_without_an_attestation_are_listed() {
        let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let text = format!(
            "[policy]\naccept_from = [\"acme\", \"globex\", \"initech\", \"{peer}\"]\n\
             [trust.orgs]\nacme = [\"{peer}\"]\ninitech = []\n"
        );
        assert_eq!(Config::parse(&text).unwrap().unattested_accept_from(), vec!["globex"]);
        assert!(Config::default().unattested_accept_from().is_empty());
    }

    #[test]
    fn security_runs_every_start_check() {
        assert!(Config::default().security().is_ok(), "the defaults start");
        let public_api = Config::parse("[api]\naddr = \"0.0.0.0:7070\"\n").unwrap();
        assert!(matches!(public_api.security(), Err(Refused::Api(_))));
        let open_p2p = Config::parse("[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/7000\"]\n").unwrap();
        let e = open_p2p.security().unwrap_err();
        assert!(matches!(e, Refused::OpenP2p(_)) && e.to_string().contains("ORGMESH_MESH_KEY_FILE"), "{e}");
        let bad_token = "[[api.tokens]]\nname = \"ci\"\nscopes = [\"root\"]\nsha256 = \"00\"\n";
        assert!(matches!(Config::parse(bad_token).unwrap().security(), Err(Refused::Config(_))));
    }

    #[test]
    fn a_p2p_listener_beyond_loopback_needs_a_trust_source() {
        let load = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> =
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Config::load(None, |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
        };
        assert_eq!(load(&[]).p2p_exposure_problem(), None, "the default listens on loopback");
        let open = load(&[("ORGMESH_P2P_LISTEN", "/ip4/0.0.0.0/tcp/7000")]);
        let problem = open.p2p_exposure_problem().unwrap();
        assert!(
            problem.contains("/ip4/0.0.0.0/tcp/7000") && problem.contains("ORGMESH_MESH_KEY_FILE"),
            "{problem}"
        );
        for addr in ["/ip6/::/tcp/7000", "/ip4/10.0.0.1/tcp/7000", "/dns4/node.example/tcp/7000"] {
            assert!(load(&[("ORGMESH_P2P_LISTEN", addr)]).p2p_exposure_problem().is_some(), "{addr}");
        }
        for addr in ["/ip4/127.0.0.3/tcp/7000", "/ip6/::1/tcp/7000"] {
            assert_eq!(load(&[("ORGMESH_P2P_LISTEN", addr)]).p2p_exposure_problem(), None, "{addr}");
        }
        let keyed = load(&[("ORGMESH_P2P_LISTEN", "/ip4/0.0.0.0/tcp/7000"), ("ORGMESH_MESH_KEY_FILE", "/k")]);
        assert_eq!(keyed.p2p_exposure_problem(), None);
        let mut trusted = open.clone();
        trusted.trust.trusted_peers = vec!["12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()];
        assert_eq!(trusted.p2p_exposure_problem(), None);
        let mut tailnet = open.clone();
        tailnet.discovery.tailscale = Some(TailscaleSection::default());
        assert_eq!(tailnet.p2p_exposure_problem(), None);
        tailnet.discovery.tailscale =
            Some(TailscaleSection { verify_inbound: false, ..TailscaleSection::default() });
        assert!(tailnet.p2p_exposure_problem().is_some(), "a tailnet that checks nobody is no trust source");
    }

    #[test]
    fn api_tokens_come_from_a_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let hash = "a".repeat(64);
        let file = dir.path().join("tokens.toml");
        std::fs::write(
            &file,
            format!("[[tokens]]\nname = \"ops\"\nscopes = [\"admin\"]\nsha256 = \"{hash}\"\n"),
        )
        .unwrap();
        let vars = [("ORGMESH_API_TOKENS_FILE".to_string(), file.display().to_string())];
        let env = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.api.tokens.len(), 1);
        assert_eq!(config.api_tokens().unwrap().len(), 1);

        std::fs::write(&file, "[[tokens]]\nname = \"ops\"\nscopes = [\"root\"]\nsha256 = \"xyz\"\n").unwrap();
        assert!(
            matches!(Config::load(None, env), Err(ConfigError::Invalid { .. })),
            "bad entries are refused"
        );
        // A bad entry is named by its file and position; so is a file with no entries at all.
        let good = format!("[[tokens]]\nname = \"ops\"\nscopes = [\"admin\"]\nsha256 = \"{hash}\"\n");
        std::fs::write(
            &file,
            format!(
                "{good}[[tokens]]\nname = \"ci\"\nscopes = [\"submit\"]\nsha256 = \"{}\"\n",
                "g".repeat(64)
            ),
        )
        .unwrap();
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("tokens.toml") && err.contains("entry 2") && err.contains("\"ci\""), "{err}");
        for empty in ["", "# tokens go here\n", "tokens = []\n"] {
            std::fs::write(&file, empty).unwrap();
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.contains("tokens.toml") && err.contains("no [[tokens]]"), "{empty:?}: {err}");
        }
        // Hostile shapes: an unknown field, a line format, a token in the clear.
        for bad in [
            format!("{good}admin = true\n"),
            format!("ops:admin:{hash}\n"),
            "[[tokens]]\nname = \"ops\"\nscopes = [\"admin\"]\ntoken = \"om_secret\"\n".to_string(),
            "[[tokens]]\nname = \"ops\"\nscopes = \"om_secret\"\nsha256 = \"\"\n".to_string(),
            "om_secret\n".to_string(),
        ] {
            std::fs::write(&file, &bad).unwrap();
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.contains("tokens.toml"), "{bad:?}: {err}");
            assert!(!err.contains("om_secret"), "a secret is not echoed: {err}");
            assert!(err.contains("line "), "{err}");
        }
        std::fs::write(&file, "not toml [").unwrap();
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("tokens.toml"), "{err}");
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(Config::load(None, env), Err(ConfigError::Read { .. })));
    }
}
