//! Who may call what: bearer tokens with scopes, checked before any handler runs.
//!
//! A token is a random string given to its holder once; the node keeps only its SHA-256 (hex in
//! `orgmesh.toml`), so a leaked config does not leak a usable token. Every request's token is
//! hashed and compared with every configured hash in constant time. Scopes: `read` (every GET),
//! `submit` (submit and cancel), `admin` (drain; implies the other two).
//!
//! Without a token a request is `anonymous`: it may reach the open routes (`/healthz`,
//! `/readyz`) and, when the API listens on a loopback address and `open_on_loopback` allows it,
//! everything, as the actor `anonymous@loopback`. A missing or unknown token answers 401 with
//! `WWW-Authenticate: Bearer`; a known token without the route's scope answers 403.
//!
//! The middleware that applies this policy to each request is `access`; the caller and scope
//! types are `caller`'s. This module must never log or echo a presented token, and never
//! compare secrets with `==`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::caller::{Caller, Scope, grants};
use crate::ratelimit::RateLimiter;

/// One configured token: a name for the event log, its scopes, and the SHA-256 of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// Who holds it (`ci`, `alice`): recorded as the actor of what it does.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not secret, but it is noise in logs.
        f.debug_struct("TokenEntry").field("name", &self.name).field("scopes", &self.scopes).finish()
    }
}

/// SHA-256 of a token, the form stored at rest.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lower-case hex of a hash.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a hash.
pub fn parse_sha256_hex(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256 must be 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A fresh random token: `om_` and 43 URL-safe characters (256 bits from the OS RNG).
pub fn generate_token() -> Result<String, String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    // 6 bits per character; 43 characters carry the 256 bits (the last one partly).
    let mut out = String::from("om_");
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    Ok(out)
}

/// The API's access policy.
#[derive(Debug, Clone)]
pub struct Security {
    tokens: Vec<TokenEntry>,
    /// Tokenless requests get every scope (only ever true on a loopback listener).
    anonymous_allowed: bool,
    limiter: Option<Arc<RateLimiter>>,
}

/// Why a policy cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A non-loopback API with no token could answer nothing but health checks.
    #[error(
        "the API listens on {0}, which is not a loopback address, and [api] has no tokens: \
         every request would be refused. Create one with `orgmesh token create --name NAME --scope read` \
         and add it under [[api.tokens]], or listen on 127.0.0.1"
    )]
    NoTokens(SocketAddr),
    /// Two tokens share a name, so the event log could not tell them apart.
    #[error("two [[api.tokens]] are named {0:?}: names must be unique")]
    DuplicateName(String),
}

impl Security {
    /// Everything open to everyone, as `anonymous@loopback`: for a router that is not
    /// reachable from outside (tests, and the default before a policy is set).
    pub fn open() -> Self {
        Self { tokens: Vec::new(), anonymous_allowed: true, limiter: None }
    }

    /// The policy for an API listening on `addr`: tokenless requests get every scope only when
    /// `addr` is loopback and `open_on_loopback` is set. A non-loopback API without tokens is
    /// refused, so a misconfiguration fails at start rather than serving nothing (or everything).
    pub fn new(
        addr: SocketAddr,
        tokens: Vec<TokenEntry>,
        open_on_loopback: bool,
    ) -> Result<Self, SecurityError> {
        let loopback = addr.ip().is_loopback();
        if !loopback && tokens.is_empty() {
            return Err(SecurityError::NoTokens(addr));
        }
        let mut names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SecurityError::DuplicateName(w[0].to_string()));
        }
        Ok(Self { tokens, anonymous_allowed: loopback && open_on_loopback, limiter: None })
    }

    /// Adds a per-caller rate limit.
    pub fn with_rate_limit(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// The per-caller rate limit, if any.
    pub(crate) fn limiter(&self) -> Option<&RateLimiter> {
        self.limiter.as_deref()
    }

    /// Whether tokenless requests are let in (as `anonymous@loopback`).
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous_allowed
    }

    /// The caller behind `authorization` (the header's value, if any).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthError> {
        let Some(value) = authorization else {
            return if self.anonymous_allowed {
                Ok(Caller::anonymous_loopback())
            } else {
                Err(AuthError::Missing)
            };
        };
        let token = bearer(value).ok_or(AuthError::Malformed)?;
        let hash = hash_token(token);
        // Compare against every entry, never stopping early, so timing says nothing about which.
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.tokens {
            if bool::from(entry.sha256.ct_eq(&hash)) {
                found = Some(entry);
            }
        }
        found.map(|e| Caller { actor: e.name.clone(), scopes: e.scopes.clone() }).ok_or(AuthError::Unknown)
    }
}

