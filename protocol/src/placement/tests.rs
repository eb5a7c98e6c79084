//! End-to-end tests of placement: one `Negotiator` wired to several `Host`s through an in-memory
//! harness that delivers every request synchronously (or holds it, for a silent host) and steps
//! virtual time. Test-only; must never grow a clock, threads or unseeded randomness.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::negotiator::{BUSY_MEMORY, BUSY_MEMORY_PRUNE_ABOVE, MAX_KEPT};
use super::*;
use crate::ids::{Attempt, Org, PeerId, TaskId};
use crate::record::{AcceptPolicy, NodeRecord, RecordVersion};
use crate::task::{Resources, TaskSpec};
use crate::time::Time;
use crate::wire::place::{CommitResponse, PlaceRequest};

const ORIGIN: &str = "12D3KooWorigin";
const A: &str = "12D3KooWhostA";
const B: &str = "12D3KooWhostB";
const C: &str = "12D3KooWhostC";
const TTL: Duration = Duration::from_millis(5000);

fn peer(s: &str) -> PeerId {
    PeerId::new(s).unwrap()
}

fn org(s: &str) -> Org {
    Org::new(s).unwrap()
}

fn task(n: u128) -> TaskId {
    TaskId::new(1_700_000_000_000, n)
}

fn spec() -> TaskSpec {
    let mut spec = TaskSpec::new(vec!["true".into()]);
    spec.resources = Resources { cpu_millis: 1000, memory_mb: 512, gpus: 0 };
    spec
}

fn config(slots: u32) -> HostConfig {
    HostConfig { cpu_millis: 4000, memory_mb: 4096, gpus: 0, slots, reservation_ttl: TTL }
}

/// One simulated node: its ledger plus what its gossiped record says about it (which may lag).
struct Node {
    host: Host,
    record: NodeRecord,
    silent: bool,
    reject_commits: u32,
    /// The score it claims in every offer, whatever its state (a lying host).
    claims: Option<u16>,
}

/// A negotiator at `ORIGIN` and the hosts it can reach, stepped through virtual time.
struct Mesh {
    origin: PeerId,
    neg: Negotiator<ChaCha8Rng>,
    nodes: BTreeMap<PeerId, Node>,
    now: Time,
    /// Every negotiator output, in order.
    log: Vec<NegotiatorOutput>,
    events: Vec<PlacementEvent>,
    /// Requests sent to a silent node, delivered by `deliver_held`.
    held: Vec<(PeerId, TaskId, Attempt, PlaceRequest)>,
}

impl Mesh {
    fn new(seed: u64) -> Self {
        Self::with_config(seed, PlacementConfig::default())
    }

