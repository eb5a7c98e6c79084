//! Which remembered peers a starting node redials, and pruning the remembered list to the
//! membership cap: the peers table was written from gossip, so a store from before the cap (or a
//! mesh that shrank) may hold more than the table could ever take back. Reads and prunes the
//! store once at start; never dials anything itself.

use orgmesh_protocol::{SignedRecord, Timestamp};
use orgmesh_store::Store;

use crate::identity::TrustPolicy;

/// Remembered peers redialled at start at most: a few reachable ones are enough to rejoin, and
/// gossip brings the rest.
pub const MAX_REDIAL: usize = 64;

/// Reads the remembered peers, best first: those the trust policy names, then the most recently
/// (re)started; a record claiming a start after `now` is not believed and goes last. Removes
/// from the store all but the best `cap`, and returns at most `MAX_REDIAL` to redial.
pub async fn remembered(store: &Store, trust: &TrustPolicy, cap: usize, now: Timestamp) -> Vec<SignedRecord> {
    let mut records = match store.peers() {
        Ok(records) => records,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the remembered peers; none redialled");
            return Vec::new();
        }
    };
    rank(&mut records, trust, now);
    if records.len() > cap {
        let extra = records.split_off(cap);
        tracing::info!(
            kept = cap,
            forgotten = extra.len(),
            "remembered peers over gossip.max_members pruned"
        );
        for record in extra {
            if let Err(e) = store.remove_peer(&record.record.peer_id).await {
                tracing::warn!(error = %e, "cannot prune a remembered peer");
                break;
            }
        }
    }
    records.truncate(MAX_REDIAL);
    records
}

fn rank(records: &mut [SignedRecord], trust: &TrustPolicy, now: Timestamp) {
    let named = |r: &SignedRecord| {
        let peer = &r.record.peer_id;
        trust.trusted_peers.as_ref().is_some_and(|t| t.contains(peer))
            || trust.org_peers.values().any(|allowed| allowed.contains(peer))
    };
    let started = |r: &SignedRecord| {
        let generation = r.record.version.generation;
        // Start times are wall-clock milliseconds; one from the future was made up.
        if generation <= now.0 { generation } else { 0 }
    };
    records.sort_by_key(|r| (std::cmp::Reverse(named(r)), std::cmp::Reverse(started(r))));
}

#[cfg(test)]
mod tests {
    use orgmesh_protocol::{NodeRecord, Org, PeerId, RecordVersion};

    use super::*;

    fn peer(i: usize) -> PeerId {
        // Digits spelled as letters: base58 has no '0'.
        let tag: String = format!("{i:05}").bytes().map(|d| char::from(b'a' + (d - b'0'))).collect();
        PeerId::new(format!("12D3KooWpeer{tag}")).unwrap()
    }

    fn signed(peer: PeerId, generation: u64) -> SignedRecord {
        let record = NodeRecord {
            peer_id: peer,
            org: Org::new("acme").unwrap(),
            name: "n".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            labels: Default::default(),
            capacity: Default::default(),
            accepts: Default::default(),
            draining: false,
            isolation: Default::default(),
            software: "test".into(),
            version: RecordVersion { generation, version: 1 },
        };
        SignedRecord { record, signature: vec![1] }
    }

    #[tokio::test]
    async fn a_bloated_peers_table_is_pruned_to_the_cap_and_redials_the_best_few() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orgmesh.redb")).unwrap();
        for i in 0..500 {
            store.put_peer(signed(peer(i), 1_000 + i as u64)).await.unwrap();
        }
        // A record claiming a start in the future, as a rogue would to come first.
        store.put_peer(signed(peer(900), u64::MAX)).await.unwrap();
        let trusted = peer(3);
        let trust = TrustPolicy { trusted_peers: Some([trusted.clone()].into()), ..TrustPolicy::default() };
        let redial = remembered(&store, &trust, 200, Timestamp(10_000)).await;
        assert_eq!(store.peers().unwrap().len(), 200, "pruned to the cap");
        assert_eq!(redial.len(), MAX_REDIAL);
        assert_eq!(redial[0].record.peer_id, trusted, "the trust policy's peers first");
        assert_eq!(redial[1].record.peer_id, peer(499), "then the latest started");
        assert!(redial.iter().all(|r| r.record.peer_id != peer(900)), "a made-up start time comes last");
        let kept: Vec<PeerId> = store.peers().unwrap().into_iter().map(|r| r.record.peer_id).collect();
        assert!(!kept.contains(&peer(900)));
    }
}
