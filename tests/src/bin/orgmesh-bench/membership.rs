//! `membership`: N real nodes bootstrapped to the first. Convergence (first start until every node
//! lists every other `alive` with capacity), steady gossip bytes per node (nftables counters on
//! the p2p ports, outside the nodes), false `dead` verdicts while random nodes are paused
//! (largest N only), and failure detection (SIGKILL until every survivor lists the node `dead`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Params;
use crate::launcher::{BenchNode, http_client, ms, peers, wait_mesh};
use crate::report::{Figure, Target};
use crate::sse::SseReader;

/// nftables counters on the loopback traffic of a set of ports, removed on drop.
#[derive(Debug)]
struct PortCounters {
    ports: Vec<u16>,
}

const TABLE: &str = "orgbench";

fn nft(script: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PortCounters {
    /// Per port, one counter for packets from it and one for packets to it; then, so that a
    /// packet between two counted ports is counted once in the total, `sport` in the set (ending
    /// this chain for that packet) and `dport` in the set. Output hook only: on loopback every
    /// packet passes it exactly once.
    fn install(ports: &[u16]) -> anyhow::Result<Self> {
        let _ = nft(&format!("delete table inet {TABLE}\n"));
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut s = format!(
            "add table inet {TABLE}\nadd chain inet {TABLE} out {{ type filter hook output priority 0; policy accept; }}\n"
        );
        for p in ports {
            s.push_str(&format!("add rule inet {TABLE} out tcp sport {p} counter comment \"s{p}\"\n"));
            s.push_str(&format!("add rule inet {TABLE} out tcp dport {p} counter comment \"d{p}\"\n"));
        }
        let set = list.join(", ");
        s.push_str(&format!(
            "add rule inet {TABLE} out tcp sport {{ {set} }} counter accept comment \"tots\"\n"
        ));
        s.push_str(&format!("add rule inet {TABLE} out tcp dport {{ {set} }} counter comment \"totd\"\n"));
        nft(&s)?;
        Ok(Self { ports: ports.to_vec() })
    }

    /// Bytes per counter comment.
    fn read(&self) -> anyhow::Result<std::collections::HashMap<String, u64>> {
        let out = Command::new("nft").args(["-j", "list", "table", "inet", TABLE]).output()?;
        if !out.status.success() {
            bail!("nft list failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&out)?;
        let mut bytes = std::collections::HashMap::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            let rule = &item["rule"];
            let Some(comment) = rule["comment"].as_str() else { continue };
            let b = rule["expr"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|e| e["counter"]["bytes"].as_u64())
                .unwrap_or(0);
            bytes.insert(comment.to_string(), b);
        }
        Ok(bytes)
    }

    /// Over `window`: the average bytes each node sends per second (every packet on the ports
    /// once, divided by the number of nodes) and the most traffic through one node's port.
    async fn measure(&self, window: Duration) -> anyhow::Result<(f64, f64)> {
        let a = self.read()?;
        let start = Instant::now();
        tokio::time::sleep(window).await;
        let b = self.read()?;
        let secs = start.elapsed().as_secs_f64();
        let delta = |k: &str| b.get(k).copied().unwrap_or(0).saturating_sub(a.get(k).copied().unwrap_or(0));
        let total = delta("tots") + delta("totd");
        let most =
            self.ports.iter().map(|p| delta(&format!("s{p}")) + delta(&format!("d{p}"))).max().unwrap_or(0);
        Ok((total as f64 / self.ports.len() as f64 / secs, most as f64 / secs))
    }
}

impl Drop for PortCounters {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {TABLE}\n"));
    }
}

pub(crate) async fn run(bin: &Path, p: &Params) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let largest = p.mesh_sizes.iter().copied().max().unwrap_or(0);
    for &n in &p.mesh_sizes {
        figures.extend(mesh(bin, p, n, n == largest).await.with_context(|| format!("N={n}"))?);
    }
    Ok(figures)
}

