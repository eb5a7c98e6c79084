//! The `orgmesh` command line: `init`, `up`, `demo`, `completions`, and the client commands that
//! talk to the local node's REST API. Output is an aligned table by default (coloured only on a
//! terminal without `NO_COLOR`) and JSON with `--json`; waiting commands show a spinner on stderr
//! only when stderr is a terminal. Exit codes are stable: see [`EXIT_CODES`]. `token create` makes
//! API tokens; client commands send one with `--token`, `--token-file`,
//! `$ORGMESH_TOKEN_FILE` or `$ORGMESH_TOKEN`.
//!
//! Layout: this file holds the command line's shape (flags, subcommands, exit codes);
//! `remote` the client commands that call the node's API; `setup` `init` and `token create`,
//! which write files and call nothing; `receipt` the offline receipt check, which calls nothing
//! either; `client`, `output` and `progress` what they share.

pub mod client;
mod output;
mod progress;
mod receipt;
mod remote;
mod setup;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;

pub use receipt::receipt;
pub use remote::run_client;
pub use setup::{init, token};

/// The exit codes scripts can rely on; also shown by `orgmesh --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    error (the node refused the request, or something else went wrong)
  2    usage error (bad arguments)
  3    the node is not reachable (not running, or another --api address)
  4    not found (no such task at this node)
  5    no token, or a token the node does not know (HTTP 401)
  6    the token lacks the scope the command needs (HTTP 403)
  submit --wait exits with the task's own exit code: 0 when it succeeded, its non-zero exit
  code when it failed (1 when it failed without one, e.g. never placed), 130 when cancelled.";

/// orgmesh: a peer-to-peer orchestrator mesh between organizations.
#[derive(Debug, Parser)]
#[command(name = "orgmesh", version, about, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// The local node's API.
    #[arg(long, global = true, env = "ORGMESH_API", default_value = "http://127.0.0.1:7070")]
    pub api: String,
    /// API token, sent as `Authorization: Bearer` (needed unless the node's API is open on
    /// loopback). Without it: the file in $ORGMESH_TOKEN_FILE, else $ORGMESH_TOKEN.
    // The variables are read by `token_from`, not by clap: clap counts a variable as the flag
    // itself, so `conflicts_with` would reject `--token-file F` whenever ORGMESH_TOKEN is
    // exported, and `--token T` in any pod that sets ORGMESH_TOKEN_FILE.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Read the API token from this file (a Kubernetes Secret, say) instead of `--token`.
    #[arg(long, global = true, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Machine-readable output (JSON) for every read command.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format of `up` and `demo`.
    #[arg(long, global = true, value_parser = ["human", "json"], default_value = "human")]
    pub log_format: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write DIR/orgmesh.toml and the node's identity key; print its peer id.
    Init {
        /// Directory for the config, key and data.
        #[arg(long)]
        dir: PathBuf,
        /// This node's org.
        #[arg(long)]
        org: String,
        /// Node name (default: the org).
        #[arg(long)]
        name: Option<String>,
        /// TCP port of the p2p listener.
        #[arg(long, default_value_t = 7000)]
        p2p_port: u16,
        /// Address of the local API.
        #[arg(long, default_value = "127.0.0.1:7070")]
        api_addr: String,
        /// A peer to start from: a multiaddr ending in /p2p/<peer id>.
        #[arg(long)]
        bootstrap: Vec<String>,
        /// A node label, KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
        /// Concurrent task slots.
        #[arg(long)]
        slots: Option<u32>,
        /// Only run tasks from these orgs or peer ids (default: every org).
        #[arg(long)]
        accept_from: Vec<String>,
        /// The mesh's pre-shared key: created if the file does not exist (share it with the other
        /// orgs), used as is otherwise. Without it no connection completes.
        #[arg(long)]
        mesh_key_file: Option<PathBuf>,
        /// Only these peer ids may connect (repeat for each).
        #[arg(long)]
        trusted_peer: Vec<String>,
    },
    /// Run a node.
    Up {
        /// Config file (default: $ORGMESH_CONFIG, else built-in defaults in ./orgmesh-data).
        #[arg(long, env = "ORGMESH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start a local mesh of N orgs on 127.0.0.1; Ctrl-C stops it.
    Demo {
        /// Number of orgs.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// API port of the first node (the others follow).
        #[arg(long, default_value_t = 7070)]
        api_port: u16,
        /// p2p port of the first node (the others follow).
        #[arg(long, default_value_t = 7000)]
        p2p_port: u16,
    },
    /// This node.
    Status,
    /// The peers this node knows.
    Peers,
    /// Tasks submitted at this node, newest first.
    Tasks {
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this task id (the `next_cursor` of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One task.
    Task {
        /// Task id.
        id: String,
    },
    /// Submit a task: orgmesh submit [options] -- CMD ARGS...
    Submit {
        /// CPU in thousandths of a core.
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory in MiB.
        #[arg(long)]
        mem: Option<u64>,
        /// GPUs.
        #[arg(long)]
        gpus: Option<u32>,
        /// Run only at these orgs.
        #[arg(long)]
        org: Vec<String>,
        /// Run only on nodes with this label, KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
        /// Environment variable, KEY=VALUE.
        #[arg(long)]
        env: Vec<String>,
        /// Timeout of one attempt, seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Placement attempts.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Seconds to wait for capacity.
        #[arg(long)]
        queue_timeout: Option<u64>,
        /// Priority among pending tasks.
        #[arg(long)]
        priority: Option<i32>,
        /// Idempotency key: resubmitting with the same key returns the same task.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for the task, print its output, exit with its exit code.
        #[arg(long)]
        wait: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A task's output.
    Logs {
        /// Follow until the task ends.
        #[arg(short, long)]
        follow: bool,
        /// Task id.
        id: String,
    },
    /// Cancel a task wherever it runs.
    Cancel {
        /// Task id.
        id: String,
    },
    /// Stop taking new work on this node.
    Drain {
        /// Wait until nothing runs here any more (every attempt ended and its result delivered).
        #[arg(long)]
        wait: bool,
    },
    /// Print a shell completion script: orgmesh completions bash > /etc/bash_completion.d/orgmesh
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// API tokens.
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Result receipts: a host's signed statement of how an attempt ended.
    Receipt {
        /// What to do.
        #[command(subcommand)]
        command: ReceiptCommand,
    },
}

/// `orgmesh receipt ...`.
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt offline, with nothing but the host's peer id: exits 0 and prints what it
    /// proves, or exits 1 naming what failed.
    Verify {
        /// JSON of a task record (`GET /v1/tasks/{id}`, `orgmesh task ID --json`) or of its
        /// `receipt`; `-` reads stdin.
        file: PathBuf,
        /// Also check that these bytes are the output the receipt states (its length and digest).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// `orgmesh token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token once, and the `[[api.tokens]]` entry (its SHA-256) for orgmesh.toml.
    Create {
        /// Who holds it; events record this name as the actor.
        #[arg(long)]
        name: String,
        /// read, submit or admin (admin implies the others); repeat for several.
        #[arg(long = "scope", required = true, value_parser = ["read", "submit", "admin"])]
        scopes: Vec<String>,
        /// Append the entry to this config file (the node reads it at its next start).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "orgmesh", out);
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
