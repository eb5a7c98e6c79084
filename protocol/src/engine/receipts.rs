//! The origin's side of result receipts: it hashes the current attempt's output as it arrives,
//! checks a host's receipt against that hash, the attempt's fencing and the host's signature,
//! holds it until the attempt's `Finished`, and keeps it with the result only if the two agree.
//! A receipt that fails any check is dropped and counted (`bad_receipts`); it never fails the
//! task, which is still taken from `Finished` as before receipts existed.

use rand::Rng;
use sha2::{Digest, Sha256};

use super::origin::Active;
use super::{Archive, Engine, Lookup};
use crate::ids::{PeerId, TaskId};
use crate::receipt::{Receipt, SignedReceipt, StoredReceipt};
use crate::wire::receipt::ReceiptResponse;
use crate::wire::task::Outcome;

/// SHA-256 of an attempt's output from its first byte, as far as it arrived in order.
#[derive(Debug, Clone, Default)]
pub(super) struct OutputDigest {
    hasher: Sha256,
    len: u64,
}

impl Active {
    /// Hashes the part of a log chunk (at `offset` of the attempt's output) not hashed yet.
    /// `false` if the chunk starts past what was hashed (bytes in between never arrived).
    pub(super) fn digest_chunk(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(d) = self.digest.as_mut() else { return true };
        if offset > d.len {
            return false;
        }
        let skip = usize::try_from(d.len - offset).unwrap_or(usize::MAX);
        if let Some(new) = data.get(skip..).filter(|n| !n.is_empty()) {
            d.hasher.update(new);
            d.len = d.len.saturating_add(new.len() as u64);
        }
        true
    }
}

/// Why a receipt was refused, for the log.
fn check(
    receipt: &Receipt,
    from: &PeerId,
    local: &PeerId,
    digest: Option<&OutputDigest>,
) -> Result<bool, &'static str> {
    if receipt.host != *from {
        return Err("names another host than its sender");
    }
    if receipt.origin != *local {
        return Err("names another origin");
    }
    let Some(d) = digest else { return Ok(false) };
    if d.len != receipt.log_len {
        return Err("states another output length than was received");
    }
    if d.hasher.clone().finalize().as_slice() != receipt.output_sha256 {
        return Err("states another output digest than the bytes received");
    }
    Ok(true)
}

impl<R: Rng> Engine<R> {
    /// A host's receipt for an attempt of a task of this node. `None`: the store cannot tell
    /// (the host retries).
    pub(super) fn handle_receipt(
        &mut self,
        from: &PeerId,
        signed: SignedReceipt,
        archive: &dyn Archive,
    ) -> Option<ReceiptResponse> {
        let (id, attempt) = (signed.receipt.task, signed.receipt.attempt);
        let Some(active) = self.active.get(&id) else {
            // Ended: a resend whose answer was lost (the result came after the receipt).
            return match archive.ended(id) {
                Lookup::Ended { attempt: a, host } if a == attempt && host.as_ref() == Some(from) => {
                    Some(ReceiptResponse::Ack)
                }
                Lookup::Ended { attempt: current, .. } => Some(ReceiptResponse::Stale { current }),
                Lookup::Unknown => Some(ReceiptResponse::Unknown),
                Lookup::Unavailable => None,
            };
        };
        if !active.fenced_ok(from, attempt) {
            self.counters.stale_reports += 1;
            return Some(ReceiptResponse::Stale { current: active.task.attempt });
        }
        let verdict = check(&signed.receipt, from, &self.local, active.digest.as_ref()).and_then(|checked| {
            signed.verify(&*self.keyring).map(|()| checked).map_err(|_| "is not signed by its host")
        });
        match verdict {
            Ok(digest_checked) => {
                if let Some(a) = self.active.get_mut(&id) {
                    a.receipt = Some(StoredReceipt { signed, digest_checked });
                }
                Some(ReceiptResponse::Ack)
            }
            Err(why) => {
                self.counters.bad_receipts += 1;
                tracing::warn!(task = %id, %attempt, from = %from.short(), why, "receipt refused");
                Some(ReceiptResponse::Mismatch)
            }
        }
    }

    /// The receipt to keep with the result `outcome` of `id`'s current attempt: the one held,
    /// if it states that same result. One that states another is dropped and counted.
    pub(super) fn receipt_for(&mut self, id: TaskId, outcome: &Outcome) -> Option<StoredReceipt> {
        let stored = self.active.get_mut(&id)?.receipt.take()?;
        let r = &stored.signed.receipt;
        let same = !outcome.lost
            && r.exit_code == outcome.exit_code
            && r.error == outcome.error
            && r.cancelled == outcome.cancelled
            && r.log_len == outcome.log_len;
        if !same {
            self.counters.bad_receipts += 1;
            tracing::warn!(task = %id, "receipt dropped: it states another result than was reported");
            return None;
        }
        Some(stored)
    }
}
