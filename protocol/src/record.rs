//! A node's self-description as gossiped to the mesh (`NodeRecord`), its capacity, its acceptance
//! policy, and the signature that lets others trust it. The protocol never holds a private key:
//! signing and verifying go through the `Keyring` the driver passes in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{Org, PeerId};
use crate::task::{Constraints, Resources};

/// What a node has and what it has left. Totals are static; free amounts move with reservations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Total CPU, thousandths of a core.
    pub cpu_millis: u32,
    /// Unreserved CPU.
    pub cpu_millis_free: u32,
    /// Total memory, MiB.
    pub memory_mb: u64,
    /// Unreserved memory.
    pub memory_mb_free: u64,
    /// Total GPUs.
    pub gpus: u32,
    /// Unreserved GPUs.
    pub gpus_free: u32,
    /// Task slots in all.
    pub slots: u32,
    /// Task slots not reserved or running.
    pub free_slots: u32,
    /// Tasks running now.
    pub running_tasks: u32,
}

impl Capacity {
    /// Whether a task needing `r` fits in what is free right now.
    pub fn fits_now(&self, r: &Resources) -> bool {
        self.free_slots >= 1
            && self.cpu_millis_free >= r.cpu_millis
            && self.memory_mb_free >= r.memory_mb
            && self.gpus_free >= r.gpus
    }

    /// Whether a task needing `r` could ever fit on this node, were it idle.
    pub fn fits_ever(&self, r: &Resources) -> bool {
        self.slots >= 1
            && self.cpu_millis >= r.cpu_millis
            && self.memory_mb >= r.memory_mb
            && self.gpus >= r.gpus
    }

    /// How idle the node is, 0.0 (full) to 1.0 (empty); the placement score's base.
    pub fn idle_fraction(&self) -> f64 {
        let frac = |free: f64, total: f64| if total <= 0.0 { 1.0 } else { (free / total).clamp(0.0, 1.0) };
        let slots = frac(f64::from(self.free_slots), f64::from(self.slots));
        let cpu = frac(f64::from(self.cpu_millis_free), f64::from(self.cpu_millis));
        let mem = frac(self.memory_mb_free as f64, self.memory_mb as f64);
        (slots + cpu + mem) / 3.0
    }
}

/// Whose tasks a node runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptPolicy {
    /// Tasks from every org in the mesh.
    #[default]
    AnyOrg,
    /// Only tasks whose origin is one of these orgs or one of these nodes.
    Only {
        /// Accepted origin orgs.
        orgs: Vec<Org>,
        /// Accepted origin nodes, whatever their org.
        peers: Vec<PeerId>,
    },
}

impl AcceptPolicy {
    /// Accepts only these orgs.
    pub fn orgs(orgs: Vec<Org>) -> Self {
        AcceptPolicy::Only { orgs, peers: Vec::new() }
    }

    /// Whether a task from node `peer` of `org` is welcome.
    pub fn accepts(&self, org: &Org, peer: &PeerId) -> bool {
        match self {
            AcceptPolicy::AnyOrg => true,
            AcceptPolicy::Only { orgs, peers } => orgs.contains(org) || peers.contains(peer),
        }
    }
}

/// The version of a node's record: `generation` changes at every restart (the start time in unix
/// ms), `version` at every change within one run. Compared lexicographically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordVersion {
    /// Bumped at every process start.
    pub generation: u64,
    /// Bumped at every change of the record within a generation.
    pub version: u64,
}

/// How a node confines the tasks it runs for others, weakest first: a requirement is met by it or
/// anything stronger. Advertised in the signed record, required by `constraints.isolation`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Tasks run unconfined, as the node's own user.
    #[default]
    None,
    /// Tasks run in a sandbox: their own uid, namespaces and cgroup (see docs/security.md).
    Sandbox,
}

impl Isolation {
    /// Its name in configs, JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Sandbox => "sandbox",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "sandbox" => Ok(Self::Sandbox),
            other => Err(format!("unknown isolation {other:?} (sandbox or none)")),
        }
    }
}

/// A node's self-description, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node.
    pub peer_id: PeerId,
    /// Its org.
    pub org: Org,
    /// Its human name.
    pub name: String,
    /// Multiaddrs it listens on, as text.
    pub addrs: Vec<String>,
    /// Its labels, matched by `constraints.node_labels`.
    pub labels: BTreeMap<String, String>,
    /// What it has and has left.
    pub capacity: Capacity,
    /// Whose tasks it runs.
    pub accepts: AcceptPolicy,
    /// Set while it drains: it takes no new work.
    pub draining: bool,
    /// How it confines the tasks it runs.
    pub isolation: Isolation,
    /// The orgmesh version it runs.
    pub software: String,
    /// The record's version.
    pub version: RecordVersion,
}

impl NodeRecord {
    /// Whether `newer` differs from this record in capacity alone (same generation): news that
    /// placement wants but membership need not rush to every node. Capacity moves with every
    /// task that starts or ends, so rumouring it to the whole mesh costs every node Θ(N) records
    /// per second under load.
    pub fn differs_only_in_capacity(&self, newer: &NodeRecord) -> bool {
        // Destructured so that a new field has to be classified here.
        let NodeRecord {
            peer_id,
            org,
            name,
            addrs,
            labels,
            capacity: _,
            accepts,
            draining,
            isolation,
            software,
            version,
        } = self;
        *peer_id == newer.peer_id
            && *org == newer.org
            && *name == newer.name
            && *addrs == newer.addrs
            && *labels == newer.labels
            && *accepts == newer.accepts
            && *draining == newer.draining
            && *isolation == newer.isolation
            && *software == newer.software
            && version.generation == newer.version.generation
    }

