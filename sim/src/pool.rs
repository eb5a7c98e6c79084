//! One shared copy of each node's newest record, for every simulated node's table to point at.
//! Memory only: it must never change what a node sees (a record is swapped only for an equal one).

use std::collections::HashMap;
use std::sync::Arc;

use orgmesh_protocol::PeerId;
use orgmesh_protocol::record::SignedRecord;
use orgmesh_protocol::wire::gossip::GossipUpdate;

/// Without it each of N nodes decodes and keeps its own copy of N records: N² records, tens of
/// gigabytes at 10,000 nodes. With it a record exists about once per version in flight.
#[derive(Debug, Default)]
pub(crate) struct RecordPool {
    newest: HashMap<PeerId, Arc<SignedRecord>>,
}

impl RecordPool {
    /// Swaps each decoded record for the pool's copy when they are equal; a newer one becomes
    /// the pool's copy; an older one (still in flight) is left as decoded.
    pub(crate) fn share(&mut self, updates: &mut [GossipUpdate]) {
        for update in updates {
            let peer = &update.record.record.peer_id;
            match self.newest.get(peer) {
                Some(shared) if **shared == *update.record => update.record = Arc::clone(shared),
                Some(shared) if shared.record.version >= update.record.record.version => {}
                _ => {
                    self.newest.insert(peer.clone(), Arc::clone(&update.record));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use orgmesh_protocol::Org;
    use orgmesh_protocol::record::{AcceptPolicy, Capacity, InsecureTestKeyring, NodeRecord, RecordVersion};

    use super::*;

    fn update(peer: &str, version: u64, slots: u32) -> GossipUpdate {
        let peer_id = PeerId::new(peer).unwrap();
        let record = NodeRecord {
            peer_id: peer_id.clone(),
            org: Org::new("acme").unwrap(),
            name: "n".into(),
            addrs: vec![],
            labels: BTreeMap::new(),
            capacity: Capacity { free_slots: slots, ..Capacity::default() },
            accepts: AcceptPolicy::AnyOrg,
            draining: false,
            software: "sim".into(),
            version: RecordVersion { generation: 1, version },
        };
        let signed = SignedRecord::sign(record, &InsecureTestKeyring::new(peer_id));
        GossipUpdate { record: Arc::new(signed), heartbeat: 1 }
    }

    #[test]
    fn equal_records_are_shared_and_different_ones_never_are() {
        let mut pool = RecordPool::default();
        let mut first = [update("a", 1, 4)];
        pool.share(&mut first);
        let mut again = [update("a", 1, 4), update("b", 1, 4)];
        pool.share(&mut again);
        assert!(Arc::ptr_eq(&first[0].record, &again[0].record), "equal copies are shared");
        assert_eq!(again[1].record.record.peer_id.as_str(), "b");

        // A newer version replaces the pool's copy; the older one still in flight stays itself.
        let mut newer = [update("a", 2, 3)];
        pool.share(&mut newer);
        let mut late = [update("a", 1, 4)];
        pool.share(&mut late);
        assert!(!Arc::ptr_eq(&late[0].record, &newer[0].record));
        assert_eq!(late[0].record.record.capacity.free_slots, 4, "never swapped for another record");
        let mut newer_again = [update("a", 2, 3)];
        pool.share(&mut newer_again);
        assert!(Arc::ptr_eq(&newer[0].record, &newer_again[0].record));

        // Same version, different content (a forged or buggy record): not swapped.
        let mut forged = [update("a", 2, 9)];
        pool.share(&mut forged);
        assert_eq!(forged[0].record.record.capacity.free_slots, 9);
    }
}
