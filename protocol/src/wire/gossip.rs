//! `/orgmesh/gossip/1`: Scuttlebutt-style anti-entropy. A round is a push-pull of digests and
//! deltas: the initiator sends its digest (`Syn`), the responder answers with the records the
//! initiator lacks and the peers it wants (`Ack`), and the initiator pushes those (`Push`).
//! Heartbeats ride in the digests, so liveness spreads without re-sending records.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::PeerId;
use crate::record::{RecordVersion, SignedRecord};

/// What the sender knows about one node: its record's version and the latest heartbeat seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The node.
    pub peer: PeerId,
    /// The newest record version the sender holds.
    pub version: RecordVersion,
    /// The newest heartbeat the sender has seen in that generation.
    pub heartbeat: u64,
}

/// A record and its latest heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipUpdate {
    /// The signed record; shared, so a record travels to many peers (and, in the simulator, sits
    /// in many nodes' tables) without being copied. Encoded exactly as the record itself.
    pub record: Arc<SignedRecord>,
    /// The newest heartbeat the sender has seen for it.
    pub heartbeat: u64,
}

/// A request on the gossip protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipRequest {
    /// Opens a round: the initiator's digest.
    Syn {
        /// One entry per node the initiator knows, itself included.
        digest: Vec<DigestEntry>,
    },
    /// Closes a round: the records the responder asked for.
    Push {
        /// Newer records.
        updates: Vec<GossipUpdate>,
    },
}

/// The answer to a [`GossipRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipResponse {
    /// Answer to `Syn`: records newer than the initiator's, and the nodes whose newer records
    /// the responder wants pushed.
    Ack {
        /// Records the initiator lacks or holds older.
        updates: Vec<GossipUpdate>,
        /// Heartbeats newer than the initiator's for records it already holds.
        heartbeats: Vec<DigestEntry>,
        /// Nodes whose records the responder wants.
        wanted: Vec<PeerId>,
    },
    /// Answer to `Push`.
    Done,
}