    fn with_config(seed: u64, config: PlacementConfig) -> Self {
        let origin = peer(ORIGIN);
        let neg = Negotiator::new(origin.clone(), org("acme"), config, ChaCha8Rng::seed_from_u64(seed));
        Self {
            origin,
            neg,
            nodes: BTreeMap::new(),
            now: Time(1000),
            log: Vec::new(),
            events: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Adds a node; its record starts in sync with its ledger.
    fn add(&mut self, id: &str, org_name: &str, config: HostConfig) -> &mut Self {
        let host = Host::new(config, org(org_name), BTreeMap::new(), AcceptPolicy::AnyOrg);
        let record = NodeRecord {
            peer_id: peer(id),
            org: org(org_name),
            name: format!("node-{org_name}"),
            addrs: Vec::new(),
            labels: BTreeMap::new(),
            capacity: host.capacity(),
            accepts: AcceptPolicy::AnyOrg,
            draining: false,
            isolation: Default::default(),
            software: "test".into(),
            version: RecordVersion::default(),
        };
        self.nodes.insert(peer(id), Node { host, record, silent: false, reject_commits: 0, claims: None });
        self
    }

    fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.get_mut(&peer(id)).unwrap()
    }

    fn host(&self, id: &str) -> &Host {
        &self.nodes[&peer(id)].host
    }

    /// Takes `n` slots on a node with running work, and gossips it.
    fn load(&mut self, id: &str, n: u32) {
        let origin = self.origin.clone();
        let node = self.node(id);
        for i in 0..n {
            let t =
                TaskId::new(1, 1000 + u128::from(i) + u128::from(node.host.capacity().running_tasks) * 100);
            node.host.adopt_running(
                origin.clone(),
                t,
                Attempt::FIRST,
                Resources { cpu_millis: 500, memory_mb: 256, gpus: 0 },
            );
        }
        self.gossip();
    }

    /// Adds `n` hosts of `slots` in org globex, named by number.
    fn add_hosts(&mut self, n: usize, slots: u32) -> Vec<String> {
        let ids: Vec<String> = (1..=n).map(|i| format!("12D3KooWhost{i}").replace('0', "z")).collect();
        for id in &ids {
            self.add(id, "globex", config(slots));
        }
        ids
    }

    /// Fills `id`'s CPU without gossiping it: its record still shows what it showed.
    fn fill_unseen(&mut self, id: &str) {
        let full = Resources { cpu_millis: 4000, ..Resources::default() };
        self.node(id).host.adopt_running(peer(ORIGIN), TaskId::new(9, 9), Attempt::FIRST, full);
    }

    /// Brings every record's capacity in line with its ledger.
    fn gossip(&mut self) {
        for node in self.nodes.values_mut() {
            node.record.capacity = node.host.capacity();
        }
    }

    fn records(&self) -> Vec<NodeRecord> {
        self.nodes.values().map(|n| n.record.clone()).collect()
    }

    fn place(&mut self, t: TaskId, spec: &TaskSpec) {
        let records = self.records();
        self.neg.place(t, Attempt::FIRST, spec, &records, self.now);
        self.pump();
    }

    /// Drains the negotiator, delivering each request at once unless its target is silent.
    fn pump(&mut self) {
        while let Some(out) = self.neg.poll_output() {
            self.log.push(out.clone());
            match out {
                NegotiatorOutput::Event(e) => self.events.push(e),
                NegotiatorOutput::Send { to, task, attempt, request } => {
                    if self.nodes.get(&to).is_some_and(|n| n.silent) {
                        self.held.push((to, task, attempt, request));
                    } else {
                        self.deliver(to, task, attempt, request);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, to: PeerId, task: TaskId, attempt: Attempt, request: PlaceRequest) {
        let (now, origin) = (self.now, self.origin.clone());
        let Some(node) = self.nodes.get_mut(&to) else {
            self.neg.handle_request_failed(&to, task, attempt, now);
            return;
        };
        match request {
            PlaceRequest::Bid(bid) => {
                let mut resp = node.host.handle_bid(&origin, &bid, now);
                if let (Some(claim), crate::wire::place::BidResponse::Offer { score, .. }) =
                    (node.claims, &mut resp)
                {
                    *score = claim;
                }
                self.neg.handle_bid_response(&to, task, attempt, resp, now);
            }
            PlaceRequest::Commit(commit) => {
                let resp = if node.reject_commits > 0 {
                    node.reject_commits -= 1;
                    CommitResponse::Rejected { reason: "test says no".into() }
                } else {
                    node.host.handle_commit(&origin, &commit, now)
                };
                self.neg.handle_commit_response(&to, task, attempt, resp, now);
            }
            PlaceRequest::Release { reservation } => node.host.handle_release(&origin, reservation, now),
        }
    }

    fn deliver_held(&mut self) {
        for (to, task, attempt, request) in std::mem::take(&mut self.held) {
            self.deliver(to, task, attempt, request);
        }
        self.pump();
    }

    /// Moves virtual time on and runs whatever fell due.
    fn advance(&mut self, ms: u64) {
        self.now = self.now + Duration::from_millis(ms);
        let now = self.now;
        for node in self.nodes.values_mut() {
            node.host.handle_timeout(now);
        }
        if self.neg.poll_timeout().is_some_and(|t| t <= now) {
            self.neg.handle_timeout(now);
        }
        self.pump();
    }

    /// The requests sent, as (kind, to) pairs.
    fn sends(&self) -> Vec<(&'static str, String)> {
        self.log
            .iter()
            .filter_map(|o| match o {
                NegotiatorOutput::Send { to, request, .. } => {
                    let kind = match request {
                        PlaceRequest::Bid(_) => "bid",
                        PlaceRequest::Commit(_) => "commit",
                        PlaceRequest::Release { .. } => "release",
                    };
                    Some((kind, to.to_string()))
                }
                NegotiatorOutput::Event(_) => None,
            })
            .collect()
    }

    fn placed_on(&self) -> Option<String> {
        self.events.iter().find_map(|e| match e {
            PlacementEvent::Placed { host, .. } => Some(host.peer.to_string()),
            _ => None,
        })
    }

    fn only_event(&self) -> &PlacementEvent {
        assert_eq!(self.events.len(), 1, "events: {:?}", self.events);
        &self.events[0]
    }

    fn reason(&self) -> (&'static str, String) {
        match self.only_event() {
            PlacementEvent::Unplaceable { reason, .. } => ("unplaceable", reason.clone()),
            PlacementEvent::Waiting { reason, .. } => ("waiting", reason.clone()),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

fn sends(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, p)| (*k, p.to_string())).collect()
}

/// Origin with no capacity of its own plus three hosts; B most idle, then A, then C. All three
/// have room, so all three are asked (in an order drawn per placement) and B's offer wins.
fn three_hosts(seed: u64) -> Mesh {
    let mut m = Mesh::new(seed);
    m.add(ORIGIN, "acme", config(0)).add(A, "globex", config(4)).add(B, "initech", config(4)).add(
        C,
        "umbrella",
        config(4),
    );
    m.load(A, 1);
    m.load(C, 2);
    m
}

#[test]
fn commits_to_the_most_idle_and_releases_the_others() {
    let mut m = three_hosts(1);
    let t = task(1);
    m.place(t, &spec());
    let sent = m.sends();
    let bids: BTreeSet<&str> = sent[..3].iter().map(|(k, p)| (assert_eq!(*k, "bid"), p.as_str()).1).collect();
    assert_eq!(bids, BTreeSet::from([A, B, C]), "{sent:?}");
    assert_eq!(sent[3], ("commit", B.to_string()), "the best offer wins: {sent:?}");
    let released: BTreeSet<(&str, &str)> = sent[4..].iter().map(|(k, p)| (*k, p.as_str())).collect();
    assert_eq!(released, BTreeSet::from([("release", A), ("release", C)]));
    assert_eq!(
        m.only_event(),
        &PlacementEvent::Placed {
            task: t,
            attempt: Attempt::FIRST,
            host: PlacedOn { peer: peer(B), org: org("initech"), name: "node-initech".into() }
        }
    );
    assert!(!m.neg.is_placing(t));
    assert_eq!(m.neg.poll_timeout(), None);
    assert_eq!(m.host(B).running(), vec![(peer(ORIGIN), t, Attempt::FIRST)]);
    assert_eq!(m.host(B).capacity().free_slots, 3);
    assert_eq!(m.host(A).capacity().free_slots, 3, "loser's reservation released");
    assert_eq!(m.host(C).capacity().free_slots, 2, "loser's reservation released");
    assert_eq!(m.host(A).poll_timeout(), None);
}

#[test]
fn commit_carries_the_spec_and_origin_org() {
    let mut m = three_hosts(1);
    let mut s = spec();
    s.env.insert("KEY".into(), "value".into());
    m.place(task(1), &s);
    let commit = m.log.iter().find_map(|o| match o {
        NegotiatorOutput::Send { request: PlaceRequest::Commit(c), .. } => Some(c.clone()),
        _ => None,
    });
    let commit = commit.unwrap();
    assert_eq!((commit.spec, commit.origin_org, commit.task), (s, org("acme"), task(1)));
}

#[test]
fn policy_decline_places_elsewhere_and_all_declining_is_unplaceable() {
    let mut m = three_hosts(1);
    // B changed its policy after its record was gossiped: it is still asked, and declines.
    m.node(B).host.set_policy(AcceptPolicy::orgs(vec![org("initech")]));
    m.place(task(1), &spec());
    assert_eq!(m.placed_on().as_deref(), Some(A));
    assert_eq!(m.host(B).capacity().free_slots, 4);

    let mut m = three_hosts(1);
    for id in [A, B, C] {
        m.node(id).host.set_policy(AcceptPolicy::orgs(vec![org("globex")]));
    }
    m.place(task(1), &spec());
    let (kind, reason) = m.reason();
    assert_eq!(kind, "unplaceable");
    assert!(reason.starts_with("all 3 candidate nodes declined"), "{reason}");
    assert!(reason.contains("initech (node-initech): does not accept tasks from this org"), "{reason}");
}

#[test]
fn gossiped_policy_that_refuses_the_origin_is_unplaceable_at_once() {
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(4)).add(B, "initech", config(4));
    for id in [A, B] {
        m.node(id).record.accepts = AcceptPolicy::orgs(vec![org("globex")]);
    }
    m.place(task(1), &spec());
    let (kind, reason) = m.reason();
    assert_eq!(kind, "unplaceable");
    assert_eq!(reason, "no node in org(s) globex, initech accepts tasks from org acme");
    assert!(m.sends().is_empty(), "nobody is asked");
}

#[test]
fn org_constraint_restricts_candidates() {
    let mut m = three_hosts(1);
    let mut s = spec();
    s.constraints.orgs = vec![org("umbrella")];
    m.place(task(1), &s);
    assert_eq!(m.sends(), sends(&[("bid", C), ("commit", C)]));
    assert_eq!(m.placed_on().as_deref(), Some(C));

    let mut m = three_hosts(1);
    s.constraints.orgs = vec![org("no-such-org")];
    m.place(task(1), &s);
    assert_eq!(m.reason(), ("unplaceable", "no known node is in org(s) no-such-org".to_owned()));
    assert!(m.sends().is_empty());
    assert!(!m.neg.is_placing(task(1)));
}

#[test]
fn label_and_size_constraints_name_what_is_missing() {
    let mut m = three_hosts(1);
    m.node(A).record.labels.insert("zone".into(), "b".into());
    let mut s = spec();
    s.constraints.node_labels.insert("gpu".into(), "yes".into());
    m.place(task(1), &s);
    assert_eq!(m.reason(), ("unplaceable", "no known node has label gpu=yes".to_owned()));

    // Each label exists somewhere, but no node has both.
    let mut m = three_hosts(1);
    m.node(A).record.labels.insert("zone".into(), "b".into());
    m.node(B).record.labels.insert("gpu".into(), "yes".into());
    s.constraints.node_labels.insert("zone".into(), "b".into());
    m.place(task(1), &s);
    assert_eq!(m.reason(), ("unplaceable", "no known node has all of the labels gpu=yes, zone=b".to_owned()));

    // A matching label on a node outside the requested orgs does not count.
    let mut m = three_hosts(1);
    m.node(A).record.labels.insert("gpu".into(), "yes".into());
    let mut s = spec();
    s.constraints.orgs = vec![org("initech")];
    s.constraints.node_labels.insert("gpu".into(), "yes".into());
    m.place(task(1), &s);
    assert_eq!(m.reason(), ("unplaceable", "no known node in org(s) initech has label gpu=yes".to_owned()));

    let mut m = three_hosts(1);
    let mut s = spec();
    s.resources = Resources { cpu_millis: 8000, memory_mb: 512, gpus: 1 };
    m.place(task(1), &s);
    assert_eq!(
        m.reason(),
        (
            "unplaceable",
            "no known node is large enough for cpu_millis=8000, memory_mb=512, gpus=1".to_owned()
        )
    );
}

#[test]
fn stale_labels_declined_by_every_host_are_unplaceable() {
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(4));
    // The record claims a label the host does not have (it changed after gossip).
    m.node(A).record.labels.insert("gpu".into(), "yes".into());
    let mut s = spec();
    s.constraints.node_labels.insert("gpu".into(), "yes".into());
    m.place(task(1), &s);
    let (kind, reason) = m.reason();
    assert_eq!(kind, "unplaceable");
    assert!(reason.starts_with("all 1 candidate node declined: globex (node-globex): unfit:"), "{reason}");
    assert!(reason.contains("gpu=yes"), "{reason}");
}

#[test]
fn bid_timeout_decides_with_what_arrived_and_releases_late_offers() {
    let mut m = three_hosts(1);
    m.node(B).silent = true; // the best candidate never answers in time
    let t = task(1);
    m.place(t, &spec());
    assert!(m.events.is_empty());
    assert!(m.neg.is_placing(t));
    assert_eq!(m.neg.poll_timeout(), Some(Time(2000)), "now + bid_timeout");

    m.advance(999);
    assert!(m.events.is_empty(), "not before the deadline");
    m.advance(1);
    assert_eq!(m.placed_on().as_deref(), Some(A));
    assert_eq!(m.host(C).capacity().free_slots, 2);

    // B finally handles the bid and offers: the negotiation is over, so it gets a release.
    m.node(B).silent = false;
    m.deliver_held();
    assert_eq!(m.sends().last(), Some(&("release", B.to_owned())));
    assert_eq!(m.host(B).capacity().free_slots, 4);
    assert_eq!(m.events.len(), 1);
}

#[test]
fn reservation_expiry_frees_capacity_and_late_commit_is_rejected() {
    let mut m = three_hosts(1);
    // A commit that never reaches B: its reservation must not outlive the TTL.
    m.node(B).silent = true;
    let mut s = spec();
    s.constraints.orgs = vec![org("initech")];
    m.place(task(1), &s);
    // Deliver just the bid; the commit it leads to is held.
    let (to, t, attempt, bid) = m.held.remove(0);
    m.deliver(to, t, attempt, bid);
    m.pump();
    assert_eq!(m.sends().last(), Some(&("commit", B.to_owned())));
    assert_eq!(m.host(B).capacity().free_slots, 3, "reserved");
    let (_, _, _, commit) = m.held.remove(0);
    let PlaceRequest::Commit(commit) = commit else { panic!("expected the commit") };

    m.advance(5000);
    assert_eq!(m.host(B).capacity().free_slots, 4, "expired");
    let now = m.now;
    let late = m.node(B).host.handle_commit(&peer(ORIGIN), &commit, now);
    assert!(
        matches!(&late, CommitResponse::Rejected { reason } if reason.contains("unknown reservation")),
        "{late:?}"
    );
}

#[test]
fn busy_everywhere_waits_until_a_slot_frees() {
    let mut m = Mesh::new(1);
    m.add(ORIGIN, "acme", config(1)).add(A, "globex", config(1));
    m.load(ORIGIN, 1);
    m.load(A, 1);
    // The view says full, but views lag: each is asked once.
    m.place(task(1), &spec());
    let reason = "2 candidate nodes could run it but none can right now: acme (node-acme): no free capacity; \
                  globex (node-globex): no free capacity";
    assert_eq!(m.reason(), ("waiting", reason.to_owned()));
    assert_eq!(m.sends(), sends(&[("bid", ORIGIN), ("bid", A)]));
    // Both said busy and nothing newer is known of them: not asked again.
    m.log.clear();
    m.events.clear();
    m.advance(250);
    m.place(task(1), &spec());
    assert_eq!(m.reason(), ("waiting", "no node with free capacity right now (2 could run it)".to_owned()));
    assert!(m.sends().is_empty());

    assert!(m.node(A).host.finished(TaskId::new(1, 1000), Attempt::FIRST));
    m.gossip();
    m.events.clear();
    m.place(task(1), &spec());
    assert_eq!(m.placed_on().as_deref(), Some(A));
}

#[test]
fn a_host_the_stale_view_shows_full_is_asked_and_gets_the_task() {
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(1)).add(B, "initech", config(1));
    m.load(A, 1);
    m.load(B, 1);
    // B's slot freed, but the news has not reached the origin yet.
    assert!(m.node(B).host.finished(TaskId::new(1, 1000), Attempt::FIRST));
    m.place(task(1), &spec());
    assert_eq!(m.placed_on().as_deref(), Some(B));
    assert!(m.sends().contains(&("bid", A.to_string())), "at most `fanout` such probes: both here");
}

#[test]
fn busy_declines_from_stale_records_mean_waiting() {
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(1)).add(B, "initech", config(1));
    // Both filled up after gossiping their records.
    for id in [A, B] {
        let node = m.node(id);
        node.host.adopt_running(peer(ORIGIN), TaskId::new(9, 9), Attempt::FIRST, Resources::default());
    }
    m.place(task(1), &spec());
    let (kind, reason) = m.reason();
    assert_eq!(kind, "waiting");
    assert!(reason.starts_with("2 candidate nodes could run it but none can right now"), "{reason}");
    assert!(reason.contains("no free capacity"), "{reason}");
}

/// A seed whose first placement asks `first` before the others. Hosts with room are asked in an
/// order drawn per placement; tests of what follows a refusal need the refusing host first.
fn seed_asking_first(first: &str, build: impl Fn(u64) -> Mesh) -> u64 {
    seeds_asking_first(first, build).next().expect("some seed asks it first")
}

/// Every seed below 64 whose first placement asks `first` before the others.
fn seeds_asking_first(first: &str, build: impl Fn(u64) -> Mesh) -> impl Iterator<Item = u64> {
    (0..64).filter(move |&seed| {
        let mut m = build(seed);
        m.place(task(1), &spec());
        m.sends().first().is_some_and(|(k, p)| *k == "bid" && p == first)
    })
}

#[test]
fn next_batch_is_asked_when_the_first_has_no_offer() {
    let mesh = |seed| {
        let config = PlacementConfig { fanout: 1, ..PlacementConfig::default() };
        let mut m = Mesh::with_config(seed, config);
        m.add(A, "globex", self::config(4)).add(B, "initech", self::config(4));
        m.load(B, 1);
        // A looks free but is actually full.
        m.node(A).host.adopt_running(
            peer(ORIGIN),
            TaskId::new(9, 9),
            Attempt::FIRST,
            Resources { cpu_millis: 4000, ..Resources::default() },
        );
        m
    };
    let mut m = mesh(seed_asking_first(A, mesh));
    m.place(task(1), &spec());
    assert_eq!(m.sends(), sends(&[("bid", A), ("bid", B), ("commit", B)]));
    assert_eq!(m.placed_on().as_deref(), Some(B));
}

#[test]
fn a_host_that_said_busy_is_asked_last_until_its_record_changes() {
    let mesh = |seed| {
        let config = PlacementConfig { fanout: 1, ..PlacementConfig::default() };
        let mut m = Mesh::with_config(seed, config);
        m.add(A, "globex", self::config(4)).add(B, "initech", self::config(4));
        m.load(B, 1);
        // A looks free (its record is stale) but is full.
        m.fill_unseen(A);
        m
    };
    // Which host each later placement asks first, for a seed whose first placement asked A.
    let firsts = |seed| {
        let mut m = mesh(seed);
        m.place(task(1), &spec());
        assert_eq!(m.sends(), sends(&[("bid", A), ("bid", B), ("commit", B)]));
        let first = |m: &mut Mesh, t| {
            m.log.clear();
            m.place(task(t), &spec());
            m.sends()[0].1.clone()
        };
        // The same stale view: A said Busy, so B is asked first and A not at all.
        m.advance(100);
        let second = first(&mut m, 2);
        assert_eq!(m.sends(), sends(&[("bid", B), ("commit", B)]));
        // A newer record of A (whatever it says), or enough time, puts A back in the draw.
        m.node(A).record.version.version += 1;
        let third = first(&mut m, 3);
        m.node(A).record.version.version -= 1;
        m.advance(5000);
        let fourth = first(&mut m, 4);
        (second, third, fourth)
    };
    let seeds: Vec<u64> = seeds_asking_first(A, mesh).collect();
    assert!(seeds.len() > 8, "{seeds:?}");
    let runs: Vec<(String, String, String)> = seeds.iter().map(|&s| firsts(s)).collect();
    assert!(runs.iter().all(|(second, ..)| second == B));
    assert!(runs.iter().any(|(_, third, _)| third == A), "a newer record: A may be first again");
    assert!(runs.iter().any(|(.., fourth)| fourth == A), "5 s later: A may be first again");
}

#[test]
fn rounds_without_an_offer_ask_twice_as_many_hosts() {
    let config = PlacementConfig { fanout: 2, ..PlacementConfig::default() };
    let mut m = Mesh::with_config(1, config);
    let ids: Vec<String> = (1..=40).map(|i| format!("12D3KooWhost{}", "x".repeat(i))).collect();
    for id in &ids {
        m.add(id, "globex", self::config(2));
    }
    // Every host but one is full, though the view says they are all idle.
    for id in &ids {
        m.fill_unseen(id);
    }
    let free = ids.iter().find(|id| id.len() == 12 + 33).unwrap().clone();
    m.node(&free).host = Host::new(self::config(2), org("globex"), BTreeMap::new(), AcceptPolicy::AnyOrg);
    // Silent hosts hold each round's requests, so the rounds can be told apart.
    for id in &ids {
        m.node(id).silent = true;
    }
    m.place(task(1), &spec());
    let mut rounds = Vec::new();
    while m.placed_on().is_none() && !m.held.is_empty() {
        let bids = m.held.iter().filter(|(_, _, _, r)| matches!(r, PlaceRequest::Bid(_))).count();
        rounds.push(bids);
        m.deliver_held();
    }
    assert_eq!(m.placed_on().as_deref(), Some(free.as_str()));
    let asked: usize = rounds.iter().sum();
    assert_eq!(&rounds[..4], &[2, 2, 4, 8], "doubling: {rounds:?}");
    assert!(rounds.iter().all(|&r| r <= 24) && asked <= 40, "{rounds:?}");
}

#[test]
fn the_origin_is_a_candidate_like_any_other() {
    let mut m = Mesh::new(1);
    m.add(ORIGIN, "acme", config(8)).add(A, "globex", config(4)).add(B, "initech", config(4));
    m.load(A, 1);
    m.load(B, 1);
    m.place(task(1), &spec());
    assert_eq!(m.sends()[0], ("bid", ORIGIN.to_owned()));
    assert_eq!(
        m.events,
        vec![PlacementEvent::Placed {
            task: task(1),
            attempt: Attempt::FIRST,
            host: PlacedOn { peer: peer(ORIGIN), org: org("acme"), name: "node-acme".into() }
        }]
    );
    assert_eq!(m.host(ORIGIN).capacity().running_tasks, 1);
}

#[test]
fn draining_nodes_are_skipped_and_all_draining_waits() {
    let mut m = three_hosts(1);
    m.node(B).record.draining = true;
    m.place(task(1), &spec());
    assert_eq!(m.placed_on().as_deref(), Some(A));
    assert!(!m.sends().iter().any(|(_, to)| to == B));

    let mut m = Mesh::new(1);
    m.add(A, "globex", config(4));
    m.node(A).record.draining = true;
    m.place(task(1), &spec());
    assert_eq!(
        m.reason(),
        ("waiting", "no node with free capacity right now (1 could run it, 1 of them draining)".to_owned())
    );

    // Drain started after gossip: the decline is treated as temporary too.
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(4));
    m.node(A).host.set_draining(true);
    m.place(task(1), &spec());
    assert_eq!(m.reason().0, "waiting");
}

#[test]
fn failed_bid_request_counts_as_a_transient_miss() {
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(4));
    m.node(A).silent = true;
    m.place(task(1), &spec());
    m.neg.handle_request_failed(&peer(A), task(1), Attempt::FIRST, m.now);
    m.pump();
    assert_eq!(
        m.reason(),
        (
            "waiting",
            "1 candidate node could run it but none can right now: globex (node-globex): no answer"
                .to_owned()
        )
    );
    assert!(!m.neg.is_placing(task(1)));
}

