//! The signed result receipt: a host's signed statement of how an attempt it ran ended (exit
//! code, output digest, resource usage). The origin checks it against what it received and keeps
//! it with the task, so anyone holding the receipt can later show what the host claimed, with
//! nothing but the host's peer id (an ed25519 peer id embeds its public key).
//!
//! The signature covers [`DOMAIN`] followed by `postcard(Receipt)`: exactly the bytes
//! [`Receipt::signed_bytes`] returns and the JSON view carries as `signed`, so a verifier never
//! re-encodes. Never sign anything else with this prefix, and never accept a receipt whose
//! `signed` bytes do not decode to exactly one `Receipt`.

use serde::{Deserialize, Serialize};

use crate::ids::{Attempt, PeerId, TaskId};
use crate::record::Keyring;

/// Domain separation: no other signed object of orgmesh starts with these bytes, so a receipt
/// signature can never be replayed as a record signature or the other way round.
pub const DOMAIN: &[u8] = b"orgmesh-receipt-v1\0";

/// The largest `signed` encoding accepted anywhere (the error text is the only unbounded field).
pub const MAX_SIGNED_LEN: usize = 8 * 1024;

/// What an attempt used, as its host measured it. `None`: the host could not tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock milliseconds from start to exit.
    pub wall_ms: u64,
    /// CPU time (user and system) in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Peak resident memory in bytes.
    pub peak_memory_bytes: Option<u64>,
}

/// How one attempt ended, as its host states it. Field order is the encoding: never reorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: Attempt,
    /// The node the attempt ran for.
    pub origin: PeerId,
    /// The node that ran it, and signed this.
    pub host: PeerId,
    /// The exit code, if the process exited by itself.
    pub exit_code: Option<i32>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Whether it ended because it was cancelled.
    pub cancelled: bool,
    /// Bytes of output in all (stdout and stderr interleaved, the cut marker included).
    pub log_len: u64,
    /// SHA-256 of those bytes.
    pub output_sha256: [u8; 32],
    /// What it used.
    pub usage: Usage,
    /// When it ended, unix milliseconds on the host's clock.
    pub finished_at_ms: u64,
}

/// Why a receipt is not good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The signed bytes do not start with [`DOMAIN`].
    #[error("the signed bytes do not start with the receipt domain prefix")]
    Domain,
    /// The signed bytes are not one receipt.
    #[error("the signed bytes are not a receipt: {0}")]
    Malformed(String),
    /// The signed bytes are longer than [`MAX_SIGNED_LEN`].
    #[error("the signed bytes are {0} long, over the limit")]
    TooLarge(usize),
    /// The signature is not the host's over these bytes.
    #[error("the signature is not {host}'s over these bytes")]
    Signature {
        /// The host the receipt names.
        host: PeerId,
    },
}

impl Receipt {
    /// The exact bytes a host signs: [`DOMAIN`] then `postcard(self)`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = DOMAIN.to_vec();
        // Encoding a struct of plain fields into a Vec cannot fail; an empty body would only
        // make the signature fail to verify, never pass.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes [`Receipt::signed_bytes`] output; anything else (wrong prefix, trailing bytes,
    /// oversize) is refused.
    pub fn from_signed_bytes(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > MAX_SIGNED_LEN {
            return Err(ReceiptError::TooLarge(bytes.len()));
        }
        let body = bytes.strip_prefix(DOMAIN).ok_or(ReceiptError::Domain)?;
        let (receipt, rest) =
            postcard::take_from_bytes::<Receipt>(body).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ReceiptError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(receipt)
    }
}

/// A receipt with its host's signature over [`Receipt::signed_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// What the host states.
    pub receipt: Receipt,
    /// `receipt.host`'s signature.
    pub signature: Vec<u8>,
}

impl SignedReceipt {
    /// Signs `receipt` with the local key (which must be `receipt.host`'s).
    pub fn sign(receipt: Receipt, keyring: &dyn Keyring) -> Self {
        let signature = keyring.sign(&receipt.signed_bytes());
        Self { receipt, signature }
    }

    /// Checks the signature against `receipt.host`: proves that host stated exactly this.
    pub fn verify(&self, keyring: &dyn Keyring) -> Result<(), ReceiptError> {
        Self::verify_parts(&self.receipt.signed_bytes(), &self.signature, keyring).map(|_| ())
    }