async fn mesh(bin: &Path, p: &Params, n: usize, largest: bool) -> anyhow::Result<Vec<Figure>> {
    let http = http_client();
    let mut nodes = vec![BenchNode::init(bin, "org0", None)?];
    let seed = nodes[0].multiaddr();
    for i in 1..n {
        nodes.push(BenchNode::init(bin, &format!("org{i}"), Some(&seed))?);
    }
    // Convergence: from spawning the first node (the others start once it listens).
    let start = Instant::now();
    nodes[0].spawn()?;
    nodes[0].wait_ok(&http, "/healthz", Duration::from_secs(30)).await?;
    for node in &mut nodes[1..] {
        node.spawn()?;
    }
    let refs: Vec<&BenchNode> = nodes.iter().collect();
    wait_mesh(&http, &refs, Duration::from_millis(20), Duration::from_secs(120)).await?;
    let converged = start.elapsed();
    let t = |t| if largest { Some(t) } else { None };
    let fig = |name: &str, v: f64, unit: &'static str, target: Option<Target>| Figure {
        name: format!("{name}_n{n}"),
        value: v,
        unit,
        target,
    };
    let mut figures = vec![fig("converge", ms(converged), "ms", t(Target::AtMost(500.0)))];

    // Steady state: let joins settle first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counters = PortCounters::install(&nodes.iter().map(|x| x.p2p_port).collect::<Vec<_>>())?;
    let (avg, most) = counters.measure(p.steady).await?;
    drop(counters);
    figures.push(fig("gossip_per_node", avg, "B/s", t(Target::AtMost(1000.0))));
    figures.push(fig("gossip_busiest_port", most, "B/s", None));

    if largest {
        let (dead, suspect) = pauses(&http, &nodes, p.pause).await?;
        figures.push(fig("false_dead", dead as f64, "events", Some(Target::AtMost(0.0))));
        figures.push(fig("suspect_under_pauses", suspect as f64, "events", None));
    }

    // Failure detection: SIGKILL the last node.
    let mut victim = nodes.pop().context("no nodes")?;
    let victim_id = victim.peer_id.clone();
    let killed = Instant::now();
    victim.kill();
    loop {
        let checks = nodes.iter().map(|s| {
            let http = &http;
            let id = &victim_id;
            async move { peers(http, &s.api).await.iter().any(|r| &r.peer_id == id && r.state == "dead") }
        });
        if futures::future::join_all(checks).await.into_iter().all(|x| x) {
            break;
        }
        if killed.elapsed() > Duration::from_secs(120) {
            bail!("survivors did not all list the killed node dead within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    figures.push(fig("detect_dead", ms(killed.elapsed()), "ms", t(Target::AtMost(3000.0))));
    Ok(figures)
}

/// Pauses one random node at a time (SIGSTOP, 300 ms, SIGCONT, 100 ms gap) for `duration`, with
/// every node's `peer.` events followed; counts `peer.dead` and `peer.suspect` events.
async fn pauses(
    http: &reqwest::Client,
    nodes: &[BenchNode],
    duration: Duration,
) -> anyhow::Result<(u64, u64)> {
    let dead = Arc::new(AtomicU64::new(0));
    let suspect = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for node in nodes {
        let mut reader = SseReader::open(http, &format!("{}/v1/events?kinds=peer.", node.api)).await?;
        let (dead, suspect) = (dead.clone(), suspect.clone());
        let org = node.org.clone();
        watchers.push(tokio::spawn(async move {
            while let Some(e) = reader.next().await {
                match e.kind.as_str() {
                    "peer.dead" => {
                        eprintln!("membership: {org} says peer.dead {}", e.data);
                        dead.fetch_add(1, Ordering::Relaxed);
                    }
                    "peer.suspect" => {
                        suspect.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }
    let end = Instant::now() + duration;
    let mut paused = 0u64;
    while Instant::now() < end {
        let victim = &nodes[rand::random_range(0..nodes.len())];
        victim.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(300)).await;
        victim.signal(libc::SIGCONT);
        paused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for any verdict reached during the pauses to be announced.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for w in watchers {
        w.abort();
    }
    eprintln!("membership: {paused} pauses of 300 ms over {duration:?}");
    Ok((dead.load(Ordering::Relaxed), suspect.load(Ordering::Relaxed)))
}
