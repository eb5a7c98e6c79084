//! A member minting identities: fresh ed25519 keys, each signing a valid record of its own, pushed
//! at a node in `Push` batches of 256 from several rogue connections at once (connections cost
//! a fresh key too). Only tests use it.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use orgmesh_node::identity::{Libp2pKeyring, TrustPolicy, to_protocol};
use orgmesh_protocol::wire::gossip::{GossipRequest, GossipUpdate};
use orgmesh_protocol::{AcceptPolicy, NodeRecord, Org, RecordVersion, SignedRecord};

use crate::rogue::{Outcomes, Rogue};

/// Records per `Push`, the protocol's most.
pub const BATCH: usize = 256;

/// `n` identities, each with a record signed by its own key the way a node signs its own
/// (`Libp2pKeyring`), on two threads (keygen and signing dominate).
pub fn mint(n: usize, org: &str) -> anyhow::Result<Vec<SignedRecord>> {
    let org = Org::new(org)?;
    let half = n / 2;
    let make = move |range: std::ops::Range<usize>, org: Org| {
        range
            .map(|i| {
                let key = Keypair::generate_ed25519();
                let record = NodeRecord {
                    peer_id: to_protocol(&key.public().to_peer_id()),
                    org: org.clone(),
                    name: format!("minted-{i}"),
                    addrs: vec![format!("/ip4/10.{}.{}.{}/tcp/4001", i >> 16 & 255, i >> 8 & 255, i & 255)],
                    labels: Default::default(),
                    capacity: Default::default(),
                    accepts: AcceptPolicy::AnyOrg,
                    draining: false,
                    isolation: Default::default(),
                    software: "minted".into(),
                    version: RecordVersion { generation: 1, version: 1 },
                };
                SignedRecord::sign(record, &Libp2pKeyring::new(key, TrustPolicy::default()))
            })
            .collect::<Vec<_>>()
    };
    let other = {
        let org = org.clone();
        std::thread::spawn(move || make(half..n, org))
    };
    let mut records = make(0..half, org);
    records.extend(other.join().map_err(|_| anyhow::anyhow!("a minting thread panicked"))?);
    Ok(records)
}

/// Pushes `records` at the node at `target` from `senders` rogue members (each its own
/// connection and identity), every sender as fast as the node answers; waits at most `wait`.
pub async fn push_from_many(
    target: &Multiaddr,
    psk: PreSharedKey,
    records: Vec<SignedRecord>,
    senders: usize,
    wait: Duration,
) -> anyhow::Result<Outcomes> {
    let senders = senders.max(1);
    let mut shares: Vec<Vec<GossipRequest>> = vec![Vec::new(); senders];
    for (i, chunk) in records.chunks(BATCH).enumerate() {
        let updates = chunk.iter().map(|r| GossipUpdate { record: r.clone().into(), heartbeat: 1 }).collect();
        shares[i % senders].push(GossipRequest::Push { updates });
    }
    let mut tasks = Vec::new();
    for share in shares {
        let mut rogue = Rogue::connect_with(target, Some(psk)).await?;
        let to = rogue.target().ok_or_else(|| anyhow::anyhow!("a rogue is not connected"))?;
        tasks.push(tokio::spawn(async move { rogue.send_all(to, share, 4, wait).await }));
    }
    let mut total = Outcomes::default();
    for task in tasks {
        let out = task.await?;
        total.answered += out.answered;
        total.failed += out.failed;
        if total.first_error.is_none() {
            total.first_error = out.first_error;
        }
    }
    Ok(total)
}