#[test]
fn rejected_commit_starts_over_then_gives_up() {
    let mut m = three_hosts(1);
    m.node(B).reject_commits = 1;
    m.place(task(1), &spec());
    assert_eq!(m.placed_on().as_deref(), Some(B), "second round wins");
    assert_eq!(m.sends().iter().filter(|(k, _)| *k == "commit").count(), 2);
    for id in [A, B, C] {
        assert_eq!(
            m.host(id).capacity().free_slots + m.host(id).capacity().running_tasks,
            4,
            "{id}: nothing leaked"
        );
    }

    let mut m = three_hosts(1);
    m.node(B).reject_commits = 10;
    m.place(task(1), &spec());
    let (kind, reason) = m.reason();
    assert_eq!(kind, "waiting");
    assert!(
        reason.contains("rejected the commit: test says no; gave up after 3 commit attempts"),
        "{reason}"
    );
    assert_eq!(m.sends().iter().filter(|(k, _)| *k == "commit").count(), 3);
    assert_eq!(m.host(B).capacity().free_slots, 4, "every reservation released");
}

#[test]
fn commit_timeout_restarts_and_a_late_accept_is_taken() {
    // B goes silent after its offer: its commit goes unanswered.
    let mut m = three_hosts(1);
    m.node(B).silent = true;
    m.place(task(1), &spec());
    m.node(B).silent = false;
    let bid = m.held.remove(0);
    m.node(B).silent = true;
    m.deliver(bid.0, bid.1, bid.2, bid.3);
    m.pump();
    assert_eq!(m.held.len(), 1, "the commit is held");
    assert_eq!(m.neg.poll_timeout(), Some(Time(3000)), "now + commit_timeout");

    m.advance(2000);
    assert!(m.events.is_empty());
    assert!(m.neg.is_placing(task(1)), "started over");
    // B now answers everything it held: the commit (accepted), our release, the new bid.
    m.node(B).silent = false;
    m.deliver_held();
    assert_eq!(m.placed_on().as_deref(), Some(B));
    assert_eq!(m.events.len(), 1);
    assert_eq!(m.host(B).running().len(), 1);
    for id in [A, B, C] {
        let c = m.host(id).capacity();
        assert_eq!(c.free_slots + c.running_tasks, 4, "{id}: nothing leaked");
    }
}

