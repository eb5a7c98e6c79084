//! Chaos runs against real `orgmesh` processes, after TigerBeetle's VOPR and turmoil: one `u64`
//! seed drives every fault, a **safety phase** submits work while faults hit the mesh (with a
//! checker sampling invariants throughout), then a **liveness phase** after every fault has
//! healed, and a failing run prints the seed and the command that replays it.
//!
//! Layout:
//! - [`Fault`], [`Schedule`]: the seeded timeline (SIGKILL + restart, SIGSTOP/SIGCONT, link
//!   cut, random packet drop) and [`Schedule::run`], which applies it to the nodes in real time.
//! - [`run`]: the whole experiment: submissions spread over every origin, the sampling checker,
//!   the schedule, healing, the liveness wait and the final checks of every acknowledged task.
//!
//! The schedule is reproducible from the seed; the interleaving with the real processes is not
//! (wall-clock timing, the kernel's scheduler), so a seed replays the same faults at the same
//! times, which in practice is what makes a failure come back.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::Node;
use crate::netns::Hosts;

/// The seed of this run: `CHAOS_SEED` if set, else a random one. Printed first, always.
pub fn seed_from_env() -> u64 {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("CHAOS_SEED must be a u64, got {s:?}")),
        Err(_) => rand::random(),
    };
    println!("CHAOS_SEED={seed}");
    seed
}

/// An environment knob with a default, printed so that a run's log says what it used.
pub fn env_u64(name: &str, default: u64) -> u64 {
    let value = std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default);
    println!("{name}={value}");
    value
}

/// What can happen to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then `orgmesh up` again with the same directory and config after `down`.
    Kill {
        /// How long the node stays dead.
        down: Duration,
    },
    /// SIGSTOP, then SIGCONT after `duration`: the process is alive but answers nothing.
    Pause {
        /// How long it stays frozen.
        duration: Duration,
    },
    /// The host's cable is pulled (bridge side of its veth down), then put back.
    CutLink {
        /// How long it stays cut.
        duration: Duration,
    },
    /// nftables drops `percent` % of the p2p packets the host receives, then the rule goes.
    Drop {
        /// Share of packets dropped.
        percent: u8,
        /// How long the rule stays.
        duration: Duration,
    },
}

/// The kinds of fault a run may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// [`Fault::Kill`].
    Kill,
    /// [`Fault::Pause`].
    Pause,
    /// [`Fault::CutLink`] (hosts of their own only).
    CutLink,
    /// [`Fault::Drop`] (hosts of their own with nftables only).
    Drop,
}

impl Fault {
    /// How long the fault lasts before it heals.
    pub fn duration(&self) -> Duration {
        match *self {
            Fault::Kill { down } => down,
            Fault::Pause { duration } | Fault::CutLink { duration } | Fault::Drop { duration, .. } => {
                duration
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { down } => write!(f, "SIGKILL, restart after {down:?}"),
            Fault::Pause { duration } => write!(f, "SIGSTOP for {duration:?}"),
            Fault::CutLink { duration } => write!(f, "link cut for {duration:?}"),
            Fault::Drop { percent, duration } => write!(f, "drop {percent}% of p2p packets for {duration:?}"),
        }
    }
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When it starts, from the start of the run.
    pub at: Duration,
    /// Which node (index into the run's nodes).
    pub node: usize,
    /// What happens.
    pub fault: Fault,
}

/// A seeded timeline of faults over a bounded window. Faults on one node never overlap, at most
/// `max_concurrent` nodes are faulted at any moment (fewer than the node count, so one node at
/// least always answers and submissions can be acknowledged), and every fault heals before the
/// window ends.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The seed it came from.
    pub seed: u64,
    /// The window every fault starts and heals in.
    pub window: Duration,
    /// Faults by start time.
    pub faults: Vec<Scheduled>,
}

