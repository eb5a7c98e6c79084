//! `orgmesh demo`: a local mesh of N orgs in one process on 127.0.0.1, each node with its own data
//! directory under a temporary folder, the second and later bootstrapping from the first.
//! Ctrl-C stops every node and removes the folder.

use std::path::PathBuf;

use crate::config::Config;
use crate::run::{self, RunningNode};
use crate::sandbox::Isolation;

const ORGS: [&str; 8] = ["acme", "globex", "initech", "umbrella", "hooli", "vandelay", "soylent", "wonka"];

fn org_name(i: usize) -> String {
    ORGS.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("org{i}"))
}

/// The strongest isolation this machine allows, and a line saying which and why: the full
/// sandbox where it can be built (root, bubblewrap, cgroups), else `none`, so the demo runs
/// anywhere and says what it gave up.
fn strongest_isolation(root: &std::path::Path) -> (Isolation, String) {
    let probe_root = root.join("probe");
    let (sandbox, why) =
        run::build_sandbox(&Config::default(), &probe_root, &format!("demo-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&probe_root);
    match (sandbox, why) {
        (Some(sandbox), _) => (Isolation::Sandbox, format!("sandbox ({})", sandbox.describe())),
        (None, why) => (
            Isolation::None,
            format!(
                "none: tasks run unconfined as this user ({}); run the demo as root with bubblewrap installed for the sandbox",
                why.unwrap_or_else(|| "the sandbox is off".into())
            ),
        ),
    }
}

/// Starts the demo mesh and runs until Ctrl-C.
pub async fn run(nodes: usize, api_port: u16, p2p_port: u16) -> anyhow::Result<()> {
    anyhow::ensure!((1..=64).contains(&nodes), "--nodes must be between 1 and 64");
    let root = std::env::temp_dir().join(format!("orgmesh-demo-{}", std::process::id()));
    let mut running: Vec<RunningNode> = Vec::new();
    let mut bootstrap = Vec::new();
    let isolation = strongest_isolation(&root);
    let result = async {
        for i in 0..nodes {
            let org = org_name(i);
            let offset = u16::try_from(i)?;
            let mut config = Config::default();
            config.node.org = org.clone();
            config.node.data_dir = PathBuf::from(&org);
            config.base_dir = root.clone();
            config.p2p.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", p2p_port + offset)];
            config.p2p.bootstrap = bootstrap.clone();
            config.api.addr = format!("127.0.0.1:{}", api_port + offset).parse()?;
            config.node.labels.insert("zone".into(), ["a", "b", "c"][i % 3].into());
            config.executor.isolation = isolation.0;
            let node = run::start(config).await?;
            if i == 0 {
                bootstrap.push(format!("/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{}", node.peer_id));
            }
            running.push(node);
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        for node in running {
            node.stop().await;
        }
        let _ = std::fs::remove_dir_all(&root);
        return Err(e);
    }

    println!("orgmesh demo: {nodes} orgs on 127.0.0.1 (data in {})", root.display());
    println!("isolation: {}", isolation.1);
    println!();
    for node in &running {
        println!("  {:<10} api http://{}   peer {}", node.org.to_string(), node.api_addr, node.peer_id);
    }
    println!();
    println!("Try, in another terminal:");
    println!("  orgmesh peers");
    println!("  orgmesh submit --wait -- echo hi");
    println!(
        "  orgmesh submit --org {} --wait -- sh -c 'echo hello from $(hostname)'",
        org_name(1.min(nodes - 1))
    );
    println!(
        "  orgmesh --api http://{} tasks",
        running.last().map(|n| n.api_addr.to_string()).unwrap_or_default()
    );
    println!();
    println!("Ctrl-C stops the mesh.");

    tokio::signal::ctrl_c().await?;
    eprintln!("stopping {nodes} nodes...");
    for node in running {
        node.stop().await;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
