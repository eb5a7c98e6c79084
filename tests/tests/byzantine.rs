//! A member that lies, against real nodes: forged heartbeats must neither freeze nor kill the
//! peer they name. Hosts of their own (network namespaces), because the attack matters where a
//! node hears of a peer only through others: acme and initech are cut apart, and acme learns
//! initech's heartbeat from globex's relays while a rogue feeds acme made-up ones.

use std::time::{Duration, Instant};

use orgmesh_protocol::wire::gossip::{DigestEntry, GossipRequest, GossipResponse};
use orgmesh_tests::netns::Hosts;
use orgmesh_tests::rogue::Rogue;
use orgmesh_tests::{Node, NodeOptions, free_port, wait_for};

fn root_with_netns() -> anyhow::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) reads the process's effective uid; no memory is touched.
    let euid = unsafe { libc::geteuid() };
    anyhow::ensure!(euid == 0, "this test needs root for network namespaces (euid {euid})");
    anyhow::ensure!(Hosts::have_nft(), "this test needs nftables (`nft`) to cut two hosts apart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_heartbeat_neither_freezes_nor_kills_its_victim() -> anyhow::Result<()> {
    root_with_netns()?;
    let hosts = Hosts::create(3)?;
    let port = free_port();
    let opts = |i: usize, bootstrap: Vec<String>| NodeOptions {
        p2p_port: Some(port),
        listen_ip: Some(hosts.ips[i].clone()),
        netns: Some(hosts.netns(i).to_string()),
        bootstrap,
        ..Default::default()
    };
    let acme = Node::start("acme", &opts(0, Vec::new())).await?;
    let globex = Node::start("globex", &opts(1, vec![acme.multiaddr()])).await?;
    let initech = Node::start("initech", &opts(2, vec![globex.multiaddr()])).await?;
    hosts.cut_pair(0, 2)?;
    wait_for("acme to see initech alive through globex", Duration::from_secs(30), async || {
        (acme.peer_state("initech").await.as_deref() == Some("alive")).then_some(())
    })
    .await?;

    // The rogue is a peer like any other to acme: it asks for the records, then forges.
    let psk = orgmesh_node::p2p::read_mesh_key(&orgmesh_tests::harness_mesh_key()?)?;
    let mut rogue = Rogue::connect_with(&acme.multiaddr().parse()?, Some(psk)).await?;
    let target = rogue.target().ok_or_else(|| anyhow::anyhow!("the rogue is not connected"))?;
    let GossipResponse::Ack { updates, .. } =
        rogue.ask(target, GossipRequest::Syn { digest: Vec::new() }).await?
    else {
        anyhow::bail!("a Syn must be answered with Ack");
    };
    let victim = updates
        .iter()
        .map(|u| &u.record.record)
        .find(|r| r.org.as_str() == "initech")
        .ok_or_else(|| anyhow::anyhow!("acme sent no record of initech"))?
        .clone();
    let forged = || GossipRequest::Syn {
        digest: vec![DigestEntry {
            peer: victim.peer_id.clone(),
            version: victim.version,
            heartbeat: u64::MAX,
        }],
    };

    let start = Instant::now();
    let mut judged = Vec::new();
    while start.elapsed() < Duration::from_secs(30) {
        let sent = rogue.send_all(target, vec![forged(), forged()], 2, Duration::from_secs(2)).await;
        anyhow::ensure!(sent.answered > 0, "acme stopped answering the rogue: {sent:?}");
        let state = acme.peer_state("initech").await;
        if state.as_deref() != Some("alive") {
            judged.push((start.elapsed(), state));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let first: Vec<_> = judged.iter().take(5).collect();
    anyhow::ensure!(
        judged.is_empty(),
        "acme judged initech {} times under forged heartbeats, first {first:?}",
        judged.len()
    );
    let dropped = acme.counter("forged_heartbeats").await;
    anyhow::ensure!(dropped > 50, "acme counted the forged claims it dropped: {dropped}");
    // Still the real heartbeat, moving: the peer entry's state came from real relays.
    anyhow::ensure!(globex.peer_state("initech").await.as_deref() == Some("alive"));
    drop(initech);
    Ok(())
}