/// The token out of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header, and tokenless requests are not allowed.
    #[error("this API needs a bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// No configured token has this hash.
    #[error("unknown or revoked token")]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str, scopes: &[Scope]) -> TokenEntry {
        TokenEntry { name: name.into(), scopes: scopes.to_vec(), sha256: hash_token(token) }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = hash_token("secret");
        // Known SHA-256 of "secret".
        assert_eq!(to_hex(&h), "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b");
        assert_eq!(parse_sha256_hex(&to_hex(&h)), Ok(h));
        assert!(parse_sha256_hex("abc").is_err());
        assert!(parse_sha256_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn generated_tokens_are_long_distinct_and_url_safe() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43);
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
    }

    #[test]
    fn tokens_authenticate_by_hash_only() {
        let sec = Security::new(
            addr("0.0.0.0:7070"),
            vec![entry("ci", "tok-ci", &[Scope::Submit]), entry("ops", "tok-ops", &[Scope::Admin])],
            true,
        )
        .unwrap();
        assert!(!sec.anonymous_allowed(), "open_on_loopback never opens a non-loopback API");
        let ci = sec.authenticate(Some(b"Bearer tok-ci")).unwrap();
        assert_eq!((ci.actor.as_str(), ci.scopes.as_slice()), ("ci", &[Scope::Submit][..]));
        assert_eq!(sec.authenticate(Some(b"bearer   tok-ops")).unwrap().actor, "ops");
        assert_eq!(sec.authenticate(None), Err(AuthError::Missing));
        assert_eq!(sec.authenticate(Some(b"Bearer tok-nope")), Err(AuthError::Unknown));
        assert_eq!(sec.authenticate(Some(b"Basic dG9rLWNp")), Err(AuthError::Malformed));
        assert_eq!(sec.authenticate(Some(b"Bearer ")), Err(AuthError::Malformed));
    }

    #[test]
    fn loopback_rule() {
        let open = Security::new(addr("127.0.0.1:7070"), Vec::new(), true).unwrap();
        assert_eq!(open.authenticate(None).unwrap(), Caller::anonymous_loopback());
        let v6 = Security::new(addr("[::1]:7070"), Vec::new(), true).unwrap();
        assert!(v6.anonymous_allowed());
        // Closed loopback with tokens: a tokenless call is refused, a token still works.
        let closed =
            Security::new(addr("127.0.0.1:7070"), vec![entry("a", "t", &[Scope::Read])], false).unwrap();
        assert_eq!(closed.authenticate(None), Err(AuthError::Missing));
        assert_eq!(closed.authenticate(Some(b"Bearer t")).unwrap().actor, "a");
        // Tokens on an open loopback API still name their holder.
        let both =
            Security::new(addr("127.0.0.1:7070"), vec![entry("a", "t", &[Scope::Read])], true).unwrap();
        assert_eq!(both.authenticate(Some(b"Bearer t")).unwrap().actor, "a");
        assert_eq!(both.authenticate(Some(b"Bearer wrong")), Err(AuthError::Unknown));
    }

    #[test]
    fn a_public_api_without_tokens_is_refused() {
        let e = Security::new(addr("0.0.0.0:7070"), Vec::new(), true).unwrap_err();
        assert_eq!(e, SecurityError::NoTokens(addr("0.0.0.0:7070")));
        assert!(e.to_string().contains("orgmesh token create"), "{e}");
        let dup = vec![entry("a", "1", &[Scope::Read]), entry("a", "2", &[Scope::Read])];
        assert!(matches!(
            Security::new(addr("127.0.0.1:1"), dup, true),
            Err(SecurityError::DuplicateName(_))
        ));
    }
}