    /// Verifies signed bytes and a signature as they were served (offline: the `signed` and
    /// `signature` of the JSON view), returning the receipt they prove.
    pub fn verify_parts(
        signed: &[u8],
        signature: &[u8],
        keyring: &dyn Keyring,
    ) -> Result<Receipt, ReceiptError> {
        let receipt = Receipt::from_signed_bytes(signed)?;
        if !keyring.verify(&receipt.host, signed, signature) {
            return Err(ReceiptError::Signature { host: receipt.host });
        }
        Ok(receipt)
    }
}

/// A receipt as the origin keeps it with the task: the signed receipt, and whether the origin
/// could check its digest against the output bytes it received (it cannot after it restarted
/// while the attempt's output streamed in). In JSON (`GET /v1/tasks/{id}`) it is a flat object:
/// the receipt's fields (digest in hex), `signature` and `signed` (the exact signed bytes) in
/// hex, and `digest_checked`; only `signed` and `signature` are read back, the rest is a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    /// The receipt.
    pub signed: SignedReceipt,
    /// The origin compared `output_sha256` with the bytes it received, and they matched.
    pub digest_checked: bool,
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Bytes of a hex string (either case); `None` if it is not hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16);
    text.chunks(2).map(|p| Some((nibble(p[0])? * 16 + nibble(p[1])?) as u8)).collect()
}

/// The JSON view's shape, for serializing.
#[derive(Serialize)]
struct JsonView<'a> {
    task: TaskId,
    attempt: Attempt,
    origin: &'a PeerId,
    host: &'a PeerId,
    exit_code: Option<i32>,
    error: &'a Option<String>,
    cancelled: bool,
    log_len: u64,
    output_sha256: String,
    usage: Usage,
    finished_at_ms: u64,
    signature: String,
    signed: String,
    digest_checked: bool,
}

/// The part of the JSON view that is read back: the rest is derived from `signed`.
#[derive(Deserialize)]
struct JsonIn {
    signed: String,
    signature: String,
    #[serde(default)]
    digest_checked: bool,
}

/// The compact form (postcard, in the store).
#[derive(Serialize, Deserialize)]
struct Compact {
    signed: SignedReceipt,
    digest_checked: bool,
}

