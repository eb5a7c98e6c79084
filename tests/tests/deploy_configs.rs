//! The shipped deployments' configs start a node (issue "Safe to host another org's work",
//! point 4): the Docker image's environment, the Kubernetes ConfigMap and StatefulSet, and the
//! systemd unit's orgmesh.toml each load through the real config code and pass the security
//! checks a start runs (API tokens, p2p trust source), with the secret files they name present.
//! Every `ORGMESH_*` variable they set is one docs/configuration.md documents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orgmesh_node::config::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A tokens file with one real entry, as `orgmesh token create` makes them.
fn tokens_file(dir: &Path) -> PathBuf {
    let hash = orgmesh_api::auth::to_hex(&orgmesh_api::auth::hash_token("om_deploy-test-token"));
    let path = dir.join("tokens.toml");
    std::fs::write(
        &path,
        format!("[[tokens]]\nname = \"drain\"\nscopes = [\"admin\"]\nsha256 = \"{hash}\"\n"),
    )
    .unwrap();
    path
}

/// The checks `orgmesh up` runs before it opens anything: the same call, not a copy of it.
fn security_checks(config: &Config) -> Result<(), String> {
    config.security().map(drop).map_err(|e| e.to_string())
}

fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config, String> {
    Config::load(path, |k| env.get(k).cloned()).map_err(|e| e.to_string())
}

/// `ENV A=1 \ B=2` lines of a Dockerfile.
fn dockerfile_env(text: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut in_env = false;
    for line in text.lines() {
        let line = line.trim();
        let body = match line.strip_prefix("ENV ") {
            Some(rest) => rest,
            None if in_env => line,
            None => continue,
        };
        in_env = body.ends_with('\\');
        for pair in body.trim_end_matches('\\').split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    env
}

/// `- name: X` / `value: Y` pairs of a manifest.
fn manifest_env(text: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut name = None;
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- name: ") {
            name = Some(n.trim().to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("value: "), name.take()) {
            env.insert(n, v.trim().trim_matches('"').to_string());
        }
    }
    env
}

/// The block under `orgmesh.toml: |` of the ConfigMap.
fn configmap_toml(text: &str) -> String {
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with("orgmesh.toml: |")).skip(1);
    let mut out = String::new();
    for line in lines.by_ref() {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        out.push_str(line.strip_prefix("    ").unwrap_or(line));
        out.push('\n');
    }
    out
}

fn documented(vars: &BTreeMap<String, String>) {
    let docs = read("docs/configuration.md");
    for var in vars.keys().filter(|v| v.starts_with("ORGMESH_")) {
        assert!(docs.contains(&format!("`{var}`")), "{var} is set by a deployment but not documented");
    }
}

#[test]
fn the_docker_image_environment_starts_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = dockerfile_env(&read("deploy/docker/Dockerfile"));
    assert_eq!(env.get("ORGMESH_P2P_LISTEN").map(String::as_str), Some("/ip4/0.0.0.0/tcp/7000"), "{env:?}");
    documented(&env);
    // The files the image expects as secrets, where this test can write them.
    assert!(
        env.contains_key("ORGMESH_API_TOKENS_FILE") && env.contains_key("ORGMESH_MESH_KEY_FILE"),
        "{env:?}"
    );
    env.insert("ORGMESH_API_TOKENS_FILE".into(), tokens_file(dir.path()).display().to_string());
    env.insert("ORGMESH_MESH_KEY_FILE".into(), dir.path().join("mesh.key").display().to_string());
    env.insert("ORGMESH_ORG".into(), "acme".into());
    let config = load(None, &env).unwrap();
    security_checks(&config).unwrap();

    // The checks bite: the same image without its secrets refuses to start.
    let mut bare = env.clone();
    bare.remove("ORGMESH_API_TOKENS_FILE");
    assert!(security_checks(&load(None, &bare).unwrap()).is_err());
    bare = env.clone();
    bare.remove("ORGMESH_MESH_KEY_FILE");
    assert!(security_checks(&load(None, &bare).unwrap()).unwrap_err().contains("trusted_peers"));
}

