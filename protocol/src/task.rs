//! The task vocabulary: what a user submits (`TaskSpec`), the record an origin node keeps and
//! serves (`Task`), and the lifecycle (`TaskStatus`). Validation lives here so every entry point
//! (REST, CLI, wire) refuses the same things for the same reasons.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{Attempt, Org, PeerId, TaskId};
use crate::time::Timestamp;

/// Hard cap on one spec's postcard encoding; it travels inside bid and commit messages.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Longest timeout a task may ask for: one week.
pub const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// What a task needs from the node that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Whole GPUs.
    pub gpus: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self { cpu_millis: 100, memory_mb: 64, gpus: 0 }
    }
}

/// Where a task may run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Constraints {
    /// Orgs whose nodes may run the task; empty means any org.
    pub orgs: Vec<Org>,
    /// Labels the running node must carry, each with exactly this value.
    pub node_labels: BTreeMap<String, String>,
    /// The least isolation the running node must give (`none` or `sandbox`); absent: any.
    pub isolation: Option<crate::Isolation>,
}

/// A task as submitted. Only `command` is required; see INTERFACE.md for the JSON form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Program and arguments; run directly, not through a shell.
    pub command: Vec<String>,
    /// Environment of the child process, on top of a cleared environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Resources reserved on the running node.
    #[serde(default)]
    pub resources: Resources,
    /// Placement constraints.
    #[serde(default)]
    pub constraints: Constraints,
    /// Wall-clock limit of one attempt, in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// How many placement attempts the task may use.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long the task may wait `pending` for capacity, in seconds.
    #[serde(default = "default_queue_timeout_s")]
    pub queue_timeout_s: u64,
    /// Higher runs first among pending tasks.
    #[serde(default)]
    pub priority: i32,
    /// How long an executor that cannot be reached keeps its attempt before the task is placed
    /// again, in seconds. A short partition should not re-run a long job elsewhere, and a dead
    /// node should not hold a job for long; the task shows `unreachable` meanwhile.
    #[serde(default = "default_replace_after_s")]
    pub replace_after_s: u64,
}

fn default_timeout_s() -> u64 {
    3600
}
fn default_max_attempts() -> u32 {
    3
}
fn default_queue_timeout_s() -> u64 {
    600
}
fn default_replace_after_s() -> u64 {
    60
}

/// Why a task spec was refused; each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// `command` is empty or its program is an empty string.
    #[error("command: must name a program (a non-empty list whose first element is not empty)")]
    EmptyCommand,
    /// A string contains a NUL byte, which no process can receive.
    #[error("{0}: must not contain NUL bytes")]
    Nul(String),
    /// An environment variable name is empty or contains '='.
    #[error("env: invalid variable name {0:?}")]
    EnvName(String),
    /// A number is out of its allowed range.
    #[error("{field}: must be between {min} and {max}")]
    Range {
        /// The field.
        field: &'static str,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A label key is empty.
    #[error("constraints.node_labels: label keys must not be empty")]
    EmptyLabel,
    /// The spec is larger than `MAX_SPEC_BYTES` once encoded.
    #[error("spec is {0} bytes encoded, more than the limit of {MAX_SPEC_BYTES}")]
    TooLarge(usize),
}

impl TaskSpec {
    /// A spec with defaults for everything but the command.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            env: BTreeMap::new(),
            resources: Resources::default(),
            constraints: Constraints::default(),
            timeout_s: default_timeout_s(),
            max_attempts: default_max_attempts(),
            queue_timeout_s: default_queue_timeout_s(),
            priority: 0,
            replace_after_s: default_replace_after_s(),
        }
    }

    /// Checks everything serde's types cannot: ranges, NULs, names, encoded size.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.command.first().is_none_or(|p| p.is_empty()) {
            return Err(SpecError::EmptyCommand);
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(SpecError::Nul("command".into()));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SpecError::EnvName(k.clone()));
            }
            if v.contains('\0') {
                return Err(SpecError::Nul(format!("env.{k}")));
            }
        }
        if self.constraints.node_labels.keys().any(|k| k.is_empty()) {
            return Err(SpecError::EmptyLabel);
        }
        let range = |field, v: u64, min, max| {
            if (min..=max).contains(&v) { Ok(()) } else { Err(SpecError::Range { field, min, max }) }
        };
        range("timeout_s", self.timeout_s, 1, MAX_TIMEOUT_S)?;
        range("max_attempts", u64::from(self.max_attempts), 1, 100)?;
        range("queue_timeout_s", self.queue_timeout_s, 0, MAX_TIMEOUT_S)?;
        range("replace_after_s", self.replace_after_s, 1, MAX_TIMEOUT_S)?;
        range("resources.cpu_millis", u64::from(self.resources.cpu_millis), 0, 1_024_000)?;
        range("resources.memory_mb", self.resources.memory_mb, 0, 1 << 30)?;
        range("resources.gpus", u64::from(self.resources.gpus), 0, 1024)?;
        let size = postcard::experimental::serialized_size(self).unwrap_or(usize::MAX);
        if size > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge(size));
        }
        Ok(())
    }
}

