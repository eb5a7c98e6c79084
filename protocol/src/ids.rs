//! Typed identifiers shared by every crate: peers, tasks, attempts, orgs, reservations.
//! Never pass bare strings or integers for these across a module boundary.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a textual identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The peer id is empty, too long or not base58.
    #[error("invalid peer id {0:?}: expected a base58 libp2p peer id")]
    Peer(String),
    /// The task id is not a 26-character Crockford base32 string.
    #[error("invalid task id {0:?}: expected 26 Crockford base32 characters")]
    Task(String),
    /// The org name breaks the naming rules.
    #[error("invalid org {0:?}: 1-63 characters of a-z, 0-9, '-', '_' or '.'")]
    Org(String),
}

/// A node's identity: the base58 form of its libp2p peer id (derived from its ed25519 key).
///
/// Kept as text so `protocol` needs no libp2p; the node converts at the boundary. Shared, not
/// copied: every record, digest entry and map key naming a peer points at one allocation, which
/// is what lets a node (or a simulator of ten thousand of them) hold a large mesh's ids cheaply.
///
/// Ordered as its text (the digest window and `fill` rely on one order across the mesh), but
/// compared 16 bytes at a time first: every ed25519 id starts with the same 8 characters, so
/// comparing text went through `memcmp` for every step of every map lookup (13% of the
/// simulator's time at 1,000 nodes). The prefix is read, not stored: a 10,000-node simulation
/// holds 10⁸ ids, and 16 more bytes each cost 1.6 GB.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerId(Arc<str>);

impl PartialOrd for PeerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix().cmp(&other.prefix()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PeerId {
    /// Longest accepted textual peer id; libp2p ed25519 ids are 52 characters.
    pub const MAX_LEN: usize = 128;

    /// Parses and validates a base58 peer id.
    pub fn new(text: impl AsRef<str>) -> Result<Self, IdError> {
        Self::parse(text.as_ref())
    }

    fn parse(text: &str) -> Result<Self, IdError> {
        let base58 = |c: u8| c.is_ascii_alphanumeric() && !matches!(c, b'0' | b'O' | b'I' | b'l');
        if text.is_empty() || text.len() > Self::MAX_LEN || !text.bytes().all(base58) {
            return Err(IdError::Peer(text.to_owned()));
        }
        Ok(Self(text.into()))
    }

    /// The full base58 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for logs: the last 8 characters, which differ between ed25519 ids.
    pub fn short(&self) -> &str {
        let n = self.0.len();
        &self.0[n.saturating_sub(8)..]
    }

    /// The first 16 bytes of the text, big-endian, zero-padded: base58 has no NUL, so the
    /// padding sorts a shorter text before a longer one exactly as the text does.
    fn prefix(&self) -> u128 {
        let bytes = self.0.as_bytes();
        match bytes.first_chunk::<16>() {
            Some(head) => u128::from_be_bytes(*head),
            None => {
                let mut head = [0u8; 16];
                head[..bytes.len()].copy_from_slice(bytes);
                u128::from_be_bytes(head)
            }
        }
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Straight from the borrowed bytes into the shared allocation: a gossip digest holds
        // hundreds of ids, and an intermediate `String` per id doubled the cost of decoding one.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = PeerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base58 peer id")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PeerId, E> {
                PeerId::parse(text).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId(..{})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerId::new(s)
    }
}

/// A task's identity: 48 bits of creation time (unix ms) then 80 random bits, so ids sort by age.
///
/// Shown as 26 Crockford base32 characters (the ULID text form).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(u128);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl TaskId {
    /// Builds an id from its creation time and 80 random bits (higher bits of `random` are ignored).
    pub fn new(unix_ms: u64, random: u128) -> Self {
        let time = u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80;
        Self(time | (random & ((1u128 << 80) - 1)))
    }

    /// The raw 128-bit value (the store's key).
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Rebuilds an id from its raw value.
    pub fn from_u128(raw: u128) -> Self {
        Self(raw)
    }

    /// Creation time in unix milliseconds.
    pub fn unix_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 26];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 125 - 5 * i as i32;
            let idx = if shift >= 0 { (self.0 >> shift) & 0x1F } else { (self.0 << (-shift)) & 0x1F };
            *slot = CROCKFORD[idx as usize];
        }
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).unwrap_or("?"))
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