#[test]
fn abort_releases_held_offers_and_late_offers() {
    let mut m = three_hosts(1);
    m.node(C).silent = true;
    let t = task(1);
    m.place(t, &spec());
    assert_eq!(m.host(A).capacity().free_slots, 2);
    m.neg.abort(t, m.now);
    m.pump();
    assert!(!m.neg.is_placing(t));
    assert_eq!(m.neg.poll_timeout(), None);
    assert_eq!(m.host(A).capacity().free_slots, 3);
    assert_eq!(m.host(B).capacity().free_slots, 4);
    m.node(C).silent = false;
    m.deliver_held();
    assert_eq!(m.host(C).capacity().free_slots, 2);
    assert!(m.events.is_empty());
}

#[test]
fn placing_again_aborts_the_previous_negotiation() {
    let mut m = three_hosts(1);
    m.node(C).silent = true;
    let t = task(1);
    m.place(t, &spec());
    m.node(C).silent = false;
    m.held.clear();
    let records = m.records();
    m.neg.place(t, Attempt(2), &spec(), &records, m.now);
    m.pump();
    assert_eq!(m.placed_on().as_deref(), Some(B));
    assert!(matches!(m.events[0], PlacementEvent::Placed { attempt: Attempt(2), .. }));
    // Attempt 1's offers were released; only attempt 2 holds anything.
    assert_eq!(m.host(A).capacity().free_slots, 3);
    assert_eq!(m.host(B).running(), vec![(peer(ORIGIN), t, Attempt(2))]);
}

