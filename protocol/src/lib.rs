//! orgmesh's protocol core: the wire types every node speaks and the sans-IO state machines that
//! decide what to say. Nothing here reads a clock, touches a socket or draws unseeded randomness:
//! the node drives these machines over libp2p, the simulator over a virtual network, with the
//! same code.
//!
//! Layout:
//! - [`ids`], [`time`]: typed identifiers and the two kinds of time.
//! - [`task`]: task specs, records and statuses (validation included).
//! - [`record`]: a node's signed self-description and capacity.
//! - [`receipt`]: a host's signed statement of how an attempt ended, checkable offline.
//! - [`wire`]: versioned postcard envelopes with size limits, one module per libp2p protocol.
//! - [`membership`]: Scuttlebutt gossip of records plus a heartbeat failure detector.
//! - [`placement`]: bid/commit/release negotiation (`Negotiator` at the origin, `Host` at each
//!   candidate).
//! - [`engine`]: the one machine a node is: all of the above plus the origin's task table and
//!   the host's reporter, behind one input type, one output type and one deadline.
//! - [`lifecycle`]: the leases that keep a placed attempt alive at its origin (renewal,
//!   `unreachable`, replacement after `replace_after_s`) and the back-off between attempts.
//!
//! Calling contract shared by the state machines (after quinn-proto): feed inputs with
//! `handle_*(…, now)`, then drain `poll_output()` until `None`, and call `handle_timeout(now)` once
//! `now >= poll_timeout()`.
#![warn(missing_docs)]

pub mod engine;
pub mod ids;
pub mod lifecycle;
pub mod membership;
pub mod placement;
pub mod receipt;
pub mod record;
pub mod settings;
pub mod task;
pub mod time;
pub mod wire;

pub use ids::{Attempt, IdError, Org, PeerId, ReservationId, TaskId};
pub use record::{AcceptPolicy, Capacity, Isolation, Keyring, NodeRecord, RecordVersion, SignedRecord};
pub use task::{Resources, Task, TaskSpec, TaskStatus};
pub use time::{Time, Timestamp};
