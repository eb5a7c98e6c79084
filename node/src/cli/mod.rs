//! The `orgmesh` command line: `init`, `up`, `demo`, `completions`, and the client commands that
//! talk to the local node's REST API. Output is an aligned table by default (coloured only on a
//! terminal without `NO_COLOR`) and JSON with `--json`; waiting commands show a spinner on stderr
//! only when stderr is a terminal. Exit codes are stable: see [`EXIT_CODES`]. `token create` makes
//! API tokens; client commands send one with `--token`, `--token-file`,
//! `$ORGMESH_TOKEN_FILE` or `$ORGMESH_TOKEN`.

pub mod client;
mod output;
mod progress;

use std::io::Write;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::{Config, parse_labels};
use client::{Client, ClientError};
use output::Style;
use progress::Spinner;

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

/// Runs a client command; returns the process exit code.
pub async fn run_client(cli: &Cli) -> i32 {
    match client_command(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// The token a client command sends: `--token`, else the file `--token-file` names, else the
/// file in `ORGMESH_TOKEN_FILE`, else `ORGMESH_TOKEN`; a flag always beats a variable. The file
/// holds the token alone (surrounding whitespace, such as a Secret's trailing newline, is
/// dropped). An unreadable or empty file is an error naming it, never a silent tokenless request.
fn token_from(
    flag: Option<&str>,
    flag_file: Option<&std::path::Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if let Some(token) = flag {
        return Ok(Some(token.to_string()));
    }
    let (source, path) = match (flag_file, env("ORGMESH_TOKEN_FILE").filter(|v| !v.is_empty())) {
        (Some(path), _) => ("--token-file", path.to_path_buf()),
        (None, Some(path)) => ("ORGMESH_TOKEN_FILE", PathBuf::from(path)),
        (None, None) => return Ok(env("ORGMESH_TOKEN").filter(|v| !v.is_empty())),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the token file {} ({source}): {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the token file {} ({source}) is empty", path.display()));
    }
    if token.contains(char::is_whitespace) {
        // A header value cannot hold a newline; a TOML entry pasted here is the usual cause.
        return Err(format!(
            "the token file {} ({source}) holds more than one word: it should hold only the token",
            path.display()
        ));
    }
    Ok(Some(token.to_string()))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn client_command(cli: &Cli) -> Result<i32, ClientError> {
    let token = match token_from(cli.token.as_deref(), cli.token_file.as_deref(), |k| std::env::var(k).ok()) {
        Ok(token) => token,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(2);
        }
    };
    let client = Client::new(&cli.api, token.as_deref());
    let style = Style::detect();
    match &cli.command {
        Command::Status => {
            let node: Value = client.get("/v1/node").await?;
            if cli.json {
                print_json(&node);
            } else {
                print!("{}", output::node(style, &node));
            }
        }
        Command::Peers => {
            let peers: Value = client.get("/v1/peers").await?;
            if cli.json {
                print_json(&peers);
            } else {
                print!("{}", output::peers(style, &peers));
            }
        }
        Command::Tasks { status, limit, cursor } => {
            let mut path = format!("/v1/tasks?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let tasks: Value = client.get(&path).await?;
            if cli.json {
                print_json(&tasks);
            } else {
                print!("{}", output::tasks(style, &tasks));
            }
        }
        Command::Task { id } => {
            let task: Value = client.get(&format!("/v1/tasks/{id}")).await?;
            if cli.json {
                print_json(&task);
            } else {
                print!("{}", output::task(style, &task));
            }
        }
        Command::Submit {
            cpu,
            mem,
            gpus,
            org,
            label,
            env,
            timeout,
            max_attempts,
            queue_timeout,
            priority,
            idempotency_key,
            wait,
            command,
        } => {
            let labels = parse_labels(label).map_err(|e| ClientError::Protocol(format!("--label: {e}")))?;
            let env = parse_labels(env).map_err(|e| ClientError::Protocol(format!("--env: {e}")))?;
            let mut spec = json!({ "command": command, "env": env, "constraints": {"orgs": org, "node_labels": labels} });
            let mut resources = serde_json::Map::new();
            if let Some(v) = cpu {
                resources.insert("cpu_millis".into(), json!(v));
            }
            if let Some(v) = mem {
                resources.insert("memory_mb".into(), json!(v));
            }
            if let Some(v) = gpus {
                resources.insert("gpus".into(), json!(v));
            }
            if !resources.is_empty() {
                spec["resources"] = Value::Object(resources);
            }
            for (key, value) in [
                ("timeout_s", timeout.map(|v| json!(v))),
                ("max_attempts", max_attempts.map(|v| json!(v))),
                ("queue_timeout_s", queue_timeout.map(|v| json!(v))),
                ("priority", priority.map(|v| json!(v))),
            ] {
                if let Some(v) = value {
                    spec[key] = v;
                }
            }
            let headers: Vec<(&str, String)> =
                idempotency_key.iter().map(|k| ("Idempotency-Key", k.clone())).collect();
            let submitted: Value = client.post("/v1/tasks", &spec, &headers).await?;
            let id = submitted["id"].as_str().unwrap_or_default().to_string();
            if !*wait {
                if cli.json {
                    print_json(&submitted);
                } else {
                    println!("{id}");
                }
                return Ok(0);
            }
            // With --json, stdout carries only the final task; the output is left to `logs`.
            let spinner = Spinner::start(format!("task {id}: waiting for it to finish"));
            if !spinner.is_active() {
                eprintln!("submitted {id}; waiting for it to finish");
            }
            let followed = follow_logs(&client, &id, &spinner, !cli.json, false).await;
            spinner.stop();
            followed?;
            let task: Value = client.get(&format!("/v1/tasks/{id}")).await?;
            if cli.json {
                print_json(&task);
            } else if let Some(error) = task["error"].as_str() {
                // Otherwise a task that never ran (no node could take it) ends in silence.
                eprintln!("task {id} {}: {error}", task["status"].as_str().unwrap_or("ended"));
            }
            return Ok(task_exit_code(&task));
        }
        Command::Logs { follow, id } => {
            if *follow {
                let spinner = Spinner::start(format!("following task {id}"));
                let followed = follow_logs(&client, id, &spinner, true, cli.json).await;
                spinner.stop();
                followed?;
            } else {
                let text = client.get_text(&format!("/v1/tasks/{id}/logs")).await?;
                if cli.json {
                    print_json(&json!({ "id": id, "offset": 0, "text": text }));
                } else {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
            }
        }
        Command::Cancel { id } => {
            let v: Value = client.post(&format!("/v1/tasks/{id}/cancel"), &json!({}), &[]).await?;
            if cli.json {
                print_json(&v);
            } else {
                println!("cancelling {id}");
            }
        }
        Command::Drain { wait } => {
            let mut v: Value = client.post("/v1/drain", &json!({}), &[]).await?;
            // Draining again is harmless and answers the current count, so it doubles as a poll.
            while *wait && v["running"].as_u64().unwrap_or(0) > 0 {
                if !cli.json {
                    eprintln!("draining: {} attempt(s) still running here", v["running"]);
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                v = client.post("/v1/drain", &json!({}), &[]).await?;
            }
            if cli.json {
                print_json(&v);
            } else if v["running"].as_u64() == Some(0) {
                println!("drained: nothing runs here; safe to stop");
            } else {
                println!("draining: {} attempt(s) still running here", v["running"]);
            }
        }
        Command::Init { .. }
        | Command::Up { .. }
        | Command::Demo { .. }
        | Command::Completions { .. }
        | Command::Token { .. } => {}
    }
    Ok(0)
}

/// The exit code `submit --wait` ends with: the task's own, 1 if it failed without one, 130 if
/// it was cancelled.
fn task_exit_code(task: &Value) -> i32 {
    match task["status"].as_str() {
        Some("succeeded") => 0,
        Some("cancelled") => 130,
        _ => task["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1),
    }
}

/// Follows a task's log to its end. `print`: write the output at all; `json`: as one JSON line
/// per chunk (`{"offset", "text"}`, offset = bytes after it) and a last `{"end": status}` line.
async fn follow_logs(
    client: &Client,
    id: &str,
    spinner: &Spinner,
    print: bool,
    json: bool,
) -> Result<(), ClientError> {
    client
        .follow_sse(&format!("/v1/tasks/{id}/logs?follow=true"), |event, offset, data| {
            let end = event == "end";
            if print && json {
                let line = if end {
                    let status = serde_json::from_str::<Value>(data).map(|v| v["status"].clone());
                    json!({ "end": status.unwrap_or(Value::Null) })
                } else {
                    json!({ "offset": offset.and_then(|o| o.parse::<u64>().ok()), "text": data })
                };
                spinner.print(&format!("{line}\n"));
            } else if print && !end {
                spinner.print(data);
                spinner.set_message(format!("task {id}: running"));
            }
            !end
        })
        .await
}

/// `orgmesh token create`: prints a fresh token (stdout, once) and its config entry (stderr, or
/// appended to `--config`). The token itself is never written anywhere.
pub fn token(command: &TokenCommand, json: bool) -> anyhow::Result<()> {
    let TokenCommand::Create { name, scopes, config } = command;
    if name.trim().is_empty() || name.contains(['"', '\\', '\n']) {
        anyhow::bail!("--name must be non-empty, without quotes, backslashes or newlines");
    }
    let token = orgmesh_api::auth::generate_token().map_err(anyhow::Error::msg)?;
    let sha256 = orgmesh_api::auth::to_hex(&orgmesh_api::auth::hash_token(&token));
    let mut scopes = scopes.clone();
    scopes.sort();
    scopes.dedup();
    let entry = crate::config::ApiToken { name: name.clone(), scopes, sha256 };
    let snippet = token_snippet(&entry);
    if let Some(path) = config {
        append_token(path, &entry, &snippet)?;
    }
    if json {
        print_json(&json!({
            "name": entry.name, "scopes": entry.scopes, "token": token, "sha256": entry.sha256, "toml": snippet,
        }));
    } else {
        println!("{token}");
        eprintln!("This token is shown once; the node keeps only its SHA-256.");
        match config {
            Some(path) => eprintln!("Added to {} (restart the node to use it):\n\n{snippet}", path.display()),
            None => eprintln!("Add this to the node's orgmesh.toml and restart it:\n\n{snippet}"),
        }
    }
    Ok(())
}

/// The `[[api.tokens]]` entry for `entry`.
fn token_snippet(entry: &crate::config::ApiToken) -> String {
    let scopes: Vec<String> = entry.scopes.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[[api.tokens]]\nname = {:?}\nscopes = [{}]\nsha256 = \"{}\"\n",
        entry.name,
        scopes.join(", "),
        entry.sha256
    )
}

/// Appends the entry to the config file, refusing a file that would then not load or that
/// already has a token of that name; the file is left as it was on refusal.
fn append_token(
    path: &std::path::Path,
    entry: &crate::config::ApiToken,
    snippet: &str,
) -> anyhow::Result<()> {
    let before =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let config = Config::parse(&before)
        .map_err(|e| anyhow::anyhow!("{} is not a valid config: {e}", path.display()))?;
    if config.api.tokens.iter().any(|t| t.name == entry.name) {
        anyhow::bail!("{} already has a token named {:?}", path.display(), entry.name);
    }
    let sep = if before.is_empty() || before.ends_with("\n\n") {
        ""
    } else if before.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    let after = format!("{before}{sep}{snippet}");
    let parsed = Config::parse(&after).map_err(|e| {
        anyhow::anyhow!(
            "appending to {} would break it ({e}); add the entry by hand:\n{snippet}",
            path.display()
        )
    })?;
    if !parsed.api.tokens.iter().any(|t| t == entry) {
        anyhow::bail!(
            "appending to {} did not add the token; add the entry by hand:\n{snippet}",
            path.display()
        );
    }
    std::fs::write(path, after).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// `orgmesh init`: writes the config and the key; prints the peer id.
pub fn init(command: &Command) -> anyhow::Result<()> {
    let Command::Init {
        dir,
        org,
        name,
        p2p_port,
        api_addr,
        bootstrap,
        label,
        slots,
        accept_from,
        mesh_key_file,
        trusted_peer,
    } = command
    else {
        anyhow::bail!("not an init command");
    };
    let mut config = Config::default();
    config.node.org = org.clone();
    config.node.name = name.clone();
    config.node.data_dir = PathBuf::from(".");
    config.node.labels = parse_labels(label).map_err(anyhow::Error::msg)?;
    // Every interface only for a keyed mesh: without a key, a listener beyond loopback refuses
    // to start (nothing would decide who may connect).
    let listen_ip = if mesh_key_file.is_some() { "0.0.0.0" } else { "127.0.0.1" };
    config.p2p.listen = vec![format!("/ip4/{listen_ip}/tcp/{p2p_port}")];
    config.p2p.bootstrap = bootstrap.clone();
    config.api.addr = api_addr.parse().map_err(|e| anyhow::anyhow!("--api-addr {api_addr:?}: {e}"))?;
    if let Some(slots) = slots {
        config.capacity.slots = *slots;
    }
    config.policy.accept_from = accept_from.clone();
    config.trust.trusted_peers = trusted_peer.clone();
    if let Some(file) = mesh_key_file {
        let file = std::path::absolute(file)?;
        if file.exists() {
            crate::p2p::read_mesh_key(&file)?;
        } else {
            crate::p2p::create_mesh_key(&file)?;
            eprintln!("created mesh key {}: give the same file to every org of the mesh", file.display());
        }
        config.trust.mesh_key_file = Some(file);
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join("orgmesh.toml");
    std::fs::write(&path, config.to_toml())?;
    // Load it back: refuses what `up` would refuse, now rather than later.
    let config = Config::load(Some(&path), |_| None)?;
    let key = crate::identity::load_or_create(&config.identity_path())?;
    println!("{}", key.public().to_peer_id());
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_a_flag_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drain-token");
        std::fs::write(&file, "om_from-file\n").unwrap();
        let file_s = file.display().to_string();
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let none = |_: &str| None;
        assert_eq!(token_from(None, None, none), Ok(None));
        assert_eq!(token_from(Some("om_flag"), None, none), Ok(Some("om_flag".into())));
        assert_eq!(token_from(None, Some(&file), none), Ok(Some("om_from-file".into())), "newline dropped");
        // A flag beats either variable, and the file variable beats the token variable.
        let env_file = file_s.clone();
        let both = move |k: &str| match k {
            "ORGMESH_TOKEN_FILE" => Some(env_file.clone()),
            "ORGMESH_TOKEN" => Some("om_env".to_string()),
            _ => None,
        };
        assert_eq!(token_from(Some("om_flag"), None, &both), Ok(Some("om_flag".into())));
        assert_eq!(token_from(None, None, &both), Ok(Some("om_from-file".into())));
        assert_eq!(token_from(None, None, vars(&[("ORGMESH_TOKEN", "om_env")])), Ok(Some("om_env".into())));
        let other = dir.path().join("other");
        std::fs::write(&other, "om_other").unwrap();
        assert_eq!(token_from(None, Some(&other), &both), Ok(Some("om_other".into())));

        // Hostile or broken files say which file, and never fall back to no token.
        let missing = dir.path().join("missing");
        let err = token_from(None, Some(&missing), &both).unwrap_err();
        assert!(err.contains("missing") && err.contains("--token-file"), "{err}");
        std::fs::write(&other, " \n\t").unwrap();
        let err = token_from(None, Some(&other), none).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        std::fs::write(&other, "[[tokens]]\nname = \"drain\"\n").unwrap();
        let err = token_from(None, Some(&other), none).unwrap_err();
        assert!(err.contains("only the token"), "{err}");
        std::fs::write(&other, "om_a\r\nom_b").unwrap();
        assert!(token_from(None, Some(&other), none).is_err(), "no header injection through the file");
    }

    #[test]
    fn token_flags_conflict_only_with_each_other() {
        // Variables are not flags: parsing never fails because ORGMESH_TOKEN is exported.
        let cli = Cli::try_parse_from(["orgmesh", "--token-file", "/f", "status"]).unwrap();
        assert_eq!(cli.token_file.as_deref(), Some(std::path::Path::new("/f")));
        assert!(Cli::try_parse_from(["orgmesh", "--token", "t", "--token-file", "/f", "status"]).is_err());
    }

    #[test]
    fn completions_generate_for_each_shell() {
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "complete -F"),
            (clap_complete::Shell::Zsh, "#compdef orgmesh"),
            (clap_complete::Shell::Fish, "complete -c orgmesh"),
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(marker), "{shell}: no {marker:?}");
            for sub in ["submit", "logs", "completions"] {
                assert!(text.contains(sub), "{shell}: no {sub}");
            }
        }
    }

    #[test]
    fn cli_parses_and_documents_exit_codes() {
        Cli::command().debug_assert();
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("3    the node is not reachable"), "{help}");
        let cli = Cli::try_parse_from(["orgmesh", "completions", "zsh"]).unwrap();
        assert!(matches!(cli.command, Command::Completions { shell: clap_complete::Shell::Zsh }));
        assert!(Cli::try_parse_from(["orgmesh", "completions", "tcsh"]).is_err());
    }

    #[test]
    fn submit_wait_exit_codes() {
        assert_eq!(task_exit_code(&json!({"status": "succeeded", "exit_code": 0})), 0);
        assert_eq!(task_exit_code(&json!({"status": "failed", "exit_code": 7})), 7);
        assert_eq!(task_exit_code(&json!({"status": "failed", "exit_code": null})), 1);
        assert_eq!(task_exit_code(&json!({"status": "cancelled", "exit_code": null})), 130);
    }

    #[test]
    fn unreachable_error_names_the_address_and_how_to_start_a_node() {
        let e = ClientError::Unreachable {
            url: "http://127.0.0.1:7070".into(),
            reason: "Connection refused".into(),
        };
        let text = e.to_string();
        assert!(text.contains("http://127.0.0.1:7070") && text.contains("Connection refused"), "{text}");
        assert!(text.contains("orgmesh up") && text.contains("--api"), "{text}");
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn a_created_token_appends_to_an_init_config_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orgmesh.toml");
        std::fs::write(&path, Config::default().to_toml()).unwrap();
        let token = orgmesh_api::auth::generate_token().unwrap();
        let sha256 = orgmesh_api::auth::to_hex(&orgmesh_api::auth::hash_token(&token));
        let entry = crate::config::ApiToken {
            name: "ci".into(),
            scopes: vec!["read".into(), "submit".into()],
            sha256,
        };
        append_token(&path, &entry, &token_snippet(&entry)).unwrap();
        let config = Config::load(Some(&path), |_| None).unwrap();
        let tokens = config.api_tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].sha256, orgmesh_api::auth::hash_token(&token));
        // A second token of the same name is refused and leaves the file as it was.
        let before = std::fs::read_to_string(&path).unwrap();
        assert!(append_token(&path, &entry, &token_snippet(&entry)).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        // The token itself is in neither the file nor the snippet.
        assert!(!before.contains(&token));
    }
}