#[test]
fn responses_for_unknown_or_stale_negotiations_are_ignored() {
    let mut m = three_hosts(1);
    let t = task(1);
    m.neg.handle_commit_response(&peer(A), t, Attempt::FIRST, CommitResponse::Accepted, m.now);
    m.neg.handle_request_failed(&peer(A), t, Attempt::FIRST, m.now);
    m.neg.handle_bid_response(
        &peer(A),
        t,
        Attempt::FIRST,
        crate::wire::place::BidResponse::Decline { reason: crate::wire::place::DeclineReason::Busy },
        m.now,
    );
    m.pump();
    assert!(m.log.is_empty());
    // A stray offer still gets released, so no capacity leaks.
    let offer =
        crate::wire::place::BidResponse::Offer { reservation: crate::ReservationId(7), ttl_ms: 10, score: 1 };
    m.neg.handle_bid_response(&peer(A), t, Attempt::FIRST, offer, m.now);
    m.pump();
    assert_eq!(m.sends(), sends(&[("release", A)]));
}

#[test]
fn same_seed_same_outputs_and_ties_are_spread() {
    let run = |seed: u64| {
        let mut m = Mesh::new(seed);
        m.add(A, "globex", config(4)).add(B, "initech", config(4)).add(C, "umbrella", config(4));
        let mut placed = Vec::new();
        for i in 0..6 {
            m.place(task(i), &spec());
            m.gossip();
            placed.push(m.placed_on().unwrap_or_default());
            m.events.clear();
        }
        (m.log, placed)
    };
    assert_eq!(run(7), run(7));
    // Equal nodes: which one wins the first task depends on the seed alone.
    let firsts: BTreeSet<String> = (0..16).map(|s| run(s).1[0].clone()).collect();
    assert!(firsts.len() > 1, "ties always broken the same way: {firsts:?}");
}

