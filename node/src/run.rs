//! Assembles and starts one node: store, identity, swarm, state machines, discovery, event loop
//! and API, in that order, and stops them in reverse. `orgmesh up` runs one; `orgmesh demo` runs
//! several in one process. Owns no logic of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use libp2p::Multiaddr;
use orgmesh_api::{RateLimiter, TlsConfig};
use orgmesh_discovery::{
    DnsConfig, DnsSource, Source, StaticSource, TailscaleClient, TailscaleConfig, TailscaleSource,
};
use orgmesh_protocol::membership::Membership;
use orgmesh_protocol::placement::{Host, HostConfig, Negotiator};
use orgmesh_protocol::record::{AcceptPolicy, NodeRecord, RecordVersion};
use orgmesh_protocol::task::TaskOrigin;
use orgmesh_protocol::{Isolation, Org, PeerId, Time};
use orgmesh_store::Store;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actor::{Command, EventLoop, NodeFacts, Parts};
use crate::config::{ApiTls, Config, machine_resources};
use crate::handle::NodeHandle;
use crate::identity::{self, Libp2pKeyring, TrustPolicy};
use crate::metrics::Metrics;
use crate::wall_clock;

/// A node running in this process.
#[derive(Debug)]
pub struct RunningNode {
    /// Its handle.
    pub handle: NodeHandle,
    /// Where its API listens.
    pub api_addr: SocketAddr,
    /// Its peer id.
    pub peer_id: PeerId,
    /// Its org.
    pub org: Org,
    /// How long a graceful stop lets running attempts finish.
    pub stop_grace: Duration,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// The token that stops the node.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops gracefully: refuses new work, lets running attempts finish and deliver their
    /// results for up to `stop_grace`, hands back the rest, then shuts down.
    pub async fn stop_gracefully(&self) -> crate::actor::StopReport {
        let report = self.handle.stop(self.stop_grace).await;
        self.shutdown.cancel();
        report
    }

    /// Stops the node and waits for its parts to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Waits until the node stops (its shutdown token is cancelled).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.stop().await;
    }
}

