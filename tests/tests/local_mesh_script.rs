//! `deploy/local-mesh.sh` does what its usage says: `up` builds three hosts in network namespaces
//! with a node each and waits until they see each other, `check` runs tasks across orgs, `up`
//! again changes nothing, and `down` leaves nothing behind. Needs root, iproute2 and curl, like
//! the script. Names and the subnet are unique to this process, so it runs beside other tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-mesh.sh")
}

/// A /24 in 198.19.200-253 that no interface uses now.
fn free_subnet() -> anyhow::Result<String> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().context("running ip")?;
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = std::process::id();
    (0..54)
        .map(|i| format!("198.19.{}", 200 + (pid + i) % 54))
        .find(|net| !used.contains(&format!("inet {net}.")))
        .context("no free 198.19.x.0/24")
}

struct Mesh {
    env: Vec<(&'static str, String)>,
}

impl Mesh {
    fn run(&self, command: &str) -> anyhow::Result<Output> {
        let out = Command::new("bash")
            .arg(script())
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .with_context(|| format!("running local-mesh.sh {command}"))?;
        if !out.status.success() {
            bail!(
                "local-mesh.sh {command} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.run("down");
    }
}

#[test]
fn up_check_up_again_and_down() -> anyhow::Result<()> {
    for tool in ["ip", "curl"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.stdout.is_empty() {
            bail!("{tool} is needed (iproute2, curl)");
        }
    }
    let prefix = format!("t{}", std::process::id() % 100_000);
    let dir = tempfile::tempdir()?;
    let mesh_dir = dir.path().join("mesh");
    let mesh = Mesh {
        env: vec![
            ("MESH_PREFIX", prefix.clone()),
            ("MESH_SUBNET", free_subnet()?),
            ("MESH_DIR", mesh_dir.display().to_string()),
            ("ORGMESH_BIN", orgmesh_tests::binary().display().to_string()),
        ],
    };

    mesh.run("up")?;
    let pid_of = |org: &str| std::fs::read_to_string(mesh_dir.join(org).join("orgmesh.pid"));
    let first_pids = (pid_of("acme")?, pid_of("globex")?, pid_of("initech")?);
    mesh.run("check")?;

    // Idempotent: the same nodes keep running.
    let again = mesh.run("up")?;
    assert!(String::from_utf8_lossy(&again.stderr).contains("acme already runs"));
    assert_eq!((pid_of("acme")?, pid_of("globex")?, pid_of("initech")?), first_pids);

    mesh.run("down")?;
    let namespaces = Command::new("ip").args(["netns", "list"]).output()?;
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!namespaces.contains(&format!("{prefix}-")), "namespaces left: {namespaces}");
    let bridge = Command::new("ip").args(["link", "show", &format!("{prefix}br")]).output()?;
    assert!(!bridge.status.success(), "bridge {prefix}br left behind");
    assert!(!mesh_dir.exists(), "{} left behind", mesh_dir.display());
    // A second `down` finds nothing to do and still succeeds.
    mesh.run("down")?;
    Ok(())
}
