//! Who is calling and what they may do: [`Scope`], [`Caller`] and the rule that `admin` implies
//! the other scopes. A leaf module: the policy (`auth`), the middleware (`access`), the route
//! table (`routes`) and the handlers all use these types, so this module must never import any
//! of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a token allows. `Admin` implies `Submit` and `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every read: node, peers, tasks, logs, events, metrics, the OpenAPI document.
    Read,
    /// Submit and cancel tasks.
    Submit,
    /// Drain the node.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Submit, Scope::Admin];

    /// The name used in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "submit" => Ok(Scope::Submit),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}: use read, submit or admin")),
        }
    }
}

/// Whether holding `held` grants `needed`.
pub fn grants(held: &[Scope], needed: Scope) -> bool {
    held.iter().any(|h| *h == needed || *h == Scope::Admin)
}

/// Who made a request, as recorded in the event log, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or `anonymous@loopback`.
    pub actor: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// The actor of tokenless requests on an open loopback API.
    pub const ANONYMOUS_LOOPBACK: &'static str = "anonymous@loopback";

    /// A caller with every scope (a tokenless request on an open loopback API, or a test).
    pub fn anonymous_loopback() -> Self {
        Self { actor: Self::ANONYMOUS_LOOPBACK.into(), scopes: vec![Scope::Admin] }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    /// The authenticated caller; a router without the auth layer (never built by this crate)
    /// would make every call anonymous.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or_else(Caller::anonymous_loopback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_everything_and_others_only_themselves() {
        for s in Scope::ALL {
            assert!(grants(&[Scope::Admin], s));
        }
        assert!(grants(&[Scope::Read], Scope::Read));
        assert!(!grants(&[Scope::Read], Scope::Submit));
        assert!(!grants(&[Scope::Submit], Scope::Read));
        assert!(!grants(&[Scope::Read, Scope::Submit], Scope::Admin));
        assert!(!grants(&[], Scope::Read));
        assert_eq!("admin".parse::<Scope>(), Ok(Scope::Admin));
        assert!("root".parse::<Scope>().is_err());
    }
}