impl Serialize for StoredReceipt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return Compact { signed: self.signed.clone(), digest_checked: self.digest_checked }.serialize(s);
        }
        let r = &self.signed.receipt;
        JsonView {
            task: r.task,
            attempt: r.attempt,
            origin: &r.origin,
            host: &r.host,
            exit_code: r.exit_code,
            error: &r.error,
            cancelled: r.cancelled,
            log_len: r.log_len,
            output_sha256: to_hex(&r.output_sha256),
            usage: r.usage,
            finished_at_ms: r.finished_at_ms,
            signature: to_hex(&self.signed.signature),
            signed: to_hex(&r.signed_bytes()),
            digest_checked: self.digest_checked,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for StoredReceipt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if !d.is_human_readable() {
            let c = Compact::deserialize(d)?;
            return Ok(Self { signed: c.signed, digest_checked: c.digest_checked });
        }
        let j = JsonIn::deserialize(d)?;
        let signed = from_hex(&j.signed).ok_or_else(|| D::Error::custom("`signed` is not hex"))?;
        let signature = from_hex(&j.signature).ok_or_else(|| D::Error::custom("`signature` is not hex"))?;
        let receipt = Receipt::from_signed_bytes(&signed).map_err(D::Error::custom)?;
        Ok(Self { signed: SignedReceipt { receipt, signature }, digest_checked: j.digest_checked })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::InsecureTestKeyring;

    fn host() -> PeerId {
        PeerId::new("12D3KooWhost").unwrap()
    }

    fn sample() -> Receipt {
        Receipt {
            task: TaskId::new(1_700_000_000_000, 42),
            attempt: Attempt(2),
            origin: PeerId::new("12D3KooWorigin").unwrap(),
            host: host(),
            exit_code: Some(0),
            error: None,
            cancelled: false,
            log_len: 6,
            output_sha256: [7; 32],
            usage: Usage { wall_ms: 1200, cpu_ms: Some(30), peak_memory_bytes: Some(1 << 20) },
            finished_at_ms: 1_700_000_001_200,
        }
    }

    #[test]
    fn a_receipt_verifies_with_its_hosts_key_only() {
        let signed = SignedReceipt::sign(sample(), &InsecureTestKeyring::new(host()));
        let verifier = InsecureTestKeyring::new(PeerId::new("12D3KooWanyone").unwrap());
        assert_eq!(signed.verify(&verifier), Ok(()));
        // Signed by someone else while naming the host.
        let forged =
            SignedReceipt::sign(sample(), &InsecureTestKeyring::new(PeerId::new("12D3KooWx").unwrap()));
        assert!(matches!(forged.verify(&verifier), Err(ReceiptError::Signature { .. })));
    }

    #[test]
    fn changing_any_byte_of_the_signed_bytes_or_the_signature_fails() {
        let keyring = InsecureTestKeyring::new(host());
        let signed = SignedReceipt::sign(sample(), &keyring);
        let bytes = signed.receipt.signed_bytes();
        assert_eq!(SignedReceipt::verify_parts(&bytes, &signed.signature, &keyring), Ok(sample()));
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[i] ^= flip;
                assert!(
                    SignedReceipt::verify_parts(&changed, &signed.signature, &keyring).is_err(),
                    "byte {i} ^ {flip:#x} still verified"
                );
            }
        }
        for i in 0..signed.signature.len() {
            let mut sig = signed.signature.clone();
            sig[i] ^= 0x01;
            assert!(SignedReceipt::verify_parts(&bytes, &sig, &keyring).is_err(), "signature byte {i}");
        }
        // Nothing may be added or taken away either.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SignedReceipt::verify_parts(&longer, &signed.signature, &keyring).is_err());
        assert!(SignedReceipt::verify_parts(&bytes[..bytes.len() - 1], &signed.signature, &keyring).is_err());
        assert!(SignedReceipt::verify_parts(&bytes, &[], &keyring).is_err());
    }

    #[test]
    fn hostile_signed_bytes_are_refused_not_panicked_on() {
        let keyring = InsecureTestKeyring::new(host());
        assert_eq!(Receipt::from_signed_bytes(b""), Err(ReceiptError::Domain));
        assert_eq!(Receipt::from_signed_bytes(b"orgmesh-record-v1\0"), Err(ReceiptError::Domain));
        assert!(matches!(Receipt::from_signed_bytes(DOMAIN), Err(ReceiptError::Malformed(_))));
        let huge = vec![0u8; MAX_SIGNED_LEN + 1];
        assert_eq!(Receipt::from_signed_bytes(&huge), Err(ReceiptError::TooLarge(MAX_SIGNED_LEN + 1)));
        let mut x: u32 = 0x9e37_79b9;
        for len in 0..300 {
            let mut bytes = DOMAIN.to_vec();
            bytes.extend((0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x & 0xff) as u8
            }));
            let _ = SignedReceipt::verify_parts(&bytes, &[1, 2, 3], &keyring);
        }
    }

    #[test]
    fn the_json_view_carries_the_exact_signed_bytes_and_reads_back() {
        let signed = SignedReceipt::sign(sample(), &InsecureTestKeyring::new(host()));
        let stored = StoredReceipt { signed: signed.clone(), digest_checked: true };
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(json["output_sha256"], to_hex(&[7; 32]));
        assert_eq!(json["host"], "12D3KooWhost");
        assert_eq!(json["exit_code"], 0);
        assert_eq!(json["signed"], to_hex(&signed.receipt.signed_bytes()));
        let back: StoredReceipt = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, stored);
        // The unsigned view fields are not trusted on the way back: `signed` decides.
        let mut lying = json;
        lying["exit_code"] = 1.into();
        let back: StoredReceipt = serde_json::from_value(lying).unwrap();
        assert_eq!(back.signed.receipt.exit_code, Some(0));
        // And the compact form round-trips through postcard.
        let bytes = postcard::to_allocvec(&stored).unwrap();
        assert_eq!(postcard::from_bytes::<StoredReceipt>(&bytes).unwrap(), stored);
    }

    #[test]
    fn hex_round_trips_and_refuses_non_hex() {
        assert_eq!(from_hex(&to_hex(&[0, 1, 0xab, 0xff])), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(from_hex("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
    }
}