/// Starts a node from `config`.
pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
    // The security checks first: a config that would expose the API without tokens, or the p2p
    // listener to anyone who reaches its port, stops here.
    let security =
        config.security()?.with_rate_limit(RateLimiter::new(config.api.rate_per_s, config.api.burst));
    let tls = api_tls(&config).await?;
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let key = identity::load_or_create(&config.identity_path())?;
    let local_p2p = key.public().to_peer_id();
    let peer = identity::to_protocol(&local_p2p);
    let org = Org::new(config.node.org.clone())?;
    let store = Store::open(&data_dir.join("orgmesh.redb"))?;
    let metrics = Metrics::new();
    let commit_metrics = metrics.clone();
    store.observe_commits(move |took| commit_metrics.store_commit(took));
    let epoch = Instant::now();
    let started_at = wall_clock();

    let mesh_key = match config.mesh_key_path() {
        Some(path) => Some(crate::p2p::read_mesh_key(&path)?),
        None => None,
    };
    let trust = trust_policy(&config);
    let gates = crate::p2p::Gates {
        mesh_key,
        trusted_peers: trust
            .trusted_peers
            .as_ref()
            .map(|t| t.iter().filter_map(identity::to_libp2p).collect()),
        mdns: config.discovery.mdns,
    };
    if gates.mesh_key.is_some() {
        tracing::info!("private mesh: connections need the mesh key");
    }
    let mut swarm = crate::p2p::build_swarm(key.clone(), &gates, metrics.wire())?;
    for addr in &config.p2p.listen {
        let addr: Multiaddr = addr.parse().with_context(|| format!("bad listen address {addr}"))?;
        swarm.listen_on(addr.clone()).with_context(|| format!("cannot listen on {addr}"))?;
    }
    let external_addrs: Vec<Multiaddr> =
        config.p2p.external_addrs.iter().filter_map(|a| a.parse().ok()).collect();

    let (cpu, mem) = machine_resources();
    let host_config = HostConfig {
        cpu_millis: config.capacity.cpu_millis.unwrap_or(cpu),
        memory_mb: config.capacity.memory_mb.unwrap_or(mem),
        gpus: config.capacity.gpus,
        slots: config.capacity.slots,
        reservation_ttl: config.placement.reservation_ttl(),
    };
    // An org named in accept_from is only as good as the claim to it: unattested, any trusted
    // peer may say it is that org.
    for entry in config.unattested_accept_from() {
        tracing::warn!(
            org = %entry,
            "policy.accept_from names org {entry:?}, but no [trust.orgs] entry attests which peers are {entry:?}: \
             any peer allowed to connect may claim it"
        );
    }
    let policy = if config.policy.accept_from.is_empty() {
        AcceptPolicy::AnyOrg
    } else {
        let entries = &config.policy.accept_from;
        AcceptPolicy::Only {
            peers: entries
                .iter()
                .filter_map(|e| PeerId::new(e.clone()).ok().filter(|_| e.parse::<libp2p::PeerId>().is_ok()))
                .collect(),
            orgs: entries.iter().filter_map(|e| Org::new(e.clone()).ok()).collect(),
        }
    };
    let mut host = Host::new(host_config, org.clone(), config.node.labels.clone(), policy.clone());
    let work_root = data_dir.join(&config.executor.work_dir);
    let (sandbox, sandbox_unavailable) = build_sandbox(&config, &work_root, peer.as_str());
    // What the signed record says is what attempts get. Other orgs' work needs the sandbox the
    // admin configured, or the admin's explicit `isolation = "none"`.
    let isolation = if sandbox.is_some() { Isolation::Sandbox } else { Isolation::None };
    host.set_isolation(isolation, sandbox_unavailable.is_none());
    let record = NodeRecord {
        peer_id: peer.clone(),
        org: org.clone(),
        name: config.name(),
        addrs: external_addrs.iter().map(ToString::to_string).collect(),
        labels: config.node.labels.clone(),
        capacity: host.capacity(),
        accepts: policy,
        draining: false,
        isolation,
        software: env!("CARGO_PKG_VERSION").to_string(),
        // A new generation per start, so peers tell a restart from a stale record.
        version: RecordVersion { generation: started_at.0, version: 1 },
    };
    let gossip = config.gossip.to_config();
    let seed: u64 = rand::random();
    // The engine signs receipts with the same identity; it admits nothing, so no trust policy.
    let receipt_keyring = Box::new(Libp2pKeyring::new(key.clone(), TrustPolicy::default()));
    let membership = Membership::new(
        record,
        Box::new(Libp2pKeyring::new(key, trust)),
        gossip,
        ChaCha8Rng::seed_from_u64(seed),
        Time::ZERO,
    );
    let negotiator = Negotiator::new(
        peer.clone(),
        org.clone(),
        config.placement.to_config(),
        ChaCha8Rng::seed_from_u64(seed ^ 1),
    );

    let shutdown = CancellationToken::new();
    let (commands, command_rx) = mpsc::channel(1024);
    let recovered = store.unfinished_tasks()?;
    let hosted = store.runs()?;
    let facts = NodeFacts {
        peer: peer.clone(),
        org: org.clone(),
        name: config.name(),
        started_at,
        work_root,
        kill_grace: Duration::from_secs(config.executor.kill_grace_s),
        executor: config.executor.kind,
        sandbox,
        sandbox_unavailable,
        output_cap: config.executor.output_cap_mb.saturating_mul(1 << 20),
        spool: crate::spool::SpoolDir::new(data_dir.join("spool")),
        external_addrs,
        peer_requests_per_s: config.limits.peer_requests_per_s,
        peer_burst: config.limits.peer_burst,
        ban: Duration::from_secs(config.limits.ban_s),
    };
    let event_loop = EventLoop::new(
        Parts {
            facts,
            swarm,
            store: store.clone(),
            membership,
            negotiator,
            host,
            leases: config.tasks.leases(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 2),
            keyring: receipt_keyring,
            runs: hosted,
            epoch,
            commands: command_rx,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
        },
        recovered,
    );
    let handle = NodeHandle::new(
        commands.clone(),
        store.clone(),
        TaskOrigin { peer_id: peer.clone(), org: org.clone() },
    )
    .with_metrics(metrics.clone());

    let listener = tokio::net::TcpListener::bind(config.api.addr)
        .await
        .with_context(|| format!("cannot bind the API to {}", config.api.addr))?;
    let api_addr = listener.local_addr()?;
    let state = orgmesh_api::ApiState::new(store.reader(), Arc::new(handle.clone()))
        .with_security(security)
        .with_max_body_bytes(config.api.max_body_bytes)
        .with_cors_origins(&config.api.cors_origins)
        .map_err(anyhow::Error::msg)?;
    let limits = orgmesh_api::ConnLimits {
        header_timeout: Duration::from_millis(config.api.header_timeout_ms),
        max_connections: fit_to_open_files(config.api.max_connections),
    };
    let api_shutdown = shutdown.clone();
    let mut tasks = vec![tokio::spawn(event_loop.run())];
    tasks.push(tokio::spawn(metrics.clone().watch_placements(store.clone(), shutdown.clone())));
    let scheme = if tls.is_some() { "https" } else { "http" };
    tasks.push(tokio::spawn(async move {
        let router = orgmesh_api::router(state);
        let stop = async move { api_shutdown.cancelled().await };
        let served = orgmesh_api::serve_with(listener, router, tls, limits, stop).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "API server failed");
        }
    }));

    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    sources.push(Box::new(StaticSource::new(&config.p2p.bootstrap)?));
    if let Some(ts) = &config.discovery.tailscale {
        let port = ts.port.or_else(|| first_tcp_port(&config.p2p.listen)).unwrap_or(7000);
        let source = TailscaleSource::new(TailscaleConfig {
            socket: config.base_dir.join(&ts.socket),
            tag: ts.tag.clone(),
            port,
            refresh: Duration::from_secs(ts.refresh_s.max(1)),
        })?;
        if ts.verify_inbound {
            let _ =
                commands.send(Command::TailnetGate { client: source.client(), tag: ts.tag.clone() }).await;
        }
        sources.push(Box::new(source));
    }
    if let Some(dns) = &config.discovery.dns {
        let mut dns_config =
            DnsConfig { nameservers: dns.nameservers.clone(), ..DnsConfig::new(dns.domain.clone()) };
        if let Some(min) = dns.min_refresh_s {
            dns_config.min_refresh = Duration::from_secs(min.max(1));
        }
        sources.push(Box::new(DnsSource::new(dns_config)?));
    }
    // Peers remembered from earlier runs are redialled like a static list: the best few.
    let trust = trust_policy(&config);
    let remembered: Vec<String> =
        crate::redial::remembered(&store, &trust, config.gossip.max_members, started_at)
            .await
            .into_iter()
            .flat_map(|s| {
                let peer = s.record.peer_id;
                // An address that already names a peer (a relay path) cannot take a second suffix.
                s.record
                    .addrs
                    .into_iter()
                    .filter(|a| !a.contains("/p2p/"))
                    .map(move |a| format!("{a}/p2p/{peer}"))
            })
            .collect();
    if let Ok(source) = StaticSource::new(&remembered) {
        sources.push(Box::new(Remembered(source)));
    }
    for source in sources {
        tasks.push(tokio::spawn(run_source(source, commands.clone(), shutdown.clone())));
    }
    tracing::info!(peer = %peer, %org, api = %format!("{scheme}://{api_addr}"), "node started");
    let stop_grace = Duration::from_secs(config.tasks.stop_grace_s);
    Ok(RunningNode { handle, api_addr, peer_id: peer, org, stop_grace, shutdown, tasks })
}

