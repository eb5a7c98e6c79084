//! `orgmesh init` and `orgmesh token create`: the commands that write a node's files (its
//! config, identity key, mesh key, token entries) and never talk to a running node. A token is
//! printed once and never written anywhere in the clear.

use std::path::PathBuf;

use serde_json::json;

use super::{Command, TokenCommand, print_json};
use crate::config::{Config, parse_labels};

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
pub(super) fn token_snippet(entry: &crate::config::ApiToken) -> String {
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
pub(super) fn append_token(
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