impl Schedule {
    /// Draws a schedule for `nodes` nodes from `seed`, using only `kinds`.
    pub fn generate(
        seed: u64,
        nodes: usize,
        window: Duration,
        kinds: &[FaultKind],
        max_concurrent: usize,
    ) -> Schedule {
        assert!(nodes >= 2 && !kinds.is_empty(), "a schedule needs two nodes and a fault kind");
        let max_concurrent = max_concurrent.clamp(1, nodes - 1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let window_ms = window.as_millis() as u64;
        let ms = Duration::from_millis;
        let mut faults: Vec<Scheduled> = Vec::new();
        // A little warm-up so that the first submissions land on a whole mesh.
        let mut t = rng.random_range(500..2_000u64);
        while t + 500 < window_ms {
            let busy: Vec<usize> = faults
                .iter()
                .filter(|f| {
                    f.at.as_millis() as u64 <= t && t < (f.at + f.fault.duration()).as_millis() as u64
                })
                .map(|f| f.node)
                .collect();
            if busy.len() < max_concurrent {
                let free: Vec<usize> = (0..nodes).filter(|n| !busy.contains(n)).collect();
                let node = free[rng.random_range(0..free.len())];
                let left = window_ms - t;
                let kind = kinds[rng.random_range(0..kinds.len())];
                let mut draw = |lo: u64, hi: u64| ms(rng.random_range(lo..hi).min(left));
                let fault = match kind {
                    FaultKind::Kill => Fault::Kill { down: draw(300, 6_000) },
                    // Around the failure detector's dead_after (2 s with fast gossip): short pauses
                    // look like lag, long ones get the node declared dead while it still runs.
                    FaultKind::Pause => Fault::Pause { duration: draw(200, 4_500) },
                    FaultKind::CutLink => Fault::CutLink { duration: draw(500, 8_000) },
                    FaultKind::Drop => {
                        let duration = draw(1_000, 10_000);
                        Fault::Drop { percent: rng.random_range(10..70u8), duration }
                    }
                };
                faults.push(Scheduled { at: ms(t), node, fault });
            }
            t += rng.random_range(200..2_500u64);
        }
        Schedule { seed, window, faults }
    }

    /// Applies the schedule to `nodes` (and their hosts, for link and drop faults), printing each
    /// action as it happens, then heals everything that could still be faulted. Actions run in
    /// order, one at a time; a slow restart delays the ones after it but never reorders them, so
    /// the concurrency bound holds. Errors (a node that does not come back) are collected and
    /// returned after everything else was healed.
    pub async fn run(&self, nodes: &mut [Node], net: Option<(&Hosts, u16)>, start: Instant) -> Vec<String> {
        #[derive(Debug)]
        enum Action {
            Begin(usize),
            Heal(usize),
        }
        let mut actions: Vec<(Duration, u8, Action)> = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            actions.push((f.at, 1, Action::Begin(i)));
            actions.push((f.at + f.fault.duration(), 0, Action::Heal(i)));
        }
        // Heals sort before begins at the same instant.
        actions.sort_by_key(|(at, order, _)| (*at, *order));
        let mut errors = Vec::new();
        let total = self.faults.len();
        for (at, _, action) in actions {
            tokio::time::sleep_until((start + at).into()).await;
            let (i, begin) = match action {
                Action::Begin(i) => (i, true),
                Action::Heal(i) => (i, false),
            };
            let Scheduled { node, fault, .. } = self.faults[i];
            let org = nodes[node].org.clone();
            let what = if begin { format!("{fault}") } else { "heal".to_string() };
            println!("[{:>6.1}s] fault {}/{total} {org}: {what}", start.elapsed().as_secs_f64(), i + 1);
            let result = apply(&mut nodes[node], node, fault, begin, net).await;
            if let Err(e) = result {
                let msg = format!("fault {}/{total} on {org} ({what}): {e:#}", i + 1);
                println!("  !! {msg}");
                errors.push(msg);
            }
        }
        errors.extend(heal_all(nodes, net).await);
        errors
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule of seed {}: {} faults in {:?}", self.seed, self.faults.len(), self.window)?;
        for (i, s) in self.faults.iter().enumerate() {
            writeln!(f, "  {:>3}. at {:>6.1}s node {}: {}", i + 1, s.at.as_secs_f64(), s.node, s.fault)?;
        }
        Ok(())
    }
}

