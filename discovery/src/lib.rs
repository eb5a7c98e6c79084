//! Where a node finds its peers. Each source turns some outside truth (a static list today;
//! Tailscale's LocalAPI and DNS SRV records later) into [`Discovered`] peers; the node dials them
//! and gossip does the rest. Sources only report: they never dial, trust or rank anyone.
#![warn(missing_docs)]

mod dns;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod static_list;
mod tailscale;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use dns::{DnsConfig, DnsSource};
pub use static_list::StaticSource;
pub use tailscale::{TailnetCertificate, TailnetPeer, TailscaleClient, TailscaleConfig, TailscaleSource};

use orgmesh_protocol::PeerId;

/// A peer a source found: who, and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The peer, when the source knows it (static entries and DNS TXT records carry it;
    /// Tailscale knows only addresses: the peer id is learned when the connection is made).
    pub peer: Option<PeerId>,
    /// Multiaddrs to dial, without the `/p2p/` suffix.
    pub addrs: Vec<String>,
}

/// Why a source could not answer this time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// An entry of the source's configuration is malformed.
    #[error("invalid entry {entry:?}: {reason}")]
    InvalidEntry {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The source's backend could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// A boxed future, so sources can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One discovery source. The node calls `discover` every `refresh_interval` and on demand; the
/// answer is the source's complete current view, so peers missing from it are gone from the source.
pub trait Source: Send + 'static {
    /// Short name shown in `GET /v1/peers` (`static`, `tailscale`, `dns`).
    fn name(&self) -> &'static str;
    /// The complete current list.
    fn discover(&mut self) -> BoxFuture<'_, Result<Vec<Discovered>, DiscoveryError>>;
    /// How often to ask again.
    fn refresh_interval(&self) -> Duration;
}

/// Splits `/ip4/1.2.3.4/tcp/7000/p2p/12D3...` into the dialable address and the peer id.
pub fn split_p2p(multiaddr: &str) -> Result<(String, PeerId), DiscoveryError> {
    let invalid =
        |reason: &str| DiscoveryError::InvalidEntry { entry: multiaddr.into(), reason: reason.into() };
    let (addr, id) = multiaddr.rsplit_once("/p2p/").ok_or_else(|| invalid("must end in /p2p/<peer id>"))?;
    if addr.is_empty() || !addr.starts_with('/') {
        return Err(invalid("missing transport address before /p2p/"));
    }
    let peer = PeerId::new(id).map_err(|e| invalid(&e.to_string()))?;
    Ok((addr.to_string(), peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_p2p_suffix() {
        let (addr, peer) = split_p2p("/ip4/127.0.0.1/tcp/7000/p2p/12D3KooWabc").unwrap();
        assert_eq!(addr, "/ip4/127.0.0.1/tcp/7000");
        assert_eq!(peer.as_str(), "12D3KooWabc");
        assert!(split_p2p("/ip4/127.0.0.1/tcp/7000").is_err());
        assert!(split_p2p("/p2p/12D3KooWabc").is_err());
        assert!(split_p2p("/ip4/1.2.3.4/tcp/1/p2p/bad id").is_err());
    }
}
