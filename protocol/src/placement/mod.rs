//! Placement negotiation. The origin's [`Negotiator`] filters its view of the mesh by constraints,
//! policy and resources, asks a few of those with room (drawn at random) for a bid, commits to
//! the best offer and releases the rest. Each candidate's [`Host`] keeps the capacity ledger: it
//! reserves for a short TTL when it offers, runs what is committed, and declines with a reason
//! otherwise. The origin is a candidate like any other (the driver delivers its messages to its
//! own `Host` locally).
//!
//! Never: read a clock, do I/O or draw unseeded randomness here; the driver owns all three.

#[cfg(test)]
mod flood_tests;
mod host;
mod negotiator;
#[cfg(test)]
mod tests;

pub use host::{DEFAULT_RESERVATION_TTL, Host, HostConfig};
pub use negotiator::{
    DEFAULT_SUSPECT_FOR, MAX_SUSPECTS, Negotiator, NegotiatorOutput, PlacedOn, PlacementConfig,
    PlacementEvent,
};
