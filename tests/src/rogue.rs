//! A misbehaving peer for abuse tests: a real libp2p node speaking orgmesh's gossip protocol with
//! its own key, able to forge records, send oversized frames and flood requests. Only tests use it.

use std::time::Duration;

use futures::StreamExt;
use libp2p::core::upgrade;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, Swarm, Transport, identity::Keypair, noise, tcp, yamux};
use orgmesh_node::p2p::PostcardCodec;
use orgmesh_protocol::wire::gossip::{GossipRequest, GossipResponse};
use orgmesh_protocol::wire::protocols;

/// The rogue's only behaviour: gossip, with a frame limit far above the protocol's.
#[derive(NetworkBehaviour)]
pub struct RogueBehaviour {
    /// `/orgmesh/gossip/1`.
    pub gossip: request_response::Behaviour<PostcardCodec<GossipRequest, GossipResponse>>,
}

impl std::fmt::Debug for RogueBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RogueBehaviour")
    }
}

/// A rogue peer.
pub struct Rogue {
    /// Its key.
    pub key: Keypair,
    /// Its swarm.
    pub swarm: Swarm<RogueBehaviour>,
}

impl std::fmt::Debug for Rogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rogue").field("peer", &self.swarm.local_peer_id()).finish()
    }
}

/// How a batch of requests ended.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    /// Answered.
    pub answered: usize,
    /// Failed (dropped, timed out, refused, connection closed).
    pub failed: usize,
    /// The first failure's reason, for diagnosis.
    pub first_error: Option<String>,
}

impl Rogue {
    /// A rogue with a fresh key, connected to `target`.
    pub async fn connect(target: &Multiaddr) -> anyhow::Result<Rogue> {
        Self::connect_with(target, None).await
    }

    /// A rogue that holds the mesh key `psk` (a member gone bad), connected to `target`.
    pub async fn connect_with(target: &Multiaddr, psk: Option<PreSharedKey>) -> anyhow::Result<Rogue> {
        let key = Keypair::generate_ed25519();
        let config = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(5))
            .with_max_concurrent_streams(10_000);
        let behaviour = move || RogueBehaviour {
            gossip: request_response::Behaviour::with_codec(
                PostcardCodec::new(64 * 1024 * 1024),
                [(StreamProtocol::new(protocols::GOSSIP), ProtocolSupport::Full)],
                config,
            ),
        };
        let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(30));
        let mut swarm = match psk {
            None => libp2p::SwarmBuilder::with_existing_identity(key.clone())
                .with_tokio()
                .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
                .with_behaviour(|_| behaviour())?
                .with_swarm_config(idle)
                .build(),
            Some(psk) => libp2p::SwarmBuilder::with_existing_identity(key.clone())
                .with_tokio()
                .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                    let noise = noise::Config::new(key)?;
                    Ok(tcp::tokio::Transport::new(tcp::Config::default())
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default()))
                })?
                .with_behaviour(|_| behaviour())?
                .with_swarm_config(idle)
                .build(),
        };
        swarm.dial(target.clone())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, swarm.select_next_some()).await? {
                SwarmEvent::ConnectionEstablished { .. } => break,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    anyhow::bail!("rogue cannot connect: {error}")
                }
                _ => {}
            }
        }
        Ok(Rogue { key, swarm })
    }

    /// The peer id of the node it is connected to.
    pub fn target(&self) -> Option<libp2p::PeerId> {
        self.swarm.connected_peers().next().copied()
    }

    /// Sends one request to `to` and waits (up to 10 s) for its answer.
    pub async fn ask(
        &mut self,
        to: libp2p::PeerId,
        request: GossipRequest,
    ) -> anyhow::Result<GossipResponse> {
        let id = self.swarm.behaviour_mut().gossip.send_request(&to, request);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await? {
                SwarmEvent::Behaviour(RogueBehaviourEvent::Gossip(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                })) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(RogueBehaviourEvent::Gossip(
                    request_response::Event::OutboundFailure { request_id, error, .. },
                )) if request_id == id => anyhow::bail!("the request failed: {error}"),
                _ => {}
            }
        }
    }

    /// Sends `requests` to `to`, up to `per_tick` every millisecond while fewer than 200 are in
    /// flight (under the target's stream limit, as a flooder that wants to be served would), and
    /// waits (up to `wait`) for every answer or failure.
    pub async fn send_all(
        &mut self,
        to: libp2p::PeerId,
        requests: Vec<GossipRequest>,
        per_tick: usize,
        wait: Duration,
    ) -> Outcomes {
        let total = requests.len();
        let mut pending: std::collections::HashSet<OutboundRequestId> = Default::default();
        let mut out = Outcomes::default();
        let mut queue = requests.into_iter();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let deadline = tokio::time::Instant::now() + wait;
        while out.answered + out.failed < total && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tick.tick() => {
                    let room = 200usize.saturating_sub(pending.len()).min(per_tick);
                    for req in queue.by_ref().take(room) {
                        pending.insert(self.swarm.behaviour_mut().gossip.send_request(&to, req));
                    }
                }
                ev = self.swarm.select_next_some() => match ev {
                    SwarmEvent::Behaviour(RogueBehaviourEvent::Gossip(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, .. }, ..
                    })) if pending.remove(&request_id) => out.answered += 1,
                    SwarmEvent::Behaviour(RogueBehaviourEvent::Gossip(request_response::Event::OutboundFailure {
                        request_id, error, ..
                    })) if pending.remove(&request_id) => {
                        out.failed += 1;
                        out.first_error.get_or_insert_with(|| error.to_string());
                    }
                    _ => {}
                },
            }
        }
        out.failed += pending.len() + queue.count();
        out
    }
}