async fn apply(
    node: &mut Node,
    index: usize,
    fault: Fault,
    begin: bool,
    net: Option<(&Hosts, u16)>,
) -> anyhow::Result<()> {
    let net = || net.context("a network fault needs hosts of their own");
    match (fault, begin) {
        (Fault::Kill { .. }, true) => node.kill(),
        (Fault::Kill { .. }, false) => node.up().await?,
        (Fault::Pause { .. }, true) => node.pause(),
        (Fault::Pause { .. }, false) => node.resume(),
        (Fault::CutLink { .. }, up) => net()?.0.set_link(index, !up)?,
        (Fault::Drop { percent, .. }, true) => {
            let (hosts, port) = net()?;
            hosts.drop_packets(index, port, percent)?;
        }
        (Fault::Drop { .. }, false) => net()?.0.clear_drops(index)?,
    }
    Ok(())
}

/// Makes sure nothing is left faulted: every node resumed and running, every link up, every drop
/// rule gone. Returns what failed.
pub async fn heal_all(nodes: &mut [Node], net: Option<(&Hosts, u16)>) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        if let Some((hosts, _)) = net
            && let Err(e) = hosts.set_link(i, true).and_then(|()| hosts.clear_drops(i))
        {
            errors.push(format!("healing the network of {}: {e:#}", node.org));
        }
        if node.is_running() {
            node.resume();
        } else if let Err(e) = node.up().await {
            errors.push(format!("restarting {}: {e:#}", node.org));
        }
    }
    errors
}

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The test's name, for the replay command.
    pub test_name: String,
    /// Tasks to submit.
    pub tasks: usize,
    /// The fault window; submissions are spread over it.
    pub window: Duration,
    /// How long after healing every acknowledged task has to reach a terminal state.
    pub liveness: Duration,
    /// Submissions in flight at once.
    pub concurrency: usize,
    /// Nodes faulted at once, at most.
    pub max_concurrent_faults: usize,
    /// Fault kinds to draw from.
    pub kinds: Vec<FaultKind>,
}

/// A task the mesh acknowledged (202, or 200 for an idempotent replay of an accepted one).
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    /// Index of its origin node.
    origin: usize,
}

/// An invariant that did not hold.
#[derive(Debug, Clone)]
struct Violation {
    id: String,
    origin: usize,
    what: String,
    task: Value,
    log: Option<String>,
}

const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

fn is_terminal(task: &Value) -> bool {
    task["status"].as_str().is_some_and(|s| TERMINAL.contains(&s))
}

/// The command of task `i`: prints `<task id> <attempt>` once, with a short sleep before or
/// after for some, so that faults catch attempts both before and after their output was sent.
fn spec(i: usize, replace_after_s: Option<u64>) -> Value {
    let line = r#"echo "$ORGMESH_TASK_ID $ORGMESH_ATTEMPT""#;
    let script = match i % 4 {
        0 => format!("{line}; sleep 0.8"),
        1 => format!("sleep 0.3; {line}"),
        _ => line.to_string(),
    };
    let mut spec = json!({
        "command": ["sh", "-c", script],
        "resources": {"cpu_millis": 10, "memory_mb": 1},
        "timeout_s": 30,
        "max_attempts": 5,
    });
    if let Some(s) = replace_after_s {
        spec["replace_after_s"] = json!(s);
    }
    spec
}

/// A client whose requests give up: a paused or cut-off node must not hang a submitter.
fn client(timeout: Duration) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", crate::HARNESS_TOKEN);
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().expect("a valid header"));
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("an HTTP client")
}

/// Outcome of one submission: acknowledged, given up (never acknowledged), or refused in a way
/// that is a bug in the test or the node (4xx).
enum Submitted {
    Acked(Acked),
    GaveUp,
    Refused(String),
}

