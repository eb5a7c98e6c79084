//! The client commands (`status`, `peers`, `tasks`, `task`, `submit`, `logs`, `cancel`, `drain`):
//! each one or a few calls to the node's REST API, printed as a table or as JSON. Never reads the
//! node's files or config: everything it knows comes from the API.

use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::output::{self, Style};
use super::progress::Spinner;
use super::{Cli, Command, print_json};
use crate::config::parse_labels;

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
pub(super) fn token_from(
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
        | Command::Token { .. }
        | Command::Receipt { .. } => {}
    }
    Ok(0)
}

/// The exit code `submit --wait` ends with: the task's own, 1 if it failed without one, 130 if
/// it was cancelled.
pub(super) fn task_exit_code(task: &Value) -> i32 {
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
