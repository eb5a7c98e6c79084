//! The wire format: every message is a versioned postcard envelope with a hard size limit.
//! One module per libp2p protocol; framing (the length prefix) belongs to the transport, which
//! must check the limit before allocating. Decoding never panics on any input.

pub mod gossip;
pub mod place;
pub mod receipt;
pub mod task;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The envelope version this build speaks. A frame with another version is refused, not guessed at.
pub const VERSION: u16 = 1;

/// Size limits per protocol, in bytes of one encoded envelope.
pub mod limits {
    /// Gossip frames carry digests and records of many nodes.
    pub const GOSSIP: usize = 4 * 1024 * 1024;
    /// Placement frames carry at most one task spec (itself capped at 64 KiB).
    pub const PLACE: usize = 128 * 1024;
    /// Task frames carry at most one log chunk.
    pub const TASK: usize = 512 * 1024;
    /// The largest log chunk one `TaskRequest::Log` may carry.
    pub const LOG_CHUNK: usize = 256 * 1024;
    /// The most attempts one `TaskRequest::Renew` may name (about 100 KiB encoded); a host holding
    /// more for one origin splits them over several requests.
    pub const MAX_RENEW: usize = 4096;
    /// Receipt frames carry one signed receipt (its signed bytes are capped at 8 KiB).
    pub const RECEIPT: usize = 16 * 1024;
}

/// The libp2p protocol names; the `/1` is the stream protocol's major version.
pub mod protocols {
    /// Membership and capacity gossip.
    pub const GOSSIP: &str = "/orgmesh/gossip/1";
    /// Placement negotiation: bids, commits, releases.
    pub const PLACE: &str = "/orgmesh/place/1";
    /// Running tasks: status, logs, results, cancellation.
    pub const TASK: &str = "/orgmesh/task/1";
    /// Signed result receipts, host to origin.
    pub const RECEIPT: &str = "/orgmesh/receipt/1";
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame exceeds its protocol's limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The protocol's limit.
        limit: usize,
    },
    /// The envelope's version is not one this build speaks.
    #[error("unsupported envelope version {0}")]
    Version(u16),
    /// The bytes are not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Bytes were left after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Encodes `msg` in a version-1 envelope, refusing to produce a frame over `limit`.
pub fn encode<T: Serialize>(msg: &T, limit: usize) -> Result<Vec<u8>, WireError> {
    let mut out = postcard::to_allocvec(&VERSION).map_err(|e| WireError::Malformed(e.to_string()))?;
    let body = postcard::to_allocvec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    out.extend_from_slice(&body);
    if out.len() > limit {
        return Err(WireError::TooLarge { size: out.len(), limit });
    }
    Ok(out)
}

/// Decodes an envelope produced by [`encode`]. Any input gives `Ok` or `Err`, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge { size: bytes.len(), limit });
    }
    let (version, rest) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let (msg, rest) =
        postcard::take_from_bytes::<T>(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Attempt, TaskId};
    use crate::wire::task::{TaskRequest, TaskResponse};

    #[test]
    fn round_trip_and_refusals() {
        let msg = TaskRequest::Started { task: TaskId::new(1, 2), attempt: Attempt(3) };
        let bytes = encode(&msg, limits::TASK).unwrap();
        assert_eq!(decode::<TaskRequest>(&bytes, limits::TASK).unwrap(), msg);

        let mut wrong_version = bytes.clone();
        wrong_version[0] = 2;
        assert_eq!(decode::<TaskRequest>(&wrong_version, limits::TASK), Err(WireError::Version(2)));

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode::<TaskRequest>(&trailing, limits::TASK), Err(WireError::Trailing(1)));

        assert!(matches!(decode::<TaskRequest>(&bytes, 2), Err(WireError::TooLarge { .. })));
        assert!(matches!(encode(&msg, 2), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic byte soup; the fuzz targets go much further.
        let mut x: u32 = 0x1234_5678;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0xFF) as u8
                })
                .collect();
            let _ = decode::<TaskRequest>(&bytes, limits::TASK);
            let _ = decode::<TaskResponse>(&bytes, limits::TASK);
            let _ = decode::<crate::wire::place::PlaceRequest>(&bytes, limits::PLACE);
            let _ = decode::<crate::wire::gossip::GossipRequest>(&bytes, limits::GOSSIP);
            let _ = decode::<crate::wire::receipt::ReceiptRequest>(&bytes, limits::RECEIPT);
            let _ = decode::<crate::wire::receipt::ReceiptResponse>(&bytes, limits::RECEIPT);
        }
    }
}
