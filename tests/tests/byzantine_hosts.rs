//! Members that lie as hosts or flood as origins, against real `orgmesh` processes on 127.0.0.1:
//! a rogue host that captures a task and never finishes it loses it to an honest host within
//! `timeout_s` plus the grace and gets none of the origin's later tasks; a rogue origin sending
//! 1,000 bids a second to a host leaves an honest origin's tasks placed there and done.

use std::time::{Duration, Instant};

use orgmesh_tests::rogue_host::RogueHost;
use orgmesh_tests::{Node, origin_and_host, wait_for};
use serde_json::{Value, json};

/// Waits until `node` lists the rogue alive.
async fn sees_alive(node: &Node, peer: &str) -> anyhow::Result<()> {
    wait_for(&format!("{} to see the rogue alive", node.org), Duration::from_secs(20), async || {
        let (_, peers) = node.get("/v1/peers").await.ok()?;
        let rogue = peers["items"].as_array()?.iter().find(|p| p["peer_id"] == peer)?.clone();
        (rogue["state"] == "alive").then_some(())
    })
    .await
}

/// Where each attempt of `task` ran, by peer id, from its history.
fn hosts_of(task: &Value) -> Vec<String> {
    task["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|a| a["placement"]["peer_id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

const TIMEOUT_S: u64 = 3;
const GRACE_S: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_finishes_loses_the_task_and_the_next_one() -> anyhow::Result<()> {
    let (acme, globex) = origin_and_host(&[("ORGMESH_OVERDUE_GRACE_S", "2")], &[]).await?;
    // It claims globex's org, so the tasks' constraint lets it bid; its record shows far more
    // room than globex, so its offers win on score.
    let mut rogue = RogueHost::join(&acme.multiaddr().parse()?, None, "globex").await?;
    let rogue_id = rogue.peer.to_string();
    let (_, seen) = tokio::join!(rogue.run_for(Duration::from_secs(6), None), sees_alive(&acme, &rogue_id));
    seen?;

    let spec = json!({
        "command": ["sh", "-c", "echo done"],
        "constraints": {"orgs": ["globex"]},
        "timeout_s": TIMEOUT_S,
        "max_attempts": 3,
    });
    let first = acme.submit(&spec).await?;
    let started = Instant::now();
    let bound = Duration::from_secs(TIMEOUT_S + GRACE_S + 10);
    // The rogue keeps renewing while the origin waits; the clock stops when the task ends.
    let (_, (task, took)) = tokio::join!(rogue.run_for(bound + Duration::from_secs(5), None), async {
        (acme.wait_terminal(&first, bound + Duration::from_secs(5)).await, started.elapsed())
    });
    let task = task?;
    eprintln!("first task after {took:?}: {task}\nrogue: {:?}", rogue.stats);
    assert_eq!(task["status"], "succeeded", "{task}");
    let hosts = hosts_of(&task);
    assert_eq!(hosts.first(), Some(&rogue_id), "the rogue did not capture attempt 1: {task}");
    assert_eq!(hosts.get(1), Some(&globex.peer_id), "attempt 2 did not go to globex: {task}");
    assert!(took <= bound, "the task moved after {took:?}, bound {bound:?}");
    assert!(rogue.stats.renewals > 0, "the rogue never renewed: {:?}", rogue.stats);
    let (_, node) = acme.get("/v1/node").await?;
    assert_eq!(node["counters"]["attempts_overdue"], 1, "{}", node["counters"]);
    assert_eq!(node["counters"]["hosts_suspected"], 1, "{}", node["counters"]);

    // The next task: the rogue still offers the best score, and still loses.
    let second = acme.submit(&spec).await?;
    let (_, task) = tokio::join!(
        rogue.run_for(Duration::from_secs(15), None),
        acme.wait_terminal(&second, Duration::from_secs(15))
    );
    let task = task?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(
        hosts_of(&task),
        std::slice::from_ref(&globex.peer_id),
        "the suspect rogue got the next task: {task}"
    );
    eprintln!("rogue after both tasks: {:?}", rogue.stats);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_origin_still_gets_offers_while_a_rogue_floods_bids() -> anyhow::Result<()> {
    let (acme, globex) = origin_and_host(&[], &[]).await?;
    // A member of its own org, known to globex, so its bids are judged rather than turned away
    // for want of a record.
    let mut rogue = RogueHost::join(&globex.multiaddr().parse()?, None, "initech").await?;
    let rogue_id = rogue.peer.to_string();
    let (_, seen) = tokio::join!(rogue.run_for(Duration::from_secs(5), None), sees_alive(&globex, &rogue_id));
    seen?;

    let spec = json!({
        "command": ["sh", "-c", "echo honest"],
        "constraints": {"orgs": ["globex"]},
        "timeout_s": 20,
    });
    let flood = Duration::from_secs(10);
    let honest = async {
        // Tasks submitted one after another while the flood runs: each must be placed and done.
        let mut done = Vec::new();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        while start.elapsed() < flood - Duration::from_secs(1) {
            let id = acme.submit(&spec).await?;
            let task = acme.wait_terminal(&id, Duration::from_secs(20)).await?;
            done.push(task);
        }
        anyhow::Ok(done)
    };
    let (_, done) = tokio::join!(rogue.run_for(flood, Some(1000)), honest);
    let done = done?;
    let f = &rogue.stats.flood;
    eprintln!(
        "flood: {} bids sent, {} offered, declined {:?}, {} failed ({:?}), {} unanswered; {} honest tasks",
        f.sent,
        f.offered,
        f.declined,
        f.failed,
        f.first_error,
        rogue.flood_in_flight(),
        done.len()
    );
    assert!(f.sent >= 9_000, "the rogue sent only {} bids in {flood:?}", f.sent);
    assert!(done.len() >= 3, "only {} honest tasks ended during the flood", done.len());
    for task in &done {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(hosts_of(task), std::slice::from_ref(&globex.peer_id), "{task}");
        let wait = task["history"][0]["placed_at"].as_str().unwrap_or_default();
        assert!(!wait.is_empty(), "{task}");
    }
    let (_, node) = globex.get("/v1/node").await?;
    eprintln!("globex counters: {}", node["counters"]);
    Ok(())
}
