//! Discovery's side of the event loop: each source's complete list is dialled and its peers
//! become gossip contacts; mDNS changes are kept as a list like any source's. Never decides
//! trust: the connection gates and signed records do.

use libp2p::Multiaddr;
use orgmesh_discovery::Discovered;
use orgmesh_protocol::PeerId;
use orgmesh_protocol::engine::Now;

use super::EventLoop;
use crate::identity::{to_libp2p, to_protocol};

impl EventLoop {
    pub(super) fn handle_discovered(&mut self, source: &'static str, peers: Vec<Discovered>, now: Now) {
        for d in &peers {
            let addrs: Vec<Multiaddr> = d.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            match &d.peer {
                Some(peer) if *peer == self.facts.peer => {}
                Some(peer) => {
                    let Some(p2p) = to_libp2p(peer) else { continue };
                    for addr in addrs {
                        self.swarm.add_peer_address(p2p, addr);
                    }
                    self.engine.add_contact(peer.clone(), now, &super::recovery::StoreArchive(&self.store));
                    if !self.swarm.is_connected(&p2p) {
                        let _ = self.swarm.dial(p2p);
                    }
                }
                // Only an address: dial it; the peer id arrives with the connection.
                None => {
                    for addr in addrs {
                        let connected = self
                            .addr_peers
                            .get(&addr)
                            .and_then(to_libp2p)
                            .is_some_and(|p| self.swarm.is_connected(&p));
                        if !connected {
                            let _ = self.swarm.dial(
                                libp2p::swarm::dial_opts::DialOpts::unknown_peer_id().address(addr).build(),
                            );
                        }
                    }
                }
            }
        }
        self.discovered.insert(source, peers);
    }

    /// mDNS reports changes, not lists: keep the current list and hand it on like any source's.
    pub(super) fn handle_mdns_event(&mut self, ev: libp2p::mdns::Event, now: Now) {
        match ev {
            libp2p::mdns::Event::Discovered(found) => {
                for (peer, addr) in found {
                    self.mdns_peers.entry(to_protocol(&peer)).or_default().insert(addr.to_string());
                }
            }
            libp2p::mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    let peer = to_protocol(&peer);
                    if let Some(addrs) = self.mdns_peers.get_mut(&peer) {
                        addrs.remove(&addr.to_string());
                        if addrs.is_empty() {
                            self.mdns_peers.remove(&peer);
                        }
                    }
                }
            }
        }
        let list = self
            .mdns_peers
            .iter()
            .map(|(peer, addrs)| Discovered {
                peer: Some(peer.clone()),
                addrs: addrs.iter().cloned().collect(),
            })
            .collect();
        self.handle_discovered("mdns", list, now);
    }

    /// Which discovery sources found `peer` (by id, or by an address we reached it at), plus
    /// `gossip` when its record came through gossip.
    pub(super) fn sources_of(&self, peer: &PeerId) -> Vec<String> {
        let mut out: Vec<String> = self
            .discovered
            .iter()
            .filter(|(_, list)| {
                list.iter().any(|d| {
                    d.peer.as_ref() == Some(peer)
                        || d.addrs
                            .iter()
                            .filter_map(|a| a.parse::<Multiaddr>().ok())
                            .any(|a| self.addr_peers.get(&a) == Some(peer))
                })
            })
            .map(|(name, _)| name.to_string())
            .collect();
        if self.engine.membership().peer(peer).is_some() {
            out.push("gossip".into());
        }
        out
    }
}
