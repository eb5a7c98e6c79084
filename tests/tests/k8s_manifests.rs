//! The Kubernetes manifests as Kubernetes reads them (issue "Safe to host another org's work",
//! point 4): every file kustomize applies is YAML that names its kind, the orgmesh container sets
//! only `ORGMESH_*` variables the node's code reads, and its preStop command, run as written,
//! drains a real node whose API takes its tokens from a file and refuses tokenless requests.
//! deploy_configs.rs loads the configs themselves through the real config and security code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use orgmesh_tests::{Node, NodeOptions};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every YAML document of a file under deploy/k8s; one that does not parse fails the test.
fn k8s_yaml(name: &str) -> Vec<Yaml> {
    let path = repo().join("deploy/k8s").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

/// The StatefulSet's `orgmesh` container.
fn orgmesh_container() -> Yaml {
    let docs = k8s_yaml("statefulset.yaml");
    let set = docs.iter().find(|d| d["kind"].as_str() == Some("StatefulSet")).expect("a StatefulSet");
    let containers = set["spec"]["template"]["spec"]["containers"].as_vec().expect("containers");
    let mut named = containers.iter().filter(|c| c["name"].as_str() == Some("orgmesh"));
    named.next().cloned().expect("a container named orgmesh")
}

/// A container's `env` entries with a literal `value` (those from `valueFrom` are left out).
fn container_env(container: &Yaml) -> BTreeMap<String, String> {
    let entries = container["env"].as_vec().into_iter().flatten();
    entries
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .collect()
}

/// Every `"ORGMESH_…"` string literal in node/src: the variables the node and its CLI read.
fn variables_the_code_reads() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for piece in text.split("\"ORGMESH_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if piece[name.len()..].starts_with('"') {
                        out.insert(format!("ORGMESH_{name}"));
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo().join("node/src"), &mut out);
    out
}

#[test]
fn every_manifest_parses_and_the_pod_sets_only_variables_the_node_reads() {
    let kustomization = k8s_yaml("kustomization.yaml");
    let resources = kustomization[0]["resources"].as_vec().expect("kustomization resources");
    assert!(resources.len() >= 4, "{resources:?}");
    for name in resources.iter().filter_map(Yaml::as_str).chain(["secret.example.yaml"]) {
        let docs = k8s_yaml(name);
        assert!(!docs.is_empty(), "{name} is empty");
        for doc in docs {
            assert!(
                doc["apiVersion"].as_str().is_some() && doc["kind"].as_str().is_some(),
                "{name}: {doc:?}"
            );
        }
    }
    let known = variables_the_code_reads();
    // The walk finds what it should (a walk that finds nothing would pass everything).
    for var in
        ["ORGMESH_P2P_LISTEN", "ORGMESH_API_TOKENS_FILE", "ORGMESH_TOKEN_FILE", "ORGMESH_MESH_KEY_FILE"]
    {
        assert!(known.contains(var), "{var} not found in node/src: {known:?}");
    }
    let env = container_env(&orgmesh_container());
    assert!(env.contains_key("ORGMESH_API_TOKENS_FILE") && env.contains_key("ORGMESH_TOKEN_FILE"), "{env:?}");
    for var in env.keys().filter(|v| v.starts_with("ORGMESH_")) {
        assert!(known.contains(var), "the pod sets {var}, which the node never reads");
    }
}

/// The preStop command, run as written (with this test's paths) against a real node whose API
/// refuses tokenless requests and takes its tokens from a file: it authenticates with the token
/// file alone, even with a stale `ORGMESH_TOKEN` exported beside it, and drains the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prestop_drain_authenticates_with_the_token_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let token = orgmesh_api::auth::generate_token().map_err(anyhow::Error::msg)?;
    let hash = orgmesh_api::auth::to_hex(&orgmesh_api::auth::hash_token(&token));
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[tokens]]\nname = \"drain\"\nscopes = [\"admin\"]\nsha256 = \"{hash}\"\n"),
    )?;
    // As a Secret mounts it: the token and a trailing newline.
    let drain_token = dir.path().join("drain-token");
    std::fs::write(&drain_token, format!("{token}\n"))?;
    let opts = NodeOptions {
        no_tokens: true,
        api_toml: "open_on_loopback = false".into(),
        env: vec![("ORGMESH_API_TOKENS_FILE".into(), tokens.display().to_string())],
        ..NodeOptions::default()
    };
    let mut node = Node::init("acme", &opts)?;
    node.up().await?;

    let container = orgmesh_container();
    let pod_env = container_env(&container);
    assert_eq!(
        pod_env.get("ORGMESH_TOKEN_FILE").map(String::as_str),
        Some("/etc/orgmesh/tokens/drain-token")
    );
    let command: Vec<String> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_vec()
        .expect("a preStop exec command")
        .iter()
        .filter_map(|c| c.as_str().map(String::from))
        .collect();
    assert!(command.iter().any(|c| c.contains("orgmesh drain")), "{command:?}");
    let bin = orgmesh_tests::binary();
    let bin_dir = bin.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let api = node.api.clone();
    let run = move |token_file: Option<PathBuf>| -> anyhow::Result<std::process::Output> {
        let (program, args) =
            command.split_first().ok_or_else(|| anyhow::anyhow!("empty preStop command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args).env("PATH", &path).env("ORGMESH_API", &api).env("ORGMESH_TOKEN", "om_stale-token");
        match token_file {
            Some(file) => cmd.env("ORGMESH_TOKEN_FILE", file),
            None => cmd.env_remove("ORGMESH_TOKEN_FILE"),
        };
        Ok(cmd.output()?)
    };
    let http = reqwest::Client::new();
    let draining = async || -> anyhow::Result<bool> {
        let resp = http.get(format!("{}/v1/node", node.api)).bearer_auth(&token).send().await?;
        let body: serde_json::Value = resp.json().await?;
        body["draining"].as_bool().ok_or_else(|| anyhow::anyhow!("no draining in {body}"))
    };
    assert!(!draining().await?, "draining before the preStop ran");

    // Without the file the stale token is refused: the preStop swallows the failure (the pod must
    // stop anyway), and the node is not draining.
    let denied = run.clone();
    let out = tokio::task::spawn_blocking(move || denied(None)).await??;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
    assert!(!draining().await?, "a refused token drained the node");

    // With the file the drain goes through, and waits until nothing runs here.
    let wait = tokio::task::spawn_blocking(move || run(Some(drain_token)));
    let out = tokio::time::timeout(Duration::from_secs(70), wait).await???;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained"), "{out:?}");
    assert!(draining().await?, "the preStop did not drain the node:\n{}", node.log_tail());
    Ok(())
}