/// The API's HTTPS configuration from `[api]`: PEM files, or a certificate from tailscaled.
async fn api_tls(config: &Config) -> anyhow::Result<Option<TlsConfig>> {
    match config.api_tls()? {
        ApiTls::Off => Ok(None),
        ApiTls::Files { cert, key } => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("cannot read [api] TLS file {}", p.display()))
            };
            let tls = TlsConfig::from_pem(&read(&cert)?, &read(&key)?)
                .with_context(|| format!("[api] tls_cert {} / tls_key {}", cert.display(), key.display()))?;
            Ok(Some(tls))
        }
        ApiTls::Tailscale { socket, domain } => {
            let cert = TailscaleClient::new(&socket)
                .certificate(domain.as_deref())
                .await
                .context("[api] tls = \"tailscale\": no certificate from tailscaled")?;
            tracing::info!(domain = %cert.domain, "api: HTTPS certificate from tailscaled");
            let tls = TlsConfig::from_der(cert.chain_der, cert.key_der)
                .with_context(|| format!("tailscaled's certificate for {}", cert.domain))?;
            Ok(Some(tls))
        }
    }
}

/// The TCP port of the first listen address, if it has one.
fn first_tcp_port(listen: &[String]) -> Option<u16> {
    listen.iter().filter_map(|a| a.parse::<Multiaddr>().ok()).find_map(|a| {
        a.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
    })
}

/// The trust policy of `[trust]`: trusted peers (this node always trusts itself) and org claims.
fn trust_policy(config: &Config) -> TrustPolicy {
    let parse = |ids: &[String]| ids.iter().filter_map(|p| PeerId::new(p.clone()).ok()).collect();
    TrustPolicy {
        trusted_peers: (!config.trust.trusted_peers.is_empty()).then(|| parse(&config.trust.trusted_peers)),
        org_peers: config
            .trust
            .orgs
            .iter()
            .filter_map(|(org, ids)| Some((Org::new(org.clone()).ok()?, parse(ids))))
            .collect(),
    }
}