    /// Whether this node may ever run a task from node `origin_peer` of `origin_org` with these
    /// constraints and resources (ignoring what is free right now). Allocates nothing: placement
    /// asks it of every known node.
    pub fn may_ever_run(
        &self,
        origin_org: &Org,
        origin_peer: &PeerId,
        c: &Constraints,
        r: &Resources,
    ) -> bool {
        (c.orgs.is_empty() || c.orgs.contains(&self.org))
            && c.node_labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
            && c.isolation.is_none_or(|wanted| self.isolation >= wanted)
            && self.accepts.accepts(origin_org, origin_peer)
            && self.capacity.fits_ever(r)
    }
}

/// A record with its author's signature over the record's postcard encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// The record.
    pub record: NodeRecord,
    /// Signature by `record.peer_id`'s key over `postcard(record)`.
    pub signature: Vec<u8>,
}

impl SignedRecord {
    /// Signs `record` with the local key.
    pub fn sign(record: NodeRecord, keyring: &dyn Keyring) -> Self {
        let bytes = postcard::to_allocvec(&record).unwrap_or_default();
        let signature = keyring.sign(&bytes);
        Self { record, signature }
    }

    /// Whether the signature is `record.peer_id`'s over this exact record.
    pub fn verify(&self, keyring: &dyn Keyring) -> bool {
        match postcard::to_allocvec(&self.record) {
            Ok(bytes) => keyring.verify(&self.record.peer_id, &bytes, &self.signature),
            Err(_) => false,
        }
    }
}

/// Signing with the local node's key and verifying other nodes' signatures.
///
/// The node implements it with its libp2p ed25519 identity (a peer id embeds its public key); the
/// simulator with a cheap stand-in.
pub trait Keyring: Send {
    /// Signs `bytes` with the local key.
    fn sign(&self, bytes: &[u8]) -> Vec<u8>;
    /// Whether `signature` is `peer`'s signature of `bytes`.
    fn verify(&self, peer: &PeerId, bytes: &[u8], signature: &[u8]) -> bool;

    /// Whether a record whose signature verified may join this node's view: the local trust
    /// policy (only trusted peers, only the peers allowed to claim an org). Everyone by default.
    fn admit(&self, record: &NodeRecord) -> bool {
        let _ = record;
        true
    }

    /// Whether the local trust policy names `peer` itself (a trusted-peer or org allow list):
    /// such a member is the last to make room in a full membership table. None by default.
    fn trusted(&self, peer: &PeerId) -> bool {
        let _ = peer;
        false
    }
}

/// A keyring for tests and simulation: "signs" with the signer's peer id, so a record claiming
/// another peer's id fails to verify. Offers no security; never use it in the node.
#[derive(Debug, Clone)]
pub struct InsecureTestKeyring {
    local: PeerId,
}

impl InsecureTestKeyring {
    /// A keyring that signs as `local`.
    pub fn new(local: PeerId) -> Self {
        Self { local }
    }
}

impl Keyring for InsecureTestKeyring {
    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        test_signature(&self.local, bytes)
    }

    fn verify(&self, peer: &PeerId, bytes: &[u8], signature: &[u8]) -> bool {
        test_signature(peer, bytes) == signature
    }
}

fn test_signature(peer: &PeerId, bytes: &[u8]) -> Vec<u8> {
    // FNV-1a over peer and bytes: deterministic and cheap, which is all a simulation needs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in peer.as_str().bytes().chain(bytes.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.to_le_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_postcard() {
        // Regression: an adjacently tagged AcceptPolicy encoded but never decoded with postcard.
        for accepts in [AcceptPolicy::AnyOrg, AcceptPolicy::orgs(vec![Org::new("acme").unwrap()])] {
            let record = NodeRecord {
                peer_id: PeerId::new("12D3KooWx").unwrap(),
                org: Org::new("acme").unwrap(),
                name: "a".into(),
                addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
                labels: BTreeMap::from([("zone".into(), "a".into())]),
                capacity: Capacity::default(),
                accepts,
                draining: false,
                isolation: Default::default(),
                software: "0.1.0".into(),
                version: RecordVersion { generation: 1, version: 2 },
            };
            let bytes = postcard::to_allocvec(&record).unwrap();
            assert_eq!(postcard::from_bytes::<NodeRecord>(&bytes).unwrap(), record);
        }
    }

    #[test]
    fn only_a_capacity_change_within_one_generation_counts_as_capacity_only() {
        let base = NodeRecord {
            peer_id: PeerId::new("12D3KooWx").unwrap(),
            org: Org::new("acme").unwrap(),
            name: "a".into(),
            addrs: vec![],
            labels: BTreeMap::new(),
            capacity: Capacity { slots: 4, free_slots: 4, ..Capacity::default() },
            accepts: AcceptPolicy::AnyOrg,
            draining: false,
            isolation: Default::default(),
            software: "0.1.0".into(),
            version: RecordVersion { generation: 1, version: 2 },
        };
        let mut busier = base.clone();
        busier.capacity.free_slots = 3;
        busier.version.version = 3;
        assert!(base.differs_only_in_capacity(&busier));
        let changes: [fn(&mut NodeRecord); 5] = [
            |r| r.draining = true,
            |r| r.addrs.push("/ip4/10.0.0.1/tcp/1".into()),
            |r| drop(r.labels.insert("gpu".into(), "a100".into())),
            |r| r.accepts = AcceptPolicy::orgs(vec![]),
            |r| r.version.generation = 2,
        ];
        for change in changes {
            let mut other = busier.clone();
            change(&mut other);
            assert!(!base.differs_only_in_capacity(&other), "{other:?}");
        }
    }
}
