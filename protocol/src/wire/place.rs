//! `/orgmesh/place/1`: placement negotiation. The origin asks candidates for bids; a candidate
//! reserves capacity for a short TTL and offers, or declines with a reason; the origin commits to
//! the best offer and releases the others.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{Attempt, Org, ReservationId, TaskId};
use crate::task::{Constraints, Resources, TaskSpec};

/// Origin → candidate: would you run this?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRequest {
    /// The task.
    pub task: TaskId,
    /// The attempt being placed.
    pub attempt: Attempt,
    /// The origin's org, checked against the candidate's acceptance policy.
    pub origin_org: Org,
    /// What it needs.
    pub resources: Resources,
    /// Where it may run; the candidate re-checks its own fit.
    pub constraints: Constraints,
}

/// Why a candidate declined.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeclineReason {
    /// Its policy does not accept tasks from the origin's org.
    Policy,
    /// Not enough free capacity right now.
    Busy,
    /// It is draining and takes no new work.
    Draining,
    /// It can never meet the constraints or resources (details in words).
    Unfit(String),
}

impl DeclineReason {
    /// Whether retrying the same candidate later could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeclineReason::Busy)
    }
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeclineReason::Policy => f.write_str("does not accept tasks from this org"),
            DeclineReason::Busy => f.write_str("no free capacity"),
            DeclineReason::Draining => f.write_str("draining"),
            DeclineReason::Unfit(why) => write!(f, "unfit: {why}"),
        }
    }
}

/// Candidate → origin: an offer or a refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BidResponse {
    /// Capacity is reserved until the TTL runs out or the origin commits or releases.
    Offer {
        /// The reservation to commit or release.
        reservation: ReservationId,
        /// How long the reservation holds, in milliseconds from when it was made.
        ttl_ms: u32,
        /// How idle the candidate stays if it takes the task, in permille (higher is better).
        score: u16,
    },
    /// No.
    Decline {
        /// Why not.
        reason: DeclineReason,
    },
}

/// Origin → winner: run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The reservation from the winning offer.
    pub reservation: ReservationId,
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: Attempt,
    /// The origin's org.
    pub origin_org: Org,
    /// The full spec.
    pub spec: TaskSpec,
}

/// Winner → origin: did the commit take?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitResponse {
    /// The host runs the attempt and will report to the origin.
    Accepted,
    /// The reservation expired or is unknown; place again.
    Rejected {
        /// Why, in words.
        reason: String,
    },
}

/// A request on the placement protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlaceRequest {
    /// Ask for a bid.
    Bid(BidRequest),
    /// Commit to an offer.
    Commit(CommitRequest),
    /// Give back a reservation that lost.
    Release {
        /// The reservation.
        reservation: ReservationId,
    },
}

/// The answer to a [`PlaceRequest`], same variant as the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlaceResponse {
    /// Answer to `Bid`.
    Bid(BidResponse),
    /// Answer to `Commit`.
    Commit(CommitResponse),
    /// Answer to `Release`.
    Released,
}