#[test]
fn the_kubernetes_manifests_start_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let toml = configmap_toml(&read("deploy/k8s/configmap.yaml"));
    assert!(toml.contains("[discovery.tailscale]"), "the ConfigMap's orgmesh.toml:\n{toml}");
    let path = dir.path().join("orgmesh.toml");
    std::fs::write(&path, &toml).unwrap();
    let statefulset = read("deploy/k8s/statefulset.yaml");
    let manifest = manifest_env(&statefulset);
    assert!(
        manifest.contains_key("ORGMESH_API_TOKENS_FILE") && manifest.contains_key("ORGMESH_TOKEN_FILE"),
        "{manifest:?}"
    );
    documented(&manifest);
    // The container runs the image, so the image's ENV is there too, under the manifest's: a
    // variable the manifest forgets to override wins over the ConfigMap's file.
    let mut env = dockerfile_env(&read("deploy/docker/Dockerfile"));
    env.extend(manifest.into_iter().filter(|(k, _)| k.starts_with("ORGMESH_")));

    // Every secret the node and its preStop read sits under one of the container's mounts.
    let mounts: Vec<&str> =
        statefulset.lines().filter_map(|l| l.trim().strip_prefix("mountPath: ")).map(str::trim).collect();
    let mounted = |file: &Path| mounts.iter().any(|m| file.parent() == Some(Path::new(m)));
    let mut without_tokens = env.clone();
    without_tokens.remove("ORGMESH_API_TOKENS_FILE");
    let as_shipped = load(Some(&path), &without_tokens).unwrap();
    let mesh_key = as_shipped
        .trust
        .mesh_key_file
        .clone()
        .expect("the pod's p2p listener faces the tailnet: a keyed mesh");
    assert!(mounted(&mesh_key), "mesh key {} is not under a mount: {mounts:?}", mesh_key.display());
    for var in ["ORGMESH_API_TOKENS_FILE", "ORGMESH_TOKEN_FILE"] {
        let file = Path::new(&env[var]);
        assert!(mounted(file), "{var}={} is not under a mount: {mounts:?}", file.display());
    }

    env.insert("ORGMESH_API_TOKENS_FILE".into(), tokens_file(dir.path()).display().to_string());
    let config = load(Some(&path), &env).unwrap();
    security_checks(&config).unwrap();

    // The preStop drain authenticates, and the container grants the sandbox's capabilities only.
    assert!(statefulset.contains("orgmesh drain"));
    assert!(statefulset.contains("secretName: orgmesh-api-tokens"));
    assert!(statefulset.contains("drop: [\"ALL\"]") && statefulset.contains("\"SYS_ADMIN\""));
    assert!(!statefulset.contains("privileged: true") && !statefulset.contains("hostNetwork: true"));
}

#[test]
fn the_systemd_unit_config_starts_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let text = read("deploy/systemd/orgmesh.toml");
    let path = dir.path().join("orgmesh.toml");
    std::fs::write(&path, &text).unwrap();
    let unit = read("deploy/systemd/orgmesh.service");
    assert!(unit.contains("LoadCredential=tokens.toml:") && unit.contains("LoadCredential=mesh.key:"));
    assert!(unit.contains("Delegate=yes"), "the task cgroups need a delegated subtree");
    // The credentials systemd would hand over, here.
    let env = BTreeMap::from([(
        "ORGMESH_API_TOKENS_FILE".to_string(),
        tokens_file(dir.path()).display().to_string(),
    )]);
    let config = load(Some(&path), &env).unwrap();
    assert_eq!(config.api.tokens_file.as_deref(), Some(Path::new(&env["ORGMESH_API_TOKENS_FILE"])));
    security_checks(&config).unwrap();
    assert_eq!(config.executor.isolation, orgmesh_protocol::Isolation::Sandbox);
}
