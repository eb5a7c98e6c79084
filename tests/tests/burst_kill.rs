//! A 202 means durable (issue 4, item 4): a node SIGKILLed in the middle of a burst of concurrent
//! submissions has, after it restarts, every task it acknowledged before it died.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orgmesh_tests::{Node, NodeOptions, wait_for};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_202_survives_a_sigkill_in_the_middle_of_a_burst() -> anyhow::Result<()> {
    let mut acme = Node::start("acme", &NodeOptions::default()).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut acked_total: Vec<String> = Vec::new();
    // Three rounds: the kill lands at a different point of the burst each time.
    for (round, kill_after) in [20usize, 60, 150].into_iter().enumerate() {
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..32 {
            let (http, api, acked, stop) = (http.clone(), acme.api.clone(), acked.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    // Half with an Idempotency-Key: that path writes the key in the same commit.
                    let mut req = http
                        .post(format!("{api}/v1/tasks"))
                        .json(&json!({"command": ["true"], "env": {"W": format!("{round}-{w}-{k}")}}));
                    if k % 2 == 0 {
                        req = req.header("Idempotency-Key", format!("burst-{round}-{w}-{k}"));
                    }
                    match req.send().await {
                        Ok(r) if r.status().as_u16() == 202 => {
                            let body: Value = r.json().await.unwrap_or(Value::Null);
                            if let Some(id) = body["id"].as_str() {
                                acked.lock().expect("acked").push(id.to_string());
                            }
                        }
                        // The node is gone: this worker's burst is over.
                        Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }));
        }
        wait_for(&format!("{kill_after} acknowledgements"), Duration::from_secs(60), async || {
            (acked.lock().expect("acked").len() >= kill_after).then_some(())
        })
        .await?;
        // Every worker is mid-request or about to send one.
        acme.kill();
        let acked_before_death = acked.lock().expect("acked").clone();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await?;
        }
        // Responses read after the kill came from the dead process's last moments: keep them too.
        let acked = acked.lock().expect("acked").clone();
        println!(
            "round {round}: killed after {} acknowledgements ({} in all, counting the last in flight)",
            acked_before_death.len(),
            acked.len()
        );
        acme.up().await?;
        acked_total.extend(acked);
        let mut missing = Vec::new();
        for id in &acked_total {
            let (status, body) = acme.get(&format!("/v1/tasks/{id}")).await?;
            if status != 200 {
                missing.push(format!("{id}: GET gave {status} {body}"));
            }
        }
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged tasks lost after SIGKILL + restart, first: {:?}",
            missing.len(),
            acked_total.len(),
            &missing[..missing.len().min(5)]
        );
    }
    println!("{} acknowledged tasks all present after three SIGKILLs", acked_total.len());
    Ok(())
}
