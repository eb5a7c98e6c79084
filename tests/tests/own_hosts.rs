//! Tests that need hosts of their own (network namespaces on a bridge, so each connection comes
//! from its host's address and multicast crosses a real LAN): the Tailscale identity gate, where
//! tailscaled's whois refuses a tailnet node without the mesh tag, and mDNS discovery.

use std::net::IpAddr;
use std::time::Duration;

use orgmesh_discovery::fixtures::tailscale::{FakeNode, FakeTailnet};
use orgmesh_tests::netns::Hosts;
use orgmesh_tests::{Node, NodeOptions, free_port, wait_for};

const TAG: &str = "tag:orgmesh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untagged_tailnet_node_is_refused() -> anyhow::Result<()> {
    let hosts = Hosts::create(3)?;
    let sockets = tempfile::tempdir()?;
    let port = free_port();
    let net = FakeTailnet::default();
    let ip = |i: usize| hosts.ips[i].parse::<IpAddr>().expect("ip");
    net.set_nodes([
        FakeNode::new("acme", [ip(0)]).with_tag(TAG),
        FakeNode::new("globex", [ip(1)]).with_tag(TAG),
        FakeNode::new("umbrella", [ip(2)]),
    ]);
    let mut fixtures = Vec::new();
    let mut start = async |org: &str, i: usize, bootstrap: Vec<String>| -> anyhow::Result<Node> {
        let socket = sockets.path().join(format!("{org}.sock"));
        fixtures.push(net.serve(&socket, org).await?);
        let opts = NodeOptions {
            p2p_port: Some(port),
            listen_ip: Some(hosts.ips[i].clone()),
            netns: Some(hosts.netns(i).to_string()),
            bootstrap,
            extra_toml: format!(
                "[discovery.tailscale]\nsocket = {socket:?}\ntag = \"{TAG}\"\nrefresh_s = 1\n"
            ),
            ..Default::default()
        };
        Node::start(org, &opts).await
    };
    let acme = start("acme", 0, vec![]).await?;
    let globex = start("globex", 1, vec![]).await?;
    wait_for("acme and globex, both tagged, to meet", Duration::from_secs(15), async || {
        (acme.alive_orgs().await == ["globex"] && globex.alive_orgs().await == ["acme"]).then_some(())
    })
    .await?;
    // A slow whois answer leaves umbrella several gossip rounds before its check answers: those
    // requests must not bring its record into the view (they once did, and it showed as a peer).
    net.set_whois_delay(Duration::from_millis(1500));
    let umbrella = start("umbrella", 2, vec![acme.multiaddr(), globex.multiaddr()]).await?;
    wait_for("acme to refuse umbrella", Duration::from_secs(10), async || {
        (acme.counter("refused_connections").await > 0).then_some(())
    })
    .await?;
    assert!(acme.counter("unchecked_requests").await > 0, "umbrella's requests came before its check");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in [&acme, &globex] {
        let (_, peers) = node.get("/v1/peers").await?;
        assert!(
            !peers.to_string().contains(&umbrella.peer_id),
            "{} admitted the untagged node: {peers}",
            node.org
        );
        assert_eq!(
            node.peer_state(if node.org == "acme" { "globex" } else { "acme" }).await.as_deref(),
            Some("alive")
        );
    }
    drop(fixtures);
    Ok(())
}

/// mDNS (off by default) finds a peer on the same LAN with no other source configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_lan_find_each_other_with_mdns() -> anyhow::Result<()> {
    let hosts = Hosts::create(2)?;
    let mut nodes = Vec::new();
    for (i, org) in ["acme", "globex"].into_iter().enumerate() {
        let opts = NodeOptions {
            listen_ip: Some(hosts.ips[i].clone()),
            netns: Some(hosts.netns(i).to_string()),
            env: vec![("ORGMESH_MDNS".into(), "1".into())],
            ..Default::default()
        };
        nodes.push(Node::start(org, &opts).await?);
    }
    wait_for("acme and globex to meet over mDNS", Duration::from_secs(20), async || {
        (nodes[0].alive_orgs().await == ["globex"] && nodes[1].alive_orgs().await == ["acme"]).then_some(())
    })
    .await?;
    assert!(nodes[0].sources_of("globex").await.contains(&"mdns".to_string()));
    Ok(())
}
