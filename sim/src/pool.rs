//! One shared copy of each version of each node's record, for every simulated node's table to
//! point at. Memory only: it must never change what a node sees (a record is swapped only for an
//! equal one).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use orgmesh_protocol::PeerId;
use orgmesh_protocol::record::{RecordVersion, SignedRecord};
use orgmesh_protocol::wire::gossip::GossipUpdate;

/// Without it each of N nodes decodes and keeps its own copy of N records: N² records, tens of
/// gigabytes at 10,000 nodes. With it a record exists once per version still held somewhere.
/// Every version, not only the newest: capacity spreads by anti-entropy, so at any instant the
/// nodes hold many versions of a busy node's record (keeping only the newest shared doubled the
/// 1,000-node run's memory).
#[derive(Debug, Default)]
pub(crate) struct RecordPool {
    held: HashMap<(PeerId, RecordVersion), Weak<SignedRecord>>,
    /// Entries at the last sweep of versions nobody holds any more.
    swept: usize,
}

impl RecordPool {
    /// Swaps each decoded record for the pool's copy of that version when they are equal;
    /// otherwise the decoded one becomes the pool's copy.
    pub(crate) fn share(&mut self, updates: &mut [GossipUpdate]) {
        for update in updates {
            let key = (update.record.record.peer_id.clone(), update.record.record.version);
            match self.held.get(&key).and_then(Weak::upgrade) {
                Some(shared) if *shared == *update.record => update.record = shared,
                // Same version, other content (forged, or a bug): left alone, never shared.
                Some(_) => {}
                None => {
                    self.held.insert(key, Arc::downgrade(&update.record));
                }
            }
        }
        // A dead entry still pins its allocation: sweep them once the table has doubled.
        if self.held.len() > 2 * self.swept.max(1024) {
            self.held.retain(|_, record| record.strong_count() > 0);
            self.swept = self.held.len();
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
            isolation: Default::default(),
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

        // Each version has its copy; an older one still held is shared too.
        let mut newer = [update("a", 2, 3)];
        pool.share(&mut newer);
        let mut late = [update("a", 1, 4)];
        pool.share(&mut late);
        assert!(!Arc::ptr_eq(&late[0].record, &newer[0].record));
        assert!(Arc::ptr_eq(&late[0].record, &first[0].record));
        assert_eq!(late[0].record.record.capacity.free_slots, 4, "never swapped for another record");
        let mut newer_again = [update("a", 2, 3)];
        pool.share(&mut newer_again);
        assert!(Arc::ptr_eq(&newer[0].record, &newer_again[0].record));

        // Same version, different content (a forged or buggy record): not swapped.
        let mut forged = [update("a", 2, 9)];
        pool.share(&mut forged);
        assert_eq!(forged[0].record.record.capacity.free_slots, 9);

        // A version nobody holds any more is decoded afresh, and swept in time.
        drop((first, again, late));
        let mut back = [update("a", 1, 4)];
        pool.share(&mut back);
        assert_eq!(Arc::strong_count(&back[0].record), 1);
        for i in 0..3000 {
            pool.share(&mut [update(&format!("p{i}").replace('0', "z"), 1, 4)]);
        }
        assert!(pool.held.len() < 2100, "{} entries", pool.held.len());
    }
}