async fn submit_one(
    http: &reqwest::Client,
    apis: &[String],
    i: usize,
    spec: &Value,
    key: &str,
    give_up_at: Instant,
) -> Submitted {
    let n = apis.len();
    let mut try_no = 0usize;
    while Instant::now() < give_up_at {
        // Each origin twice in a row (the second time is the idempotent retry), then the next.
        let origin = (i + try_no / 2) % n;
        try_no += 1;
        let resp = http
            .post(format!("{}/v1/tasks", apis[origin]))
            .header("Idempotency-Key", key)
            .json(spec)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 200 => {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                match body["id"].as_str() {
                    Some(id) => return Submitted::Acked(Acked { id: id.to_string(), origin }),
                    None => return Submitted::Refused(format!("task {i}: 2xx without an id: {body}")),
                }
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                return Submitted::Refused(format!("task {i} at node {origin}: {status}: {body}"));
            }
            // 5xx, 429, a timeout or a refused connection: the node is down, paused or cut off.
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Submitted::GaveUp
}

/// Every task of every node, by id (paged through `GET /v1/tasks`). `None` when a node does not
/// answer.
async fn all_tasks(http: &reqwest::Client, api: &str) -> Option<HashMap<String, Value>> {
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{api}/v1/tasks?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http.get(url).send().await.ok()?.json().await.ok()?;
        for t in page["items"].as_array()? {
            if let Some(id) = t["id"].as_str() {
                out.insert(id.to_string(), t.clone());
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Some(out),
        }
    }
}

/// The invariants of one finished, acknowledged task: at most one attempt with an exit-code
/// outcome in `history`, and a succeeded task's log is exactly one line `<id> <attempt>` of the
/// attempt it records (two attempts' output, or another attempt's, means fencing failed).
fn check_task(task: &Value, log: Option<&str>) -> Vec<String> {
    let mut bad = Vec::new();
    let id = task["id"].as_str().unwrap_or("?");
    let attempt = task["attempt"].as_u64().unwrap_or(0);
    let history = task["history"].as_array().cloned().unwrap_or_default();
    let exits: Vec<u64> = history
        .iter()
        .filter(|h| h["outcome"].as_str().is_some_and(|o| o.starts_with("exit ")))
        .filter_map(|h| h["attempt"].as_u64())
        .collect();
    if exits.len() > 1 {
        bad.push(format!("{} attempts ended with an exit code: {exits:?}", exits.len()));
    }
    if task["status"] == "succeeded" {
        if task["exit_code"] != 0 {
            bad.push(format!("succeeded with exit_code {}", task["exit_code"]));
        }
        if !exits.is_empty() && exits != [attempt] {
            bad.push(format!("the exit recorded in history is attempt {exits:?}, the task says {attempt}"));
        }
        let want = format!("{id} {attempt}");
        match log {
            None => bad.push("no log".into()),
            Some(log) => {
                let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
                if lines != [want.as_str()] {
                    bad.push(format!("log should be exactly {want:?}, is {lines:?}"));
                }
            }
        }
    }
    bad
}

/// The checker that samples acknowledged tasks while faults run: an acknowledged task must
/// exist at its origin whenever the origin answers, and a terminal task never changes its
/// status, attempt or exit code.
async fn sample_checker(
    seed: u64,
    apis: Vec<String>,
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<AtomicBool>,
) -> (u64, Vec<Violation>) {
    let http = client(Duration::from_secs(1));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5afe);
    let mut terminal: HashMap<String, Value> = HashMap::new();
    let mut violations = Vec::new();
    let mut checked = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sample: Vec<Acked> = {
            let acked = acked.lock().expect("acked list");
            if acked.is_empty() {
                Vec::new()
            } else {
                (0..8).map(|_| acked[rng.random_range(0..acked.len())].clone()).collect()
            }
        };
        for a in sample {
            let Ok(resp) = http.get(format!("{}/v1/tasks/{}", apis[a.origin], a.id)).send().await else {
                continue;
            };
            let status = resp.status().as_u16();
            let Ok(task) = resp.json::<Value>().await else { continue };
            checked += 1;
            if status == 404 {
                violations.push(Violation {
                    id: a.id.clone(),
                    origin: a.origin,
                    what: "acknowledged, then not found at its origin while faults ran".into(),
                    task,
                    log: None,
                });
                continue;
            }
            if let Some(before) = terminal.get(&a.id) {
                let key = |t: &Value| (t["status"].clone(), t["attempt"].clone(), t["exit_code"].clone());
                if key(before) != key(&task) {
                    violations.push(Violation {
                        id: a.id.clone(),
                        origin: a.origin,
                        what: format!("a terminal task changed: it was {before}"),
                        task,
                        log: None,
                    });
                }
            } else if is_terminal(&task) {
                terminal.insert(a.id.clone(), task);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (checked, violations)
}

/// A log line without its terminal colours.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, up to and including the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs one chaos experiment on running, converged `nodes`: see the module documentation.
/// Returns an error (after printing the seed, the replay command and the first offenders) when
/// an invariant did not hold.
pub async fn run(
    seed: u64,
    cfg: &Config,
    nodes: &mut [Node],
    net: Option<(&Hosts, u16)>,
) -> anyhow::Result<()> {
    let replay = format!(
        "CHAOS_SEED={seed} cargo test -p orgmesh-tests --test chaos -- {} --nocapture",
        cfg.test_name
    );
    let result = run_inner(seed, cfg, nodes, net).await;
    match &result {
        Ok(()) => println!("chaos run of seed {seed} passed"),
        Err(e) => println!("\nCHAOS FAILURE, seed {seed}: {e:#}\nreplay with: {replay}\n"),
    }
    result
}

async fn run_inner(
    seed: u64,
    cfg: &Config,
    nodes: &mut [Node],
    net: Option<(&Hosts, u16)>,
) -> anyhow::Result<()> {
    let n = nodes.len();
    let apis: Vec<String> = nodes.iter().map(|node| node.api.clone()).collect();
    let orgs: Vec<String> = nodes.iter().map(|node| node.org.clone()).collect();
    let schedule = Schedule::generate(seed, n, cfg.window, &cfg.kinds, cfg.max_concurrent_faults);
    print!("{schedule}");
    println!(
        "nodes: {}",
        orgs.iter()
            .zip(&apis)
            .enumerate()
            .map(|(i, (o, a))| format!("{i}={o}@{a}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let http = client(Duration::from_secs(3));

    // Short enough that a host cut off for good is replaced well inside the liveness bound, long
    // enough that most pauses and short cuts are ridden out by the attempt that was running.
    let replace_after_s = Some(10);

    // Safety phase: submissions over the window, the sampling checker, the faults.
    let start = Instant::now();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let checker = tokio::spawn(sample_checker(seed, apis.clone(), acked.clone(), stop.clone()));
    let submitter = {
        let (apis, acked, http) = (apis.clone(), acked.clone(), http.clone());
        let (tasks, concurrency) = (cfg.tasks, cfg.concurrency);
        // Submissions start over 90 % of the window and retry until well after it.
        let spread = cfg.window.mul_f64(0.9);
        let give_up_at = start + cfg.window + Duration::from_secs(30);
        tokio::spawn(async move {
            let results: Vec<Submitted> = futures::stream::iter(0..tasks)
                .map(|i| {
                    let (apis, acked, http) = (&apis, &acked, &http);
                    async move {
                        let not_before = start + spread.mul_f64(i as f64 / tasks as f64);
                        tokio::time::sleep_until(not_before.into()).await;
                        let key = format!("chaos-{seed}-{i}");
                        let s = submit_one(http, apis, i, &spec(i, replace_after_s), &key, give_up_at).await;
                        if let Submitted::Acked(a) = &s {
                            acked.lock().expect("acked list").push(a.clone());
                        }
                        s
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            results
        })
    };
    let fault_errors = schedule.run(nodes, net, start).await;
    println!("[{:>6.1}s] every fault healed", start.elapsed().as_secs_f64());
    let results = submitter.await?;
    let submitted_by = start.elapsed();
    let (mut gave_up, mut refused) = (0usize, Vec::new());
    for r in &results {
        match r {
            Submitted::Acked(_) => {}
            Submitted::GaveUp => gave_up += 1,
            Submitted::Refused(e) => refused.push(e.clone()),
        }
    }
    let acked: Vec<Acked> = acked.lock().expect("acked list").clone();
    println!(
        "[{:>6.1}s] submissions done: {} acknowledged, {gave_up} never acknowledged, {} refused",
        submitted_by.as_secs_f64(),
        acked.len(),
        refused.len()
    );

    // Liveness phase: everything healed; every acknowledged task must end within the bound.
    println!("liveness bound: {:?} after the last submission (CHAOS_LIVENESS_S)", cfg.liveness);
    let list_http = client(Duration::from_secs(20));
    let deadline = Instant::now() + cfg.liveness;
    let mut last_report = Instant::now();
    let tasks: HashMap<String, Value> = loop {
        let mut all = HashMap::new();
        for api in &apis {
            if let Some(t) = all_tasks(&list_http, api).await {
                all.extend(t);
            }
        }
        let open: Vec<&Acked> =
            acked.iter().filter(|a| all.get(&a.id).is_none_or(|t| !is_terminal(t))).collect();
        if open.is_empty() || Instant::now() > deadline {
            break all;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
            for a in &open {
                let s = all.get(&a.id).and_then(|t| t["status"].as_str()).unwrap_or("missing");
                *by_status.entry(s.to_string()).or_default() += 1;
            }
            println!("[{:>6.1}s] {} still open: {by_status:?}", start.elapsed().as_secs_f64(), open.len());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let (sampled, mut violations) = checker.await?;
    println!("[{:>6.1}s] liveness phase over", start.elapsed().as_secs_f64());

    // Final checks of every acknowledged task.
    let logs: HashMap<String, Option<String>> = futures::stream::iter(
        acked.iter().filter(|a| tasks.get(&a.id).is_some_and(|t| t["status"] == "succeeded")),
    )
    .map(|a| {
        let http = &list_http;
        // The result's output starts at its attempt's `log_start`: the log holds every attempt's
        // output in order, so an earlier attempt's partial output before it is expected.
        let start = tasks
            .get(&a.id)
            .and_then(|t| {
                t["history"].as_array().and_then(|h| h.last()).and_then(|h| h["log_start"].as_u64())
            })
            .unwrap_or(0);
        let url = format!("{}/v1/tasks/{}/logs?offset={start}", apis[a.origin], a.id);
        async move {
            let log = match http.get(url).send().await {
                Ok(r) if r.status().is_success() => r.text().await.ok(),
                _ => None,
            };
            (a.id.clone(), log)
        }
    })
    .buffer_unordered(16)
    .collect()
    .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors_seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut replaced = 0usize;
    for a in &acked {
        let Some(task) = tasks.get(&a.id) else {
            // Not in the listing: ask for it directly, to tell lost from unlisted.
            let (status, task) = match http.get(format!("{}/v1/tasks/{}", apis[a.origin], a.id)).send().await
            {
                Ok(r) => (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null)),
                Err(e) => (0, json!(e.to_string())),
            };
            *counts.entry("lost".into()).or_default() += 1;
            violations.push(Violation {
                id: a.id.clone(),
                origin: a.origin,
                what: format!("acknowledged but lost: not listed at its origin (GET gave {status})"),
                task,
                log: None,
            });
            continue;
        };
        let status = task["status"].as_str().unwrap_or("?").to_string();
        *counts.entry(status.clone()).or_default() += 1;
        if task["attempt"].as_u64().unwrap_or(0) > 1 {
            replaced += 1;
        }
        if let Some(e) = task["error"].as_str() {
            *errors_seen.entry(e.to_string()).or_default() += 1;
        }
        if !is_terminal(task) {
            violations.push(Violation {
                id: a.id.clone(),
                origin: a.origin,
                what: format!("still {status} {:?} after healing", cfg.liveness),
                task: task.clone(),
                log: None,
            });
            continue;
        }
        let log = logs.get(&a.id).cloned().flatten();
        for what in check_task(task, log.as_deref()) {
            violations.push(Violation {
                id: a.id.clone(),
                origin: a.origin,
                what,
                task: task.clone(),
                log: log.clone(),
            });
        }
    }
    let mut stale = 0u64;
    for api in &apis {
        if let Ok(r) = http.get(format!("{api}/v1/node")).send().await {
            let node: Value = r.json().await.unwrap_or(Value::Null);
            let c = &node["counters"];
            stale += c["stale_reports"].as_u64().unwrap_or(0);
        }
    }

    println!("---- chaos summary (seed {seed}) ----");
    println!("faults applied: {}", schedule.faults.len());
    println!("submitted: {}, acknowledged: {}, never acknowledged: {gave_up}", cfg.tasks, acked.len());
    println!("by status: {counts:?}");
    println!("re-placed (attempt > 1): {replaced}");
    println!("stale reports rejected (counters since each node's last start): {stale}");
    println!("sampled during faults: {sampled} reads");
    for (e, k) in errors_seen.iter().take(8) {
        println!("error {k}x: {e}");
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for v in &violations {
        // The kind of violation: its words up to the first detail (a colon or a quoted value).
        let kind = v.what.split([':', '"']).next().unwrap_or("").trim().to_string();
        *kinds.entry(kind).or_default() += 1;
    }
    println!("violations: {} {kinds:?}", violations.len());
    for v in violations.iter().take(5) {
        println!(
            "\n  task {} (origin {} = {}): {}\n  task: {}\n  log: {:?}",
            v.id,
            v.origin,
            orgs[v.origin],
            v.what,
            serde_json::to_string_pretty(&v.task).unwrap_or_default(),
            v.log
        );
    }
    // What the nodes logged about the first offenders: the start of a diagnosis.
    for v in violations.iter().take(2) {
        println!("\n  node logs mentioning {}:", v.id);
        for node in nodes.iter() {
            let text = std::fs::read_to_string(node.dir.join("node.log")).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains(&v.id)).take(12) {
                println!("    {}: {}", node.org, strip_ansi(line).chars().take(300).collect::<String>());
            }
        }
    }
    let mut problems = Vec::new();
    if !violations.is_empty() {
        problems.push(format!("{} invariant violations", violations.len()));
    }
    if !refused.is_empty() {
        problems.push(format!("{} submissions refused, first: {}", refused.len(), refused[0]));
    }
    if !fault_errors.is_empty() {
        problems.push(format!("faults could not be applied or healed: {fault_errors:?}"));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [FaultKind; 4] = [FaultKind::Kill, FaultKind::Pause, FaultKind::CutLink, FaultKind::Drop];

    #[test]
    fn one_seed_one_schedule() {
        let w = Duration::from_secs(40);
        assert_eq!(Schedule::generate(7, 5, w, &ALL, 2).faults, Schedule::generate(7, 5, w, &ALL, 2).faults);
        assert_ne!(Schedule::generate(7, 5, w, &ALL, 2).faults, Schedule::generate(8, 5, w, &ALL, 2).faults);
    }

    #[test]
    fn schedules_keep_their_bounds() {
        let window = Duration::from_secs(40);
        for seed in 0..500 {
            let s = Schedule::generate(seed, 5, window, &ALL, 2);
            assert!(!s.faults.is_empty(), "seed {seed}: no faults");
            let end = |f: &Scheduled| f.at + f.fault.duration();
            for (i, a) in s.faults.iter().enumerate() {
                assert!(end(a) <= window, "seed {seed}: fault {i} heals after the window");
                // Faulted nodes at the instant `a` starts (the most there can be while it lasts).
                let active: Vec<&Scheduled> =
                    s.faults.iter().filter(|b| b.at <= a.at && a.at < end(b)).collect();
                assert!(active.len() <= 2, "seed {seed}: {} nodes faulted at {:?}", active.len(), a.at);
                let same_node = active.iter().filter(|b| b.node == a.node).count();
                assert_eq!(same_node, 1, "seed {seed}: overlapping faults on node {}", a.node);
            }
        }
    }

    #[test]
    fn colours_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"), "2026  INFO x");
    }
}