/// Peers remembered in the store from earlier runs, shown as source `remembered`.
#[derive(Debug)]
struct Remembered(StaticSource);

impl Source for Remembered {
    fn name(&self) -> &'static str {
        "remembered"
    }
    fn discover(
        &mut self,
    ) -> orgmesh_discovery::BoxFuture<
        '_,
        Result<Vec<orgmesh_discovery::Discovered>, orgmesh_discovery::DiscoveryError>,
    > {
        self.0.discover()
    }
    fn refresh_interval(&self) -> Duration {
        self.0.refresh_interval()
    }
}

/// Asks a source periodically and forwards its list to the event loop.
async fn run_source(
    mut source: Box<dyn Source>,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    loop {
        match source.discover().await {
            Ok(peers) => {
                if commands.send(Command::Discovered { source: source.name(), peers }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(source = source.name(), error = %e, "discovery failed");
                let failed = Command::DiscoveryFailed { source: source.name(), error: e.to_string() };
                if commands.send(failed).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(source.refresh_interval()) => {}
        }
    }
}

/// File descriptors kept for the store, the p2p swarm, executors and logs, beyond API connections.
const RESERVED_FDS: usize = 1024;

/// Raises the soft open-file limit to the hard one (as Go and nginx do) and returns how many API
/// connections fit under it, at most `wanted`.
fn fit_to_open_files(wanted: usize) -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a local, fully initialised struct.
    #[allow(unsafe_code)]
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        lim.rlim_cur
    };
    let fits = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(RESERVED_FDS).max(64);
    if fits < wanted {
        tracing::warn!(
            wanted,
            fits,
            open_files = soft,
            "api.max_connections lowered to fit the open-file limit; raise it (LimitNOFILE=) to allow more"
        );
    }
    wanted.min(fits)
}

/// The sandbox attempts run in, from `[executor]`: probed once, before any attempt runs, and
/// after reaping what a crash of an earlier run left. Returns `(None, None)` where the admin chose
/// isolation `none` (or the noop executor runs nothing), `(None, Some(why))` where the host
/// cannot build it.
pub(crate) fn build_sandbox(
    config: &Config,
    work_root: &std::path::Path,
    node: &str,
) -> (Option<std::sync::Arc<crate::sandbox::Sandbox>>, Option<String>) {
    use crate::sandbox::{DEFAULT_READ_ONLY, Isolation, Policy, Sandbox};
    let e = &config.executor;
    if e.kind != crate::executor::ExecutorKind::Process || e.isolation == Isolation::None {
        if e.kind == crate::executor::ExecutorKind::Process {
            tracing::warn!("executor.isolation = \"none\": attempts run unconfined, as this node's user");
        }
        return (None, None);
    }
    // What an attempt must never see, wherever it lies: the node's state, config and keys.
    let mut hidden = vec![config.data_dir(), config.base_dir.clone(), config.identity_path()];
    hidden.extend(config.mesh_key_path());
    if let Ok(crate::config::ApiTls::Files { cert, key }) = config.api_tls() {
        hidden.extend([cert, key]);
    }
    let hidden = hidden.into_iter().filter_map(|p| std::path::absolute(&p).ok()).collect();
    let policy = Policy {
        node: node.to_string(),
        network: e.network,
        uid_base: e.sandbox_uid_base,
        uid_count: e.sandbox_uid_count,
        pids_max: e.pids_max,
        work_dir_max_mb: e.work_dir_max_mb,
        read_only: DEFAULT_READ_ONLY.iter().map(std::path::PathBuf::from).collect(),
        hidden,
        bwrap: e.bwrap.clone(),
        setpriv: e.setpriv.clone(),
        slirp4netns: e.slirp4netns.clone(),
    };
    match Sandbox::probe(policy) {
        Ok(sandbox) => {
            let killed = sandbox.reap_leftovers(work_root);
            if killed > 0 {
                tracing::warn!(processes = killed, "killed what attempts of an earlier run left behind");
            }
            tracing::info!(sandbox = %sandbox.describe(), "isolation: sandbox");
            (Some(sandbox), None)
        }
        Err(why) => {
            tracing::warn!(
                %why,
                "isolation: the sandbox cannot be built here; work from other orgs is refused \
                 (executor.isolation = \"none\" runs it unconfined)"
            );
            (None, Some(why.0))
        }
    }
}