#[test]
fn offers_that_expire_before_the_decision_are_not_committed() {
    let mut m = Mesh::new(1);
    let short = HostConfig { reservation_ttl: Duration::from_millis(500), ..config(4) };
    m.add(A, "globex", short).add(B, "initech", config(4));
    m.load(B, 1);
    m.node(B).silent = true;
    m.place(task(1), &spec());
    // B's silence holds the round open past A's TTL.
    m.advance(1000);
    let (kind, reason) = m.reason();
    assert_eq!(kind, "waiting");
    assert!(reason.contains("globex (node-globex): its offer expired before the decision"), "{reason}");
    assert!(reason.contains("initech (node-initech): no answer"), "{reason}");
    assert!(!m.sends().iter().any(|(k, _)| *k == "commit"));
}

#[test]
fn the_order_the_view_is_listed_in_does_not_change_the_outcome() {
    let ids: Vec<String> = (1..=30).map(|i| format!("12D3KooWhost{}", "y".repeat(i))).collect();
    let mesh = |seed| {
        let mut m = Mesh::new(seed);
        for id in &ids {
            m.add(id, "globex", config(4));
        }
        // Equal hosts in pairs, so ties are everywhere.
        for (i, id) in ids.iter().enumerate() {
            m.load(id, u32::try_from(i % 3).unwrap());
        }
        m
    };
    for seed in 1..=5 {
        let (mut forward, mut backward) = (mesh(seed), mesh(seed));
        let records = forward.records();
        let mut reversed = records.clone();
        reversed.reverse();
        reversed.rotate_left(7);
        forward.neg.place(task(1), Attempt::FIRST, &spec(), &records, forward.now);
        backward.neg.place(task(1), Attempt::FIRST, &spec(), &reversed, backward.now);
        forward.pump();
        backward.pump();
        assert_eq!(forward.log, backward.log, "seed {seed}");
        assert!(forward.placed_on().is_some());
    }
    // And the seed, not the order, spreads equal hosts: different seeds pick different ones.
    let picked: BTreeSet<Option<String>> = (1..=8)
        .map(|seed| {
            let mut m = mesh(seed);
            m.place(task(1), &spec());
            m.placed_on()
        })
        .collect();
    assert!(picked.len() > 1, "{picked:?}");
}