impl FromStr for TaskId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::Task(s.chars().take(40).collect());
        if s.len() != 26 {
            return Err(bad());
        }
        let mut value: u128 = 0;
        for (i, c) in s.bytes().enumerate() {
            let c = c.to_ascii_uppercase();
            let c = match c {
                b'O' => b'0',
                b'I' | b'L' => b'1',
                other => other,
            };
            let digit = CROCKFORD.iter().position(|&a| a == c).ok_or_else(bad)? as u128;
            // The first character carries only 3 bits of a 128-bit value.
            if i == 0 && digit > 7 {
                return Err(bad());
            }
            value = (value << 5) | digit;
        }
        Ok(Self(value))
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { s.serialize_u128(self.0) }
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            u128::deserialize(d).map(TaskId)
        }
    }
}

/// The number of a placement attempt of one task, starting at 1. Results are fenced by it:
/// only the current attempt may report.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt(1);

    /// The attempt after this one.
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attempt({})", self.0)
    }
}

/// An organization's name: one node per org in a mesh.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Org(String);

impl Org {
    /// Validates an org name: 1-63 characters of `a-z 0-9 - _ .` (lower case, so `Acme` and `acme`
    /// cannot be two orgs).
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
        if name.is_empty() || name.len() > 63 || !name.chars().all(ok) {
            return Err(IdError::Org(name));
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Org {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Org::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Org {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Org {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Org({})", self.0)
    }
}

impl FromStr for Org {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Org::new(s)
    }
}

/// A capacity reservation made by a candidate host for one bid; unique per host.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
#[serde(transparent)]
pub struct ReservationId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_id_text_round_trips_and_sorts_by_time() {
        let a = TaskId::new(1_700_000_000_000, 0xDEAD_BEEF);
        let b = TaskId::new(1_700_000_000_001, 0);
        let text = a.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<TaskId>(), Ok(a));
        assert_eq!(text.to_lowercase().parse::<TaskId>(), Ok(a));
        assert!(a < b && a.to_string() < b.to_string());
        assert_eq!(a.unix_ms(), 1_700_000_000_000);
        let max = TaskId::from_u128(u128::MAX);
        assert_eq!(max.to_string().parse::<TaskId>(), Ok(max));
        assert!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<TaskId>().is_err());
        assert!("short".parse::<TaskId>().is_err());
    }

    #[test]
    fn task_id_is_text_in_json_and_an_integer_in_postcard() {
        let id = TaskId::new(42, 7);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<TaskId>(&bytes).unwrap(), id);
    }

    #[test]
    fn org_and_peer_validation() {
        assert!(Org::new("acme").is_ok());
        assert!(Org::new("Acme").is_err());
        assert!(Org::new("").is_err());
        assert!(Org::new("a".repeat(64)).is_err());
        assert!(serde_json::from_str::<Org>("\"bad org\"").is_err());
        assert!(PeerId::new("12D3KooWabc").is_ok());
        assert!(PeerId::new("has space").is_err());
        assert!(PeerId::new("0OIl").is_err());
    }

    #[test]
    fn a_shared_peer_id_is_encoded_exactly_as_the_text_it_was() {
        // The wire carried `PeerId(String)` before ids were shared; old peers must still agree.
        let text = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let id = PeerId::new(text).unwrap();
        assert_eq!(postcard::to_allocvec(&id).unwrap(), postcard::to_allocvec(&text.to_string()).unwrap());
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        let back: PeerId = postcard::from_bytes(&postcard::to_allocvec(&id).unwrap()).unwrap();
        assert_eq!(back, id);
        assert!(postcard::from_bytes::<PeerId>(&postcard::to_allocvec(&"has space").unwrap()).is_err());
    }

    #[test]
    fn peer_ids_sort_exactly_as_their_text() {
        // Every node must agree on one order (digest windows are id ranges), whatever version
        // it runs; the prefix is only a shortcut to the text's order.
        let texts = [
            "1",
            "12",
            "12D3KooW",
            "12D3KooWa",
            "12D3KooWabcdefgh",
            "12D3KooWabcdefgh1",
            "12D3KooWabcdefgh2",
            "12D3KooWabcdefgi",
            "12D3KooWb",
            "2",
            "Qm",
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
            "z",
        ];
        let ids: Vec<PeerId> = texts.iter().map(|t| PeerId::new(t).unwrap()).collect();
        for (a, ta) in ids.iter().zip(texts) {
            for (b, tb) in ids.iter().zip(texts) {
                assert_eq!(a.cmp(b), ta.cmp(tb), "{ta} vs {tb}");
                assert_eq!(a == b, ta == tb);
            }
        }
    }
}
