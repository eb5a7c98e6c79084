//! The libp2p side of a node: one request-response behaviour per orgmesh protocol over TCP with
//! Noise and Yamux. Builds the swarm; the event loop drives it. Holds no protocol state.

mod codec;

use std::time::Duration;

use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, Swarm, identity::Keypair, noise, tcp, yamux};
use orgmesh_protocol::wire::gossip::{GossipRequest, GossipResponse};
use orgmesh_protocol::wire::place::{PlaceRequest, PlaceResponse};
use orgmesh_protocol::wire::task::{TaskRequest, TaskResponse};
use orgmesh_protocol::wire::{limits, protocols};

pub use codec::PostcardCodec;

/// Gossip request-response behaviour.
pub type GossipBehaviour = request_response::Behaviour<PostcardCodec<GossipRequest, GossipResponse>>;
/// Placement request-response behaviour.
pub type PlaceBehaviour = request_response::Behaviour<PostcardCodec<PlaceRequest, PlaceResponse>>;
/// Task request-response behaviour.
pub type TaskBehaviour = request_response::Behaviour<PostcardCodec<TaskRequest, TaskResponse>>;

/// Everything the swarm speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// `/orgmesh/gossip/1`.
    pub gossip: GossipBehaviour,
    /// `/orgmesh/place/1`.
    pub place: PlaceBehaviour,
    /// `/orgmesh/task/1`.
    pub task: TaskBehaviour,
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
) -> request_response::Behaviour<PostcardCodec<Req, Resp>>
where
    Req: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    Resp: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let config =
        request_response::Config::default().with_request_timeout(timeout).with_max_concurrent_streams(256);
    request_response::Behaviour::with_codec(
        PostcardCodec::new(limit),
        [(StreamProtocol::new(name), ProtocolSupport::Full)],
        config,
    )
}

/// Builds the swarm for `key`.
pub fn build_swarm(key: Keypair) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_dns()?
        .with_behaviour(|_| Behaviour {
            gossip: rr(protocols::GOSSIP, limits::GOSSIP, Duration::from_secs(5)),
            place: rr(protocols::PLACE, limits::PLACE, Duration::from_secs(5)),
            task: rr(protocols::TASK, limits::TASK, Duration::from_secs(10)),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}