#[test]
fn a_negotiation_keeps_only_the_best_hosts_and_then_waits() {
    let mut m = Mesh::new(3);
    // The view says all are idle; in truth every host is full.
    for id in m.add_hosts(150, 2) {
        m.fill_unseen(&id);
    }
    m.place(task(1), &spec());
    let asked: BTreeSet<String> =
        m.sends().into_iter().filter(|(k, _)| *k == "bid").map(|(_, p)| p).collect();
    assert_eq!(asked.len(), MAX_KEPT, "every kept host is asked once, and no other");
    assert!(matches!(m.events.as_slice(), [PlacementEvent::Waiting { .. }]), "{:?}", m.events);
}

#[test]
fn the_kept_hosts_are_drawn_from_those_that_look_free() {
    // 120 hosts look free (100 of them less idle), 30 look full; all are full in truth. A
    // negotiation keeps 96 of those that look free, drawn per placement, whatever their
    // idleness, and probes `fanout` of the others last.
    let kept = |seed| {
        let mut m = Mesh::new(seed);
        let ids = m.add_hosts(150, 8);
        for id in &ids[..100] {
            m.load(id, 1);
        }
        for id in &ids {
            m.fill_unseen(id);
        }
        for id in &ids[120..] {
            m.node(id).record.capacity.free_slots = 0;
        }
        m.place(task(1), &spec());
        let bids: Vec<String> = m.sends().into_iter().filter(|(k, _)| *k == "bid").map(|(_, p)| p).collect();
        (bids, ids)
    };
    let (first, ids) = kept(4);
    assert_eq!(first.len(), MAX_KEPT + PlacementConfig::default().fanout);
    let looks_free: BTreeSet<&String> = ids[..120].iter().collect();
    assert!(first[..MAX_KEPT].iter().all(|p| looks_free.contains(p)), "probes last: {first:?}");
    assert!(first[MAX_KEPT..].iter().all(|p| !looks_free.contains(p)));
    let (other, _) = kept(5);
    let a: BTreeSet<&String> = first[..MAX_KEPT].iter().collect();
    let b: BTreeSet<&String> = other[..MAX_KEPT].iter().collect();
    assert_ne!(a, b, "another placement keeps other hosts");
    assert!(a.iter().any(|p| ids[..100].contains(p)), "less idle hosts are kept too");
}

