//! Nodes that find each other only through Tailscale's LocalAPI (a fixture serving tailscaled's
//! JSON shapes on Unix sockets) or only through DNS (a real hickory-server zone on 127.0.0.1), with
//! peers appearing and disappearing while they run (issue "Join a real mesh", points 1 and 2).
//! The Tailscale `whois` gate on inbound connections needs each node on a host (address) of its
//! own: `tailnet_gate.rs` tests it with network namespaces.

use std::net::IpAddr;
use std::time::Duration;

use orgmesh_discovery::fixtures::dns::DnsFixture;
use orgmesh_discovery::fixtures::tailscale::{FakeNode, FakeTailnet};
use orgmesh_tests::{Node, NodeOptions, free_port, wait_for};

const TAG: &str = "tag:orgmesh";

fn tailnet_opts(ip: &str, port: u16, socket: &std::path::Path) -> NodeOptions {
    NodeOptions {
        p2p_port: Some(port),
        listen_ip: Some(ip.into()),
        // On one host every connection comes from 127.0.0.1, so tailscaled's whois cannot tell the
        // nodes apart; tailnet_gate.rs tests the gate on hosts of their own.
        extra_toml: format!(
            "[discovery.tailscale]\nsocket = {socket:?}\ntag = \"{TAG}\"\nrefresh_s = 1\nverify_inbound = false\n"
        ),
        ..Default::default()
    }
}

fn ts_node(host: &str, ip: &str) -> FakeNode {
    FakeNode::new(host, [ip.parse::<IpAddr>().expect("ip")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_find_each_other_only_through_tailscale() -> anyhow::Result<()> {
    let sockets = tempfile::tempdir()?;
    let port = free_port();
    let net = FakeTailnet::default();
    // What a real tailnet also holds: an offline tagged node and an online untagged one.
    net.set_nodes([
        ts_node("acme", "127.0.0.2").with_tag(TAG),
        ts_node("globex", "127.0.0.3").with_tag(TAG),
        ts_node("laptop", "127.0.0.8"),
        ts_node("ghost", "127.0.0.9").with_tag(TAG).offline(),
    ]);
    let mut fixtures = Vec::new();
    let mut nodes = Vec::new();
    for (org, ip) in [("acme", "127.0.0.2"), ("globex", "127.0.0.3")] {
        let socket = sockets.path().join(format!("{org}.sock"));
        fixtures.push(net.serve(&socket, org).await?);
        nodes.push(Node::start(org, &tailnet_opts(ip, port, &socket)).await?);
    }
    wait_for("acme and globex meet through the tailnet", Duration::from_secs(15), async || {
        (nodes[0].alive_orgs().await == ["globex"] && nodes[1].alive_orgs().await == ["acme"]).then_some(())
    })
    .await?;

    // initech joins the tailnet while the others run.
    net.upsert(ts_node("initech", "127.0.0.4").with_tag(TAG));
    let socket = sockets.path().join("initech.sock");
    fixtures.push(net.serve(&socket, "initech").await?);
    nodes.push(Node::start("initech", &tailnet_opts("127.0.0.4", port, &socket)).await?);
    for (i, want) in [["globex", "initech"], ["acme", "initech"], ["acme", "globex"]].iter().enumerate() {
        let node = &nodes[i];
        wait_for(&format!("{} to see {want:?}", node.org), Duration::from_secs(15), async || {
            (node.alive_orgs().await == want).then_some(())
        })
        .await?;
    }
    wait_for("acme to name tailscale as initech's source", Duration::from_secs(10), async || {
        nodes[0].sources_of("initech").await.contains(&"tailscale".to_string()).then_some(())
    })
    .await?;
    // The source lists exactly the online, tagged others: not the untagged laptop, not the offline
    // ghost, not acme itself.
    let (_, ready) = nodes[0].get("/readyz").await?;
    let tailscale = ready["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "discovery:tailscale"))
        .cloned();
    assert_eq!(
        tailscale.map(|c| c["detail"].clone()),
        Some(serde_json::json!("2 peer(s) listed")),
        "{ready}"
    );

    // Readiness names the source and its health; a LocalAPI that goes away turns it red.
    let (status, ready) = nodes[0].get("/readyz").await?;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.to_string().contains("discovery:tailscale"), "{ready}");
    let acme_fixture = fixtures.remove(0);
    acme_fixture.stop().await;
    wait_for("acme's readiness to report the LocalAPI down", Duration::from_secs(10), async || {
        let (status, body) = nodes[0].get("/readyz").await.ok()?;
        (status == 503 && body.to_string().contains("discovery:tailscale")).then_some(())
    })
    .await?;

    // globex leaves the tailnet: globex's own view stops naming tailscale for acme... and acme,
    // whose LocalAPI is down, keeps its last good list. Check from initech, whose API still runs.
    net.remove("globex");
    wait_for("globex's tailscale source to go", Duration::from_secs(10), async || {
        (!nodes[2].sources_of("globex").await.contains(&"tailscale".to_string())).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_find_each_other_only_through_dns() -> anyhow::Result<()> {
    let zone = DnsFixture::start("mesh.test").await;
    let extra = format!(
        "[discovery.dns]\ndomain = \"mesh.test\"\nnameservers = [\"{}\"]\nmin_refresh_s = 1\n",
        zone.addr()
    );
    let opts = NodeOptions { extra_toml: extra, ..Default::default() };
    let mut nodes = Vec::new();
    for org in ["acme", "globex", "initech"] {
        let node = Node::init(org, &opts)?;
        zone.set_node(org, "127.0.0.1".parse()?, node.p2p_port, Some(&node.peer_id), 1).await;
        nodes.push(node);
    }
    for node in &mut nodes {
        node.up().await?;
    }
    for (i, want) in [["globex", "initech"], ["acme", "initech"], ["acme", "globex"]].iter().enumerate() {
        let node = &nodes[i];
        wait_for(&format!("{} to see {want:?} through DNS", node.org), Duration::from_secs(15), async || {
            (node.alive_orgs().await == want).then_some(())
        })
        .await?;
    }
    assert!(nodes[0].sources_of("initech").await.contains(&"dns".to_string()));
    // initech's records leave the zone (TTL 1 s) and the node stops: acme drops it.
    assert!(zone.remove_node("initech").await);
    nodes[2].kill();
    wait_for("acme to stop naming dns for initech", Duration::from_secs(10), async || {
        (!nodes[0].sources_of("initech").await.contains(&"dns".to_string())).then_some(())
    })
    .await?;
    wait_for("initech dead at acme", Duration::from_secs(10), async || {
        (nodes[0].peer_state("initech").await.as_deref() == Some("dead")).then_some(())
    })
    .await?;
    Ok(())
}
