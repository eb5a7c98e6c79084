//! The libp2p side of a node: one request-response behaviour per orgmesh protocol over TCP with
//! Noise and Yamux (behind a pre-shared mesh key when one is set), gated by connection limits, an
//! optional trusted-peer allow list and a ban list. Builds the swarm; the event loop drives it.
//! Holds no protocol state.

mod codec;

use std::time::Duration;

use libp2p::allow_block_list::{self, AllowedPeers, BlockedPeers};
use libp2p::core::{Transport, upgrade};
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, Swarm, connection_limits, identity::Keypair, mdns, noise, tcp, yamux};
use orgmesh_protocol::wire::gossip::{GossipRequest, GossipResponse};
use orgmesh_protocol::wire::place::{PlaceRequest, PlaceResponse};
use orgmesh_protocol::wire::receipt::{ReceiptRequest, ReceiptResponse};
use orgmesh_protocol::wire::task::{TaskRequest, TaskResponse};
use orgmesh_protocol::wire::{limits, protocols};

pub use codec::PostcardCodec;

use crate::metrics::{WireCounter, WireCounters};

/// Gossip request-response behaviour.
pub type GossipBehaviour = request_response::Behaviour<PostcardCodec<GossipRequest, GossipResponse>>;
/// Placement request-response behaviour.
pub type PlaceBehaviour = request_response::Behaviour<PostcardCodec<PlaceRequest, PlaceResponse>>;
/// Task request-response behaviour.
pub type TaskBehaviour = request_response::Behaviour<PostcardCodec<TaskRequest, TaskResponse>>;
/// Receipt request-response behaviour.
pub type ReceiptBehaviour = request_response::Behaviour<PostcardCodec<ReceiptRequest, ReceiptResponse>>;

/// Everything the swarm speaks, plus the gates in front of it.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Caps on pending and established connections, so a flood of dials cannot exhaust the node.
    pub limits: connection_limits::Behaviour,
    /// When `trusted_peers` is set: nobody else may connect, in or out.
    pub trusted: Toggle<allow_block_list::Behaviour<AllowedPeers>>,
    /// Peers banned for misbehaving, for a back-off period.
    pub banned: allow_block_list::Behaviour<BlockedPeers>,
    /// Local-network discovery, when enabled.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// `/orgmesh/gossip/1`.
    pub gossip: GossipBehaviour,
    /// `/orgmesh/place/1`.
    pub place: PlaceBehaviour,
    /// `/orgmesh/task/1`.
    pub task: TaskBehaviour,
    /// `/orgmesh/receipt/1`.
    pub receipt: ReceiptBehaviour,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

fn rr<Req, Resp>(
    name: &'static str,
    limit: usize,
    timeout: Duration,
    bytes: &WireCounter,
) -> request_response::Behaviour<PostcardCodec<Req, Resp>>
where
    Req: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    Resp: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let config =
        request_response::Config::default().with_request_timeout(timeout).with_max_concurrent_streams(256);
    request_response::Behaviour::with_codec(
        PostcardCodec::counting(limit, bytes.clone()),
        [(StreamProtocol::new(name), ProtocolSupport::Full)],
        config,
    )
}

/// Who may connect.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    /// The mesh's pre-shared key: without it a connection cannot even complete its handshake.
    pub mesh_key: Option<PreSharedKey>,
    /// If set, the only peers this node talks to.
    pub trusted_peers: Option<Vec<libp2p::PeerId>>,
    /// Whether to find peers on the local network with mDNS.
    pub mdns: bool,
}

fn behaviour(gates: &Gates, local: libp2p::PeerId, wire: &WireCounters) -> std::io::Result<Behaviour> {
    let trusted = gates.trusted_peers.as_ref().map(|peers| {
        let mut allow = allow_block_list::Behaviour::<AllowedPeers>::default();
        for p in peers {
            allow.allow_peer(*p);
        }
        allow
    });
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(64))
        .with_max_established_incoming(Some(1024))
        .with_max_established_per_peer(Some(4));
    let mdns =
        if gates.mdns { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?) } else { None };
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        trusted: Toggle::from(trusted),
        banned: allow_block_list::Behaviour::default(),
        mdns: Toggle::from(mdns),
        gossip: rr(protocols::GOSSIP, limits::GOSSIP, Duration::from_secs(5), &wire.gossip),
        place: rr(protocols::PLACE, limits::PLACE, Duration::from_secs(5), &wire.place),
        task: rr(protocols::TASK, limits::TASK, Duration::from_secs(10), &wire.task),
        receipt: rr(protocols::RECEIPT, limits::RECEIPT, Duration::from_secs(10), &wire.receipt),
    })
}

/// Builds the swarm for `key`: TCP, then (with a mesh key) the private-network handshake, then
/// Noise and Yamux. Frame bytes of each protocol are counted into `wire`.
pub fn build_swarm(key: Keypair, gates: &Gates, wire: &WireCounters) -> anyhow::Result<Swarm<Behaviour>> {
    let tcp_config = tcp::Config::default().nodelay(true);
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    // Two whole chains, not one: the builder's typestate differs after `with_tcp` and after
    // `with_other_transport`, so the tails cannot be shared.
    let swarm = match gates.mesh_key {
        None => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(tcp_config, noise::Config::new, yamux::Config::default)?
            .with_dns()?
            .with_behaviour(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(behaviour(gates, key.public().to_peer_id(), wire)?)
            })?
            .with_swarm_config(idle)
            .build(),
        Some(psk) => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let noise = noise::Config::new(key)?;
                Ok(tcp::tokio::Transport::new(tcp_config)
                    .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                    .upgrade(upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(Duration::from_secs(20)))
            })?
            .with_dns()?
            .with_behaviour(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(behaviour(gates, key.public().to_peer_id(), wire)?)
            })?
            .with_swarm_config(idle)
            .build(),
    };
    Ok(swarm)
}

/// Reads a mesh key file (go-libp2p `swarm.key` format: `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex).
pub fn read_mesh_key(path: &std::path::Path) -> anyhow::Result<PreSharedKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read mesh key {}: {e}", path.display()))?;
    text.parse().map_err(|e| anyhow::anyhow!("mesh key {} is malformed: {e:?}", path.display()))
}

/// Writes a new random mesh key to `path` (mode 0600), refusing to overwrite.
pub fn create_mesh_key(path: &std::path::Path) -> anyhow::Result<PreSharedKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = PreSharedKey::new(rand::random());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "{key}")?;
    Ok(key)
}
