//! docs/configuration.md must name every key `orgmesh.toml` accepts and every `ORGMESH_*`
//! variable the node reads, so adding a setting without documenting it fails here.
//!
//! Keys are found two ways, and their union is checked:
//! - the default config serialized to TOML, walked table by table;
//! - the parser itself: every section refuses unknown keys, and serde's refusal lists the keys
//!   the section expects ("unknown field `x`, expected one of `a`, `b`"). Probing each listed key
//!   the same way tells sections from values, so keys that are absent by default (`Option`
//!   sections such as `[discovery.tailscale]`, optional values) are found too.
//!
//! Variables are every `"ORGMESH_…"` string literal in `node/src`.
//! A key counts as documented when the page has it in backticks with its full dotted path
//! (`` `discovery.tailscale.socket` ``); a variable when the page names it as a whole word.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orgmesh_node::config::Config;

/// A key no section will ever have: the probe's marker.
const PROBE: &str = "zz_not_a_key";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn docs() -> String {
    let path = repo_root().join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Dotted keys of a serialized config: tables are descended into, everything else is a key.
fn walk_value(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(table) = value {
        for (key, value) in table {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            // A table under a key is a section only if the parser says so (see `fields_of`):
            // `node.labels` is a table of the user's own keys.
            if value.is_table() && fields_of(&path).is_some() {
                walk_value(&path, value, out);
            } else {
                out.insert(path);
            }
        }
    }
}

/// The keys the section at `path` (dotted; empty for the top level) accepts, if it is a section
/// that refuses unknown keys; `None` if it is a plain value or a free-form table.
fn fields_of(path: &str) -> Option<Vec<String>> {
    let text = if path.is_empty() { format!("{PROBE} = 1\n") } else { format!("[{path}]\n{PROBE} = 1\n") };
    let err = Config::parse(&text).err()?;
    let marker = format!("unknown field `{PROBE}`");
    let rest = &err[err.find(&marker)? + marker.len()..];
    // serde: ", expected one of `a`, `b`", ", expected `a`", or ", there are no fields".
    let list = rest.split('\n').next().unwrap_or("");
    Some(list.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

/// Every key the parser accepts, found by probing from the top.
fn probe_keys(prefix: &str, out: &mut BTreeSet<String>) {
    let Some(fields) = fields_of(prefix) else { return };
    for field in fields {
        let path = if prefix.is_empty() { field } else { format!("{prefix}.{field}") };
        if fields_of(&path).is_some() {
            probe_keys(&path, out);
        } else {
            out.insert(path);
        }
    }
}

fn all_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let default: toml::Value =
        toml::from_str(&Config::default().to_toml()).expect("the default config serializes");
    walk_value("", &default, &mut keys);
    probe_keys("", &mut keys);
    keys
}

/// `"ORGMESH_…"` string literals in every `.rs` file under `dir`.
fn env_vars(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            env_vars(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, _) in text.match_indices("\"ORGMESH_") {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }
}

/// Whether `text` names `var` as a whole word (`ORGMESH_API` is not named by `ORGMESH_API_ADDR`).
fn mentions(text: &str, var: &str) -> bool {
    text.match_indices(var).any(|(i, _)| {
        let next = text[i + var.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

#[test]
fn the_probe_sees_sections_and_values() {
    // The probe must work, or the main test would pass vacuously.
    let top = fields_of("").expect("the top level refuses unknown keys");
    assert!(top.contains(&"node".to_string()) && top.contains(&"discovery".to_string()), "{top:?}");
    assert!(fields_of("discovery.tailscale").is_some_and(|f| f.contains(&"socket".to_string())));
    assert!(fields_of("node.org").is_none());
    assert!(fields_of("node.labels").is_none());
    assert!(mentions("`ORGMESH_API`, x", "ORGMESH_API") && !mentions("ORGMESH_API_ADDR", "ORGMESH_API"));
    let keys = all_keys();
    for key in ["node.org", "node.labels", "api.addr", "discovery.tailscale.tag", "discovery.dns.domain"] {
        assert!(keys.contains(key), "{key} not found among {keys:?}");
    }
}

#[test]
fn every_config_key_is_documented() {
    let docs = docs();
    let missing: Vec<String> =
        all_keys().into_iter().filter(|key| !docs.contains(&format!("`{key}`"))).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document these orgmesh.toml keys (write each with its full \
         dotted path in backticks, with its type, default, variable and meaning): {missing:?}"
    );
}

#[test]
fn every_environment_variable_is_documented() {
    let mut vars = BTreeSet::new();
    env_vars(&repo_root().join("node/src"), &mut vars);
    assert!(vars.contains("ORGMESH_ORG"), "the scan found no variables: {vars:?}");
    let docs = docs();
    let missing: Vec<&String> = vars.iter().filter(|v| !mentions(&docs, v)).collect();
    assert!(missing.is_empty(), "docs/configuration.md does not mention these variables: {missing:?}");
}