/// Where a task is in its life. See INTERFACE.md for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for capacity.
    Pending,
    /// Asking candidates for bids.
    Placing,
    /// A host accepted the commit; not started yet.
    Placed,
    /// The host started the command.
    Running,
    /// The host cannot be reached; its attempt is kept for now.
    Unreachable,
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit, timeout, or no node could run it.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Pending,
        TaskStatus::Placing,
        TaskStatus::Placed,
        TaskStatus::Running,
        TaskStatus::Unreachable,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// Whether the task can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled)
    }

    /// The lower-case name used in JSON and in event names (`task.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Placing => "placing",
            TaskStatus::Placed => "placed",
            TaskStatus::Running => "running",
            TaskStatus::Unreachable => "unreachable",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// A stable small number for indexes.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// The node a task was submitted at; it owns the task's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOrigin {
    /// The origin node.
    pub peer_id: PeerId,
    /// Its org.
    pub org: Org,
}

/// The node an attempt was placed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlacement {
    /// The host.
    pub peer_id: PeerId,
    /// Its org.
    pub org: Org,
    /// Its node name.
    pub name: String,
}

/// One attempt in a task's placement history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's number.
    pub attempt: Attempt,
    /// Where it was placed.
    pub placement: TaskPlacement,
    /// When the host accepted it.
    pub placed_at: Timestamp,
    /// When it ended, if it has.
    pub ended_at: Option<Timestamp>,
    /// How it ended, in words (`exit 0`, `host dead`, ...), if it has.
    pub outcome: Option<String>,
    /// Byte offset in the task's log where this attempt's output begins: the log holds the
    /// output of every attempt in order, and the result's output is the last attempt's.
    #[serde(default)]
    pub log_start: u64,
}

/// A task as its origin node stores and serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// What was submitted.
    pub spec: TaskSpec,
    /// Who owns it.
    pub origin: TaskOrigin,
    /// Where the current attempt runs, if placed.
    pub placement: Option<TaskPlacement>,
    /// The current attempt's number; 0 before the first placement.
    pub attempt: Attempt,
    /// The command's exit code once it finished.
    pub exit_code: Option<i32>,
    /// Why it failed or was cancelled, in words.
    pub error: Option<String>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Every placement it had, oldest first.
    pub history: Vec<AttemptRecord>,
    /// The host's signed receipt of the result, once the origin checked and accepted one.
    /// Last, so records stored before receipts are the same bytes minus this field.
    #[serde(default)]
    pub receipt: Option<crate::receipt::StoredReceipt>,
}

impl Task {
    /// A freshly accepted task, `pending` until the placer picks it up.
    pub fn new(id: TaskId, spec: TaskSpec, origin: TaskOrigin, now: Timestamp) -> Self {
        Self {
            id,
            status: TaskStatus::Pending,
            spec,
            origin,
            placement: None,
            attempt: Attempt(0),
            exit_code: None,
            error: None,
            created_at: now,
            updated_at: now,
            history: Vec::new(),
            receipt: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec: TaskSpec = serde_json::from_str(r#"{"command":["true"]}"#).unwrap();
        assert_eq!(spec, TaskSpec::new(vec!["true".into()]));
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn interface_example_parses() {
        let spec: TaskSpec = serde_json::from_str(
            r#"{"command":["sh","-c","echo hello"],"env":{"KEY":"value"},
            "resources":{"cpu_millis":100,"memory_mb":64,"gpus":0},
            "constraints":{"orgs":["globex"],"node_labels":{"zone":"b"}},
            "timeout_s":60,"max_attempts":3,"queue_timeout_s":600,"priority":0}"#,
        )
        .unwrap();
        assert_eq!(spec.constraints.orgs, vec![Org::new("globex").unwrap()]);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn bad_specs_are_refused_with_the_field_named() {
        assert!(serde_json::from_str::<TaskSpec>(r#"{"command":"not-a-list"}"#).is_err());
        assert!(serde_json::from_str::<TaskSpec>(r#"{"comand":["x"]}"#).is_err());
        let mut spec = TaskSpec::new(vec![]);
        assert_eq!(spec.validate(), Err(SpecError::EmptyCommand));
        spec.command = vec!["x".into()];
        spec.timeout_s = 0;
        assert!(spec.validate().unwrap_err().to_string().starts_with("timeout_s"));
        spec.timeout_s = 1;
        spec.env.insert("A=B".into(), "x".into());
        assert!(matches!(spec.validate(), Err(SpecError::EnvName(_))));
        spec.env.clear();
        spec.command.push("y".repeat(MAX_SPEC_BYTES));
        assert!(matches!(spec.validate(), Err(SpecError::TooLarge(_))));
    }

    #[test]
    fn task_round_trips_through_postcard_and_json() {
        let origin =
            TaskOrigin { peer_id: PeerId::new("12D3KooWx").unwrap(), org: Org::new("acme").unwrap() };
        let task = Task::new(TaskId::new(1, 2), TaskSpec::new(vec!["true".into()]), origin, Timestamp(5));
        let bytes = postcard::to_allocvec(&task).unwrap();
        assert_eq!(postcard::from_bytes::<Task>(&bytes).unwrap(), task);
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["status"], "pending");
        assert_eq!(json["placement"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Task>(json).unwrap(), task);
    }
}
