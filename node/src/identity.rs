//! The node's ed25519 identity: created once (mode 0600), loaded at every start, and the
//! `Keyring` that signs this node's gossip record and verifies others' against their peer ids.
//! The private key never leaves this module except into the libp2p swarm.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use std::collections::{BTreeMap, BTreeSet};

use libp2p::identity::{Keypair, PublicKey};
use orgmesh_protocol::{Keyring, NodeRecord, Org, PeerId};

/// Loads the key at `path`, or creates it if the file does not exist.
pub fn load_or_create(path: &Path) -> anyhow::Result<Keypair> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| anyhow::anyhow!("identity key {} is unreadable: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let bytes = key.to_protobuf_encoding()?;
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read identity key {}: {e}", path.display())),
    }
}

/// The protocol's peer id for a libp2p peer id.
pub fn to_protocol(peer: &libp2p::PeerId) -> PeerId {
    // A libp2p peer id's base58 text is always valid base58 of bounded length.
    PeerId::new(peer.to_base58()).unwrap_or_else(|_| unreachable_peer())
}

fn unreachable_peer() -> PeerId {
    // Only reachable if libp2p changed its text form; a fixed placeholder keeps us panic-free.
    PeerId::new("1").unwrap_or_else(|_| unreachable!("\"1\" is valid base58"))
}

/// The libp2p peer id for a protocol peer id.
pub fn to_libp2p(peer: &PeerId) -> Option<libp2p::PeerId> {
    peer.as_str().parse().ok()
}

/// Verifies signatures against the public key embedded in ed25519 peer ids, and signs nothing:
/// what an offline verifier (`orgmesh receipt verify`) needs, with no key of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIdVerifier;

impl Keyring for PeerIdVerifier {
    fn sign(&self, _bytes: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn verify(&self, peer: &PeerId, bytes: &[u8], signature: &[u8]) -> bool {
        public_key_of(peer).is_some_and(|pk| pk.verify(bytes, signature))
    }

    fn admit(&self, _record: &NodeRecord) -> bool {
        false
    }
}

/// Signs with this node's key; verifies with the public key embedded in ed25519 peer ids; admits
/// records under the node's trust policy.
#[derive(Debug)]
pub struct Libp2pKeyring {
    key: Keypair,
    trust: TrustPolicy,
}

/// Which verified records a node admits into its view.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// If set, only these peers.
    pub trusted_peers: Option<BTreeSet<PeerId>>,
    /// Orgs that only the listed peers may claim.
    pub org_peers: BTreeMap<Org, BTreeSet<PeerId>>,
}

impl TrustPolicy {
    /// Whether `record` passes: a trusted peer, making an org claim it may make.
    pub fn admits(&self, record: &NodeRecord) -> bool {
        let trusted = self.trusted_peers.as_ref().is_none_or(|t| t.contains(&record.peer_id));
        let org_ok = self.org_peers.get(&record.org).is_none_or(|allowed| allowed.contains(&record.peer_id));
        trusted && org_ok
    }
}

impl Libp2pKeyring {
    /// A keyring signing with `key` and admitting records under `trust`.
    pub fn new(key: Keypair, trust: TrustPolicy) -> Self {
        Self { key, trust }
    }
}

/// The public key inlined in an ed25519 peer id (an identity multihash of the protobuf key).
fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let bytes = to_libp2p(peer)?.to_bytes();
    // Identity multihash: code 0x00, then the digest length, then the digest.
    match bytes.as_slice() {
        [0x00, len, digest @ ..] if usize::from(*len) == digest.len() => {
            PublicKey::try_decode_protobuf(digest).ok()
        }
        _ => None,
    }
}

impl Keyring for Libp2pKeyring {
    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.key.sign(bytes).unwrap_or_default()
    }

    fn verify(&self, peer: &PeerId, bytes: &[u8], signature: &[u8]) -> bool {
        public_key_of(peer).is_some_and(|pk| pk.verify(bytes, signature))
    }

    fn admit(&self, record: &NodeRecord) -> bool {
        self.trust.admits(record)
    }

    fn trusted(&self, peer: &PeerId) -> bool {
        self.trust.trusted_peers.as_ref().is_some_and(|t| t.contains(peer))
            || self.trust.org_peers.values().any(|allowed| allowed.contains(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_signer() {
        let a = Keypair::generate_ed25519();
        let b = Keypair::generate_ed25519();
        let a_id = to_protocol(&a.public().to_peer_id());
        let b_id = to_protocol(&b.public().to_peer_id());
        let ring = Libp2pKeyring::new(a, TrustPolicy::default());
        let sig = ring.sign(b"record");
        assert!(ring.verify(&a_id, b"record", &sig));
        assert!(!ring.verify(&a_id, b"other", &sig));
        assert!(!ring.verify(&b_id, b"record", &sig));
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let k1 = load_or_create(&path).unwrap();
        let k2 = load_or_create(&path).unwrap();
        assert_eq!(k1.public().to_peer_id(), k2.public().to_peer_id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[cfg(test)]
mod trust_tests {
    use super::*;
    use orgmesh_protocol::record::{AcceptPolicy, Capacity, RecordVersion};

    fn record(peer: &PeerId, org: &str) -> NodeRecord {
        NodeRecord {
            peer_id: peer.clone(),
            org: Org::new(org).unwrap(),
            name: org.into(),
            addrs: Vec::new(),
            labels: Default::default(),
            capacity: Capacity::default(),
            accepts: AcceptPolicy::AnyOrg,
            draining: false,
            isolation: Default::default(),
            software: "test".into(),
            version: RecordVersion::default(),
        }
    }

    fn id() -> PeerId {
        to_protocol(&Keypair::generate_ed25519().public().to_peer_id())
    }

    #[test]
    fn org_claims_are_pinned_to_their_peers() {
        let (acme, mallory) = (id(), id());
        let trust = TrustPolicy {
            trusted_peers: None,
            org_peers: BTreeMap::from([(Org::new("acme").unwrap(), BTreeSet::from([acme.clone()]))]),
        };
        assert!(trust.admits(&record(&acme, "acme")));
        assert!(!trust.admits(&record(&mallory, "acme")), "only acme's peer may claim acme");
        assert!(
            trust.admits(&record(&mallory, "mallory")),
            "orgs not pinned may be claimed by anyone trusted"
        );
    }

    #[test]
    fn trusted_peers_limit_who_is_admitted_at_all() {
        let (globex, stranger) = (id(), id());
        let trust =
            TrustPolicy { trusted_peers: Some(BTreeSet::from([globex.clone()])), org_peers: BTreeMap::new() };
        assert!(trust.admits(&record(&globex, "globex")));
        assert!(!trust.admits(&record(&stranger, "globex")));
        // The keyring applies the same policy after the signature checks out.
        let ring = Libp2pKeyring::new(Keypair::generate_ed25519(), trust);
        assert!(!ring.admit(&record(&stranger, "initech")));
    }
}
