//! The static source: bootstrap multiaddrs from `orgmesh.toml` and `--bootstrap`. It never
//! changes, but is re-announced periodically so a peer that was down at start is still dialled.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{BoxFuture, Discovered, DiscoveryError, Source, split_p2p};

/// A fixed list of peers.
#[derive(Debug, Clone)]
pub struct StaticSource {
    peers: Vec<Discovered>,
}

impl StaticSource {
    /// Parses every entry (`.../p2p/<peer id>`); entries for the same peer are merged.
    pub fn new(entries: &[String]) -> Result<Self, DiscoveryError> {
        let mut by_peer: BTreeMap<_, Vec<String>> = BTreeMap::new();
        for entry in entries {
            let (addr, peer) = split_p2p(entry)?;
            by_peer.entry(peer).or_default().push(addr);
        }
        Ok(Self {
            peers: by_peer.into_iter().map(|(peer, addrs)| Discovered { peer: Some(peer), addrs }).collect(),
        })
    }
}

impl Source for StaticSource {
    fn name(&self) -> &'static str {
        "static"
    }

    fn discover(&mut self) -> BoxFuture<'_, Result<Vec<Discovered>, DiscoveryError>> {
        let peers = self.peers.clone();
        Box::pin(async move { Ok(peers) })
    }

    fn refresh_interval(&self) -> Duration {
        Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_addresses_of_one_peer() {
        let s = StaticSource::new(&[
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWa".into(),
            "/ip4/10.0.0.1/tcp/1/p2p/12D3KooWa".into(),
            "/ip4/127.0.0.1/tcp/2/p2p/12D3KooWb".into(),
        ])
        .unwrap();
        assert_eq!(s.peers.len(), 2);
        assert_eq!(s.peers[0].addrs.len(), 2);
        assert!(StaticSource::new(&["nonsense".into()]).is_err());
    }
}
