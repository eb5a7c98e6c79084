//! Only trusted peers get in (issue "Join a real mesh", point 3 and 4): a node with the wrong mesh
//! key never appears anywhere; a node outside `trusted_peers` is refused; a policy decline places
//! the task elsewhere; a forged record is dropped; garbage, oversized frames and a request flood
//! leave the node serving its API and its other peers.

use std::io::Write;
use std::time::Duration;

use orgmesh_protocol::record::{AcceptPolicy, Capacity, NodeRecord, RecordVersion, SignedRecord};
use orgmesh_protocol::wire::gossip::{DigestEntry, GossipRequest, GossipUpdate};
use orgmesh_protocol::{Keyring, Org, PeerId};
use orgmesh_tests::rogue::Rogue;
use orgmesh_tests::{Node, NodeOptions, wait_for};
use serde_json::json;

fn opts(bootstrap: &Node) -> NodeOptions {
    NodeOptions { bootstrap: vec![bootstrap.multiaddr()], ..Default::default() }
}

async fn all_listed(node: &Node) -> Vec<String> {
    let (_, peers) = node.get("/v1/peers").await.unwrap_or_default();
    peers["items"]
        .as_array()
        .map(|i| i.iter().filter_map(|p| p["peer_id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_mesh_key_never_appears() -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    let (key, wrong) = (keys.path().join("mesh.key"), keys.path().join("other.key"));
    let with =
        |k: &std::path::Path| NodeOptions { mesh_key_file: Some(k.to_path_buf()), ..Default::default() };
    let acme = Node::start("acme", &with(&key)).await?;
    let globex =
        Node::start("globex", &NodeOptions { bootstrap: vec![acme.multiaddr()], ..with(&key) }).await?;
    let initech =
        Node::start("initech", &NodeOptions { bootstrap: vec![acme.multiaddr()], ..with(&key) }).await?;
    let intruder = Node::start(
        "intruder",
        &NodeOptions { bootstrap: vec![acme.multiaddr(), globex.multiaddr()], ..with(&wrong) },
    )
    .await?;
    for node in [&acme, &globex, &initech] {
        wait_for("the keyed mesh to converge", Duration::from_secs(10), async || {
            (node.alive_orgs().await.len() == 2).then_some(())
        })
        .await?;
    }
    // Give the intruder many dial rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in [&acme, &globex, &initech] {
        assert!(!all_listed(node).await.contains(&intruder.peer_id), "{} lists the intruder", node.org);
    }
    assert!(all_listed(&intruder).await.is_empty(), "the intruder knows nobody");
    // The intruder's handshakes fail on the keyed side too, and are counted there.
    wait_for("a keyed node to count the intruder's failed handshakes", Duration::from_secs(10), async || {
        (acme.counter("refused_connections").await + globex.counter("refused_connections").await > 0)
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_trusted_peers_is_refused() -> anyhow::Result<()> {
    let globex = Node::start("globex", &NodeOptions::default()).await?;
    let acme =
        Node::start("acme", &NodeOptions { trusted_peers: vec![globex.peer_id.clone()], ..opts(&globex) })
            .await?;
    // initech dials acme (refused) and globex (welcome), so globex relays initech's record to acme.
    let initech = Node::start(
        "initech",
        &NodeOptions { bootstrap: vec![acme.multiaddr(), globex.multiaddr()], ..Default::default() },
    )
    .await?;
    wait_for("acme sees globex", Duration::from_secs(10), async || {
        (acme.alive_orgs().await == ["globex"]).then_some(())
    })
    .await?;
    wait_for("globex sees initech", Duration::from_secs(10), async || {
        globex.alive_orgs().await.contains(&"initech".to_string()).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!all_listed(&acme).await.contains(&initech.peer_id), "acme must not admit initech");
    assert!(acme.counter("refused_connections").await > 0, "initech's dials were refused");
    assert!(acme.counter("rejected_records").await > 0, "initech's record, relayed by globex, was refused");
    // Relaying a record acme's policy refuses is not an offence: globex stays welcome.
    assert_eq!(acme.peer_state("globex").await.as_deref(), Some("alive"));
    assert_eq!(acme.counter("bans").await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_decline_places_the_task_elsewhere() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    let globex =
        Node::start("globex", &NodeOptions { accept_from: vec!["initech".into()], ..opts(&acme) }).await?;
    let initech = Node::start("initech", &opts(&acme)).await?;
    wait_for("mesh", Duration::from_secs(10), async || (acme.alive_orgs().await.len() == 2).then_some(()))
        .await?;
    // Ten tasks, so that ignoring the policy could pass only by a 1-in-1024 fluke.
    for _ in 0..10 {
        let id = acme
            .submit(&json!({"command": ["true"], "constraints": {"orgs": ["globex", "initech"]}}))
            .await?;
        let task = acme.wait_terminal(&id, Duration::from_secs(15)).await?;
        assert_eq!(task["status"], "succeeded");
        assert_eq!(task["placement"]["org"], "initech", "globex does not take acme's work");
    }
    let id = acme.submit(&json!({"command": ["true"], "constraints": {"orgs": ["globex"]}})).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(10)).await?;
    assert_eq!(task["status"], "failed");
    assert!(task["error"].as_str().unwrap_or_default().contains("accepts tasks from org acme"), "{task}");
    drop((globex, initech));
    Ok(())
}

fn forged_record(claimed: &str, org: &str) -> NodeRecord {
    NodeRecord {
        peer_id: PeerId::new(claimed).expect("peer id"),
        org: Org::new(org).expect("org"),
        name: "forged".into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/9".into()],
        labels: Default::default(),
        capacity: Capacity { slots: 1000, free_slots: 1000, ..Capacity::default() },
        accepts: AcceptPolicy::AnyOrg,
        draining: false,
        isolation: Default::default(),
        software: "evil".into(),
        version: RecordVersion { generation: u64::MAX / 2, version: 1 },
    }
}

struct RogueSigner(libp2p::identity::Keypair);

impl Keyring for RogueSigner {
    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.0.sign(bytes).unwrap_or_default()
    }
    fn verify(&self, _: &PeerId, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_garbage_oversize_and_floods_leave_the_node_serving() -> anyhow::Result<()> {
    // Tight enough that the flood below outruns it even on a busy machine: with 1,000/s and a
    // burst of 2,000, a flood slowed to 1,250/s by a concurrent load (CI, 8 s for 10,000) struck
    // fewer than the 100 times that ban, and the test failed. Gossip needs a few per second.
    let tight = vec![
        ("ORGMESH_PEER_REQUESTS_PER_S".to_string(), "200".to_string()),
        ("ORGMESH_PEER_BURST".to_string(), "400".to_string()),
    ];
    let acme = Node::start("acme", &NodeOptions { env: tight, ..Default::default() }).await?;
    let globex = Node::start("globex", &opts(&acme)).await?;
    wait_for("mesh", Duration::from_secs(10), async || (acme.alive_orgs().await == ["globex"]).then_some(()))
        .await?;

    // Garbage bytes at the p2p port: the handshake fails, nothing else happens.
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", acme.p2p_port))?;
        let junk: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let _ = s.write_all(&junk);
    }

    let mut rogue = Rogue::connect(&acme.multiaddr().parse()?).await?;
    let target = rogue.target().expect("connected");

    // A forged record: globex's id and org, signed with the rogue's key.
    let signed =
        SignedRecord::sign(forged_record(&globex.peer_id, "globex"), &RogueSigner(rogue.key.clone()));
    let push =
        GossipRequest::Push { updates: vec![GossipUpdate { record: signed.into(), heartbeat: 1 << 40 }] };
    let out = rogue.send_all(target, vec![push], 1, Duration::from_secs(5)).await;
    assert_eq!(out.answered, 1);
    let (_, peers) = acme.get("/v1/peers").await?;
    let g = peers["items"]
        .as_array()
        .and_then(|i| i.iter().find(|p| p["org"] == "globex").cloned())
        .unwrap_or_default();
    assert_eq!(g["name"], "globex", "the forged record must not replace globex's");
    assert!(acme.counter("rejected_records").await >= 1);

    // An oversized frame (a 5 MiB digest; the gossip limit is 4 MiB): that stream fails.
    let entry = |i: u32| DigestEntry {
        peer: PeerId::new(format!("12D3KooW{}", "x".repeat(40) + &format!("{i:08}").replace('0', "z")))
            .expect("id"),
        version: RecordVersion::default(),
        heartbeat: 0,
    };
    let huge = GossipRequest::Syn { digest: (0..80_000).map(entry).collect() };
    let out = rogue.send_all(target, vec![huge], 1, Duration::from_secs(10)).await;
    assert_eq!(out.failed, 1, "an oversized frame is refused");

    // 10,000 requests in about a second.
    let flood: Vec<GossipRequest> = (0..10_000).map(|_| GossipRequest::Syn { digest: Vec::new() }).collect();
    let started = std::time::Instant::now();
    let out = rogue.send_all(target, flood, 10, Duration::from_secs(20)).await;
    println!("flood: {out:?} in {:?}", started.elapsed());

    // The node still serves its API and its other peers.
    let (status, _) = acme.get("/healthz").await?;
    assert_eq!(status, 200);
    let id =
        acme.submit(&json!({"command": ["echo", "still here"], "constraints": {"orgs": ["globex"]}})).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(15)).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(acme.peer_state("globex").await.as_deref(), Some("alive"));
    assert!(acme.counter("rate_limited_requests").await > 0, "the flood was throttled");
    assert!(acme.counter("bans").await >= 1, "and its sender banned");
    println!("acme counters: {}", acme.get("/v1/node").await?.1["counters"]);
    Ok(())
}

/// The mesh's door, like the API's: a p2p listener on every interface with nothing deciding who
/// may connect refuses to start and names the fix; with a mesh key the same node starts; `init`
/// without `--mesh-key-file` writes a loopback listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_p2p_listener_without_a_trust_source_refuses_to_start() -> anyhow::Result<()> {
    let port = orgmesh_tests::free_port();
    let public = format!("/ip4/0.0.0.0/tcp/{port}");
    let opts =
        NodeOptions { env: vec![("ORGMESH_P2P_LISTEN".into(), public.clone())], ..NodeOptions::default() };
    let mut node = Node::init("acme", &opts)?;
    let written = std::fs::read_to_string(node.dir.join("orgmesh.toml"))?;
    assert!(written.contains(&format!("listen = [\"/ip4/127.0.0.1/tcp/{}\"]", node.p2p_port)), "{written}");
    node.spawn_up()?;
    let status = wait_for("the node to exit", Duration::from_secs(20), async || node.exited()).await?;
    assert!(!status.success());
    let log = node.log_tail();
    assert!(
        log.contains(&public) && log.contains("ORGMESH_MESH_KEY_FILE") && log.contains("trusted_peers"),
        "{log}"
    );

    let key_dir = tempfile::tempdir()?;
    let key = key_dir.path().join("mesh.key");
    let keyed = NodeOptions {
        env: vec![
            ("ORGMESH_P2P_LISTEN".into(), public.clone()),
            ("ORGMESH_MESH_KEY_FILE".into(), key.display().to_string()),
        ],
        ..NodeOptions::default()
    };
    let mut node = Node::init("acme", &keyed)?;
    orgmesh_node::p2p::create_mesh_key(&key)?;
    node.up().await?;
    let (status, _) = node.get("/healthz").await?;
    assert_eq!(status, 200);
    Ok(())
}

/// An `accept_from` org means something only if its claim is attested: the node says at start
/// which entries `[trust.orgs]` does not pin (globex), and not the ones it does (initech).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unattested_accept_from_org_is_warned_about_at_start() -> anyhow::Result<()> {
    let opts = NodeOptions { accept_from: vec!["globex".into(), "initech".into()], ..NodeOptions::default() };
    let mut node = Node::init("acme", &opts)?;
    // `init` writes an empty [trust.orgs]; pin initech's claim to a peer id there.
    let path = node.dir.join("orgmesh.toml");
    let config = std::fs::read_to_string(&path)?;
    assert!(config.contains("[trust.orgs]\n"), "{config}");
    let pinned = "[trust.orgs]\ninitech = [\"12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]";
    std::fs::write(&path, config.replacen("[trust.orgs]", pinned, 1))?;
    node.up().await?;
    let log = node.log_tail();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("no [trust.orgs] entry attests")).collect();
    assert_eq!(warned.len(), 1, "one warning, for globex only:\n{log}");
    assert!(warned[0].contains("\"globex\""), "{}", warned[0]);
    Ok(())
}
