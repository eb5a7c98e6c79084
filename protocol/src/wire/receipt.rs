//! `/orgmesh/receipt/1`: a host hands the origin its signed receipt of an attempt, after the
//! attempt's output is delivered and before its `Finished` report, so the origin can check the
//! digest against the bytes it received and store the receipt with the result. A separate
//! protocol, not a new task message: an origin that predates receipts refuses the stream
//! (`UnsupportedProtocols`), and the host reports `Finished` without one (docs/protocol.md §9).

use serde::{Deserialize, Serialize};

use crate::ids::Attempt;
use crate::receipt::SignedReceipt;

/// Host → origin: the receipt of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRequest {
    /// The receipt, signed by the sender.
    pub receipt: SignedReceipt,
}

/// The origin's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptResponse {
    /// Checked and kept: it goes into the task's record with the result.
    Ack,
    /// The origin owns no such task.
    Unknown,
    /// Not the current attempt of that task (or not placed on the sender).
    Stale {
        /// The current attempt.
        current: Attempt,
    },
    /// Refused: the signature, the host, the origin, the output length or the digest does not
    /// match what the origin knows. Counted; the result itself is still taken from `Finished`.
    Mismatch,
}