#[test]
fn busy_answers_are_forgotten_once_old_and_many() {
    let mut m = Mesh::new(5);
    let hosts = BUSY_MEMORY_PRUNE_ABOVE + 100;
    for id in m.add_hosts(hosts, 2) {
        m.fill_unseen(&id);
    }
    // Every host says `Busy`; those that did are asked last, so each placement asks new ones.
    let mut t = 0;
    while m.neg.busy_remembered() < hosts {
        t += 1;
        assert!(t < 100, "the busy memory stopped growing at {}", m.neg.busy_remembered());
        m.place(task(t), &spec());
    }
    // Within the memory, nothing is dropped, however many there are.
    m.place(task(1000), &spec());
    assert_eq!(m.neg.busy_remembered(), hosts);
    // Once they are old, the next placement prunes them: only its own answers are left.
    m.now = m.now + BUSY_MEMORY;
    let before = m.sends().iter().filter(|(k, _)| *k == "bid").count();
    m.place(task(1001), &spec());
    let asked = m.sends().iter().filter(|(k, _)| *k == "bid").count() - before;
    assert_eq!(m.neg.busy_remembered(), asked);
}

#[test]
fn hosts_with_room_take_turns_at_being_asked_first() {
    // Nine hosts the view shows with room, some busier than others, and one it shows full.
    // Ranked by the view's idleness every origin would ask the same host first; drawn per
    // placement, they share the first bids (and the best offer still wins).
    let first_asked = |seed: u64| {
        let mut m = Mesh::new(seed);
        let ids = m.add_hosts(10, 8);
        for (i, id) in ids.iter().enumerate() {
            let capacity = &mut m.node(id).record.capacity;
            capacity.free_slots = if i == 9 { 0 } else { 2 + u32::try_from(i % 4).unwrap() };
            capacity.cpu_millis_free = 2000 + 200 * u32::try_from(i).unwrap();
        }
        m.place(task(1), &spec());
        let first = m.sends().into_iter().find(|(k, _)| *k == "bid").map(|(_, p)| p).unwrap();
        (first, ids)
    };
    let (_, ids) = first_asked(0);
    let firsts: BTreeSet<String> = (0..32).map(|seed| first_asked(seed).0).collect();
    assert!(firsts.len() >= 6, "the first bid always goes to the same few hosts: {firsts:?}");
    assert!(!firsts.contains(&ids[9]), "a host the view shows full is only probed, last");
}

#[test]
fn a_task_requiring_the_sandbox_lands_only_where_it_is_given() {
    use crate::Isolation;
    // Only C, the busiest, gives the sandbox: B, the best by load, must not get the task.
    let mut m = three_hosts(1);
    m.node(C).record.isolation = Isolation::Sandbox;
    m.node(C).host.set_isolation(Isolation::Sandbox, true);
    let mut s = spec();
    s.constraints.isolation = Some(Isolation::Sandbox);
    m.place(task(1), &s);
    assert_eq!(m.placed_on().as_deref(), Some(C));
    assert!(m.sends().iter().all(|(_, to)| to == C), "only C is asked: {:?}", m.sends());

    // Requiring `none` is met by anything.
    let mut m = three_hosts(1);
    m.node(C).record.isolation = Isolation::Sandbox;
    let mut s = spec();
    s.constraints.isolation = Some(Isolation::None);
    m.place(task(1), &s);
    assert_eq!(m.placed_on().as_deref(), Some(B));

    // No node offers it: unplaceable at once, with the reason, and nobody is asked.
    let mut m = three_hosts(1);
    let mut s = spec();
    s.constraints.isolation = Some(Isolation::Sandbox);
    m.place(task(1), &s);
    assert_eq!(
        m.reason(),
        ("unplaceable", "the task requires isolation sandbox, and no known node offers it".into())
    );
    assert!(m.sends().is_empty());
}

#[test]
fn a_host_checks_the_isolation_itself_whatever_its_record_said() {
    use crate::Isolation;
    // A's record claims the sandbox (stale, or a lie told for it); its ledger knows better.
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(4));
    m.node(A).record.isolation = Isolation::Sandbox;
    let mut s = spec();
    s.constraints.isolation = Some(Isolation::Sandbox);
    m.place(task(1), &s);
    let (kind, reason) = m.reason();
    assert_eq!(kind, "unplaceable");
    assert!(reason.contains("node gives isolation none, the task requires sandbox"), "{reason}");
    assert_eq!(m.host(A).capacity().free_slots, 4);
}

#[test]
fn a_host_without_its_sandbox_runs_its_own_org_only() {
    use crate::Isolation;
    let mut m = Mesh::new(1);
    m.add(A, "globex", config(4)).add(B, "acme", config(4));
    m.load(B, 3);
    m.node(A).host.set_isolation(Isolation::None, false);
    m.node(B).host.set_isolation(Isolation::None, false);
    m.place(task(1), &spec());
    // A (globex, most idle) declines acme's task; B, of acme's own org, runs it.
    assert_eq!(m.placed_on().as_deref(), Some(B));
}

/// C is the busiest of the three (two of four slots taken, as its record says) but claims the
/// top score in every offer: its offer counts only as far as its record allows, so B, the most
/// idle, still wins.
#[test]
fn a_host_claiming_the_top_score_counts_only_as_far_as_its_record_allows() {
    for seed in 1..=8 {
        let mut m = three_hosts(seed);
        m.node(C).claims = Some(u16::MAX);
        m.place(task(1), &spec());
        assert_eq!(m.placed_on().as_deref(), Some(B), "seed {seed}: {:?}", m.sends());
    }
    let record = three_hosts(1).nodes[&peer(C)].record.clone();
    let ceiling = super::negotiator::score_ceiling(&record.capacity, &spec().resources);
    assert!(ceiling < 1000, "a host with two of four slots taken cannot score 1000: {ceiling}");
}
