//! The swarm's side of the event loop: connection events, and one adapter for all four
//! request-response protocols that turns their events into the engine's inputs (after the rate
//! limit and bans). Also the inbound gates: tailnet `whois` checks, malformed-frame offences,
//! bans. Decides nothing about tasks or membership: the engine does.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use orgmesh_protocol::engine::{Input, Now, Request, RequestId, Response};
use orgmesh_protocol::{PeerId, Time};
use orgmesh_store::NewEvent;

use super::{EventLoop, guard};
use crate::identity::{to_libp2p, to_protocol};
use crate::p2p::BehaviourEvent;

/// Which of the four protocols a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Protocol {
    Gossip,
    Place,
    Task,
    Receipt,
}

/// Where the answer to an inbound request goes.
pub(super) enum Channel {
    Gossip(ResponseChannel<orgmesh_protocol::wire::gossip::GossipResponse>),
    Place(ResponseChannel<orgmesh_protocol::wire::place::PlaceResponse>),
    Task(ResponseChannel<orgmesh_protocol::wire::task::TaskResponse>),
    Receipt(ResponseChannel<orgmesh_protocol::wire::receipt::ReceiptResponse>),
}

impl EventLoop {
    pub(super) fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.swarm_event(&event);
        let now = self.now();
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(ev)) => {
                self.on_protocol_event(
                    Protocol::Gossip,
                    ev,
                    now,
                    Request::Gossip,
                    Response::Gossip,
                    Channel::Gossip,
                );
            }
            SwarmEvent::Behaviour(BehaviourEvent::Place(ev)) => {
                self.on_protocol_event(
                    Protocol::Place,
                    ev,
                    now,
                    Request::Place,
                    Response::Place,
                    Channel::Place,
                );
            }
            SwarmEvent::Behaviour(BehaviourEvent::Task(ev)) => {
                self.on_protocol_event(Protocol::Task, ev, now, Request::Task, Response::Task, Channel::Task);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Receipt(ev)) => {
                self.on_protocol_event(
                    Protocol::Receipt,
                    ev,
                    now,
                    Request::Receipt,
                    Response::Receipt,
                    Channel::Receipt,
                );
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(ev)) => self.handle_mdns_event(ev, now),
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                // Whoever connects gets gossiped with, so inbound-only peers converge fast too.
                let peer = to_protocol(&peer_id);
                if let (libp2p::core::ConnectedPoint::Listener { send_back_addr, .. }, Some((client, tag))) =
                    (&endpoint, &self.tailnet_gate)
                {
                    self.check_tailnet_peer(peer_id, send_back_addr, client.clone(), tag.clone());
                    // A stranger becomes a contact once its check passes; a peer already in the
                    // view (a second connection, a redial) keeps being served while rechecked.
                    if self.engine.membership().peer(&peer).is_none() {
                        self.gate_pending.insert(peer);
                        return;
                    }
                }
                if let libp2p::core::ConnectedPoint::Dialer { address, .. } = endpoint {
                    // Remembered so address-only discoveries can be attributed to their peer.
                    let bare: Multiaddr = address
                        .iter()
                        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                        .collect();
                    self.addr_peers.insert(bare, peer.clone());
                }
                let archive = super::recovery::StoreArchive(&self.store);
                self.engine.add_contact(peer, now, &archive);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                let addrs = self.advertised_addrs();
                let archive = super::recovery::StoreArchive(&self.store);
                self.engine.update_local(|r| r.addrs = addrs, now, &archive);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                // Wrong mesh key, garbage bytes, a refused (untrusted or banned) peer.
                self.counters.refused_connections += 1;
                tracing::debug!(%error, "inbound connection failed");
            }
            _ => {}
        }
    }

    pub(super) fn advertised_addrs(&self) -> Vec<String> {
        self.swarm.listeners().chain(&self.facts.external_addrs).map(ToString::to_string).collect()
    }

    /// One request-response protocol's event, whichever protocol: requests become
    /// `Input::Request` (if the peer is admitted), answers `Input::Response`, failures
    /// `Input::RequestFailed` or an offence.
    fn on_protocol_event<Req, Resp>(
        &mut self,
        protocol: Protocol,
        event: request_response::Event<Req, Resp>,
        now: Now,
        request: fn(Req) -> Request,
        response: fn(Resp) -> Response,
        channel: fn(ResponseChannel<Resp>) -> Channel,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => {
                let from = to_protocol(&peer);
                match message {
                    request_response::Message::Request { request: req, channel: ch, .. } => {
                        let request = request(req);
                        if !self.admit(&from, guard::cost(&request), now.time) {
                            return;
                        }
                        let reply = self.next_reply();
                        self.channels.insert(reply, channel(ch));
                        self.feed(Input::Request { from, request, reply }, now);
                    }
                    request_response::Message::Response { request_id, response: resp } => {
                        if let Some(id) = self.outbound.remove(&(protocol, request_id)) {
                            self.feed(Input::Response { id, response: response(resp) }, now);
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                self.counters.outbound_failures += 1;
                tracing::debug!(peer = %peer, ?protocol, %error, "request failed");
                if let Some(id) = self.outbound.remove(&(protocol, request_id)) {
                    self.feed(Input::RequestFailed { id }, now);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(peer = %peer, ?protocol, %error, "inbound request failed");
                self.inbound_failure(&peer, &error, now.time);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Remembers which engine request an outbound libp2p request carries.
    pub(super) fn sent(&mut self, protocol: Protocol, libp2p_id: OutboundRequestId, id: RequestId) {
        self.outbound.insert((protocol, libp2p_id), id);
    }

    /// Asks tailscaled who is behind an inbound connection; the answer comes back through
    /// `gate_checks`.
    pub(super) fn check_tailnet_peer(
        &mut self,
        peer: libp2p::PeerId,
        remote: &Multiaddr,
        client: orgmesh_discovery::TailscaleClient,
        tag: String,
    ) {
        use libp2p::multiaddr::Protocol;
        let mut ip = None;
        let mut port = None;
        for p in remote.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        let Some(addr) = ip.map(|ip| std::net::SocketAddr::new(ip, port.unwrap_or(0))) else {
            let why = format!("no IP address in {remote}");
            self.gate_checks.push(Box::pin(async move { (peer, Some(why)) }));
            return;
        };
        self.gate_checks.push(Box::pin(async move {
            let refusal = match client.whois(addr).await {
                Ok(Some(node)) if node.has_tag(&tag) => None,
                Ok(Some(node)) => Some(format!("tailnet node {} lacks {tag}", node.name)),
                Ok(None) => Some(format!("{addr} is not a node of this tailnet")),
                Err(e) => Some(format!("whois failed: {e}")),
            };
            (peer, refusal)
        }));
    }

    pub(super) fn handle_gate_check(&mut self, peer: libp2p::PeerId, refusal: Option<String>) {
        let peer = to_protocol(&peer);
        self.gate_pending.remove(&peer);
        let Some(why) = refusal else {
            let now = self.now();
            let archive = super::recovery::StoreArchive(&self.store);
            self.engine.add_contact(peer, now, &archive);
            return;
        };
        self.counters.refused_connections += 1;
        tracing::warn!(peer = %peer.short(), %why, "inbound connection refused");
        self.enforce(&peer, guard::Verdict::Ban(Duration::from_secs(60)), &why);
    }

    /// Whether to serve an inbound request from `from` costing `cost` (rate limit; bans).
    pub(super) fn admit(&mut self, from: &PeerId, cost: u32, now: Time) -> bool {
        if self.gate_pending.contains(from) {
            // Dropped, not queued: the peer retries on its next round, by then checked.
            self.counters.unchecked_requests += 1;
            return false;
        }
        match self.guard.request(from, cost, now) {
            guard::Verdict::Allow => true,
            verdict => {
                self.counters.rate_limited_requests += 1;
                self.enforce(from, verdict, "exceeded its request rate");
                false
            }
        }
    }

    pub(super) fn inbound_failure(
        &mut self,
        peer: &libp2p::PeerId,
        error: &request_response::InboundFailure,
        now: Time,
    ) {
        self.counters.inbound_failures += 1;
        // A frame that does not decode or is over its size limit: never sent by a correct peer.
        if let request_response::InboundFailure::Io(e) = error
            && matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
        {
            self.counters.malformed_frames += 1;
            let peer = to_protocol(peer);
            let verdict = self.guard.offence(&peer, guard::Offence::Malformed, now);
            self.enforce(&peer, verdict, "sent malformed or oversized frames");
        }
    }

    /// Carries out a ban verdict: disconnect, block for its length, record the event.
    pub(super) fn enforce(&mut self, peer: &PeerId, verdict: guard::Verdict, why: &str) {
        let guard::Verdict::Ban(length) = verdict else { return };
        self.counters.bans += 1;
        tracing::warn!(peer = %peer.short(), seconds = length.as_secs(), why, "peer banned");
        if let Some(p2p) = to_libp2p(peer) {
            self.swarm.behaviour_mut().banned.block_peer(p2p);
        }
        let data = serde_json::json!({"peer_id": peer, "reason": why, "seconds": length.as_secs()});
        drop(self.store.append_events(vec![NewEvent { kind: "peer.banned".into(), data: data.to_string() }]));
    }
}
