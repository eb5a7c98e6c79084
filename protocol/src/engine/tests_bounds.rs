//! Tests of the engine's bounds on peer-controlled work: a renewal naming thousands of ended
//! attempts costs a bounded number of store reads; a member evicted from a full membership table
//! is forgotten from the redial list. Tests only.

use std::cell::Cell;
use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::ids::Org;
use crate::membership::MembershipConfig;
use crate::placement::{DEFAULT_RESERVATION_TTL, HostConfig, PlacementConfig};
use crate::record::{AcceptPolicy, InsecureTestKeyring, NodeRecord, RecordVersion, SignedRecord};
use crate::wire::gossip::{GossipRequest, GossipUpdate};
use crate::wire::limits::MAX_RENEW;

fn peer(tag: &str) -> PeerId {
    PeerId::new(format!("12D3KooW{tag}")).unwrap()
}

fn record(peer: &PeerId) -> NodeRecord {
    NodeRecord {
        peer_id: peer.clone(),
        org: Org::new("acme").unwrap(),
        name: "n".into(),
        addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
        labels: BTreeMap::new(),
        capacity: Default::default(),
        accepts: AcceptPolicy::AnyOrg,
        draining: false,
        isolation: Default::default(),
        software: "test".into(),
        version: RecordVersion { generation: 1, version: 1 },
    }
}

fn engine(max_members: usize) -> Engine<ChaCha8Rng> {
    let local = peer("home");
    let host_config = HostConfig {
        cpu_millis: 4000,
        memory_mb: 4096,
        gpus: 0,
        slots: 4,
        reservation_ttl: DEFAULT_RESERVATION_TTL,
    };
    let org = Org::new("acme").unwrap();
    let host = Host::new(host_config, org.clone(), BTreeMap::new(), AcceptPolicy::AnyOrg);
    let config = MembershipConfig { max_members, ..MembershipConfig::default() };
    let keyring = Box::new(InsecureTestKeyring::new(local.clone()));
    let now = Now { time: Time(0), wall: Timestamp(1) };
    let membership = Membership::new(record(&local), keyring, config, ChaCha8Rng::seed_from_u64(1), now.time);
    let engine_keyring = Box::new(InsecureTestKeyring::new(local.clone()));
    let negotiator = Negotiator::new(local, org, PlacementConfig::default(), ChaCha8Rng::seed_from_u64(2));
    let parts = EngineParts {
        membership,
        negotiator,
        host,
        leases: LeaseConfig::default(),
        life: LifeConfig::default(),
        rng: ChaCha8Rng::seed_from_u64(3),
        keyring: engine_keyring,
    };
    Engine::new(parts, Vec::new(), Vec::new(), now)
}

/// An archive that counts its reads and knows every task as ended elsewhere.
struct Counting(Cell<usize>);

impl Archive for Counting {
    fn ended(&self, _task: TaskId) -> Lookup {
        self.0.set(self.0.get() + 1);
        Lookup::Ended { attempt: Attempt(1), host: None }
    }
}

fn outputs(e: &mut Engine<ChaCha8Rng>) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

#[test]
fn a_renewal_naming_thousands_of_ended_attempts_reads_the_store_a_bounded_number_of_times() {
    let mut e = engine(16);
    outputs(&mut e);
    let attempts: Vec<(TaskId, Attempt)> =
        (0..MAX_RENEW as u128).map(|i| (TaskId::new(1, i), Attempt(1))).collect();
    let archive = Counting(Cell::new(0));
    let request = Request::Task(TaskRequest::Renew { attempts });
    let now = Now { time: Time(10), wall: Timestamp(11) };
    e.handle(Input::Request { from: peer("rogue"), request, reply: ReplyId(7) }, now, &archive);
    assert!(archive.0.get() <= origin::MAX_ARCHIVE_LOOKUPS, "{} store reads", archive.0.get());
    let answer = outputs(&mut e).into_iter().find_map(|o| match o {
        Output::Respond {
            reply: ReplyId(7),
            response: Some(Response::Task(TaskResponse::Leases { stop, cancel })),
        } => Some((stop, cancel)),
        _ => None,
    });
    let (stop, cancel) = answer.expect("the renewal is answered");
    assert_eq!(stop.len(), MAX_RENEW, "every attempt it named is told to stop, looked up or not");
    assert!(cancel.is_empty());
    assert_eq!(e.counters().unlooked_renewals, (MAX_RENEW - origin::MAX_ARCHIVE_LOOKUPS) as u64);
}

#[test]
fn a_member_evicted_from_a_full_table_is_forgotten_from_the_redial_list() {
    let mut e = engine(3);
    let relay = peer("proxy");
    let signed = |p: &PeerId| SignedRecord::sign(record(p), &InsecureTestKeyring::new(p.clone()));
    let push = |updates: Vec<GossipUpdate>| Request::Gossip(GossipRequest::Push { updates });
    let relayed: Vec<GossipUpdate> = ["aa", "bb", "cc"]
        .iter()
        .map(|t| GossipUpdate { record: signed(&peer(t)).into(), heartbeat: 1 })
        .collect();
    let now = Now { time: Time(1), wall: Timestamp(2) };
    e.handle(
        Input::Request { from: relay.clone(), request: push(relayed), reply: ReplyId(1) },
        now,
        &NoArchive,
    );
    let remembered = |outs: &[Output]| {
        outs.iter().filter(|o| matches!(o, Output::Persist { write: Write::Peer(_), .. })).count()
    };
    assert_eq!(remembered(&outputs(&mut e)), 3);
    // They fall silent long enough to be dead; then a peer speaks to us itself.
    let later = Now { time: Time(60_000), wall: Timestamp(60_001) };
    e.handle_timeout(later, &NoArchive);
    outputs(&mut e);
    let direct = peer("dd");
    let own = vec![GossipUpdate { record: signed(&direct).into(), heartbeat: 1 }];
    e.handle(
        Input::Request { from: direct.clone(), request: push(own), reply: ReplyId(2) },
        later,
        &NoArchive,
    );
    let outs = outputs(&mut e);
    let forgotten: Vec<&PeerId> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Persist { write: Write::ForgetPeer(p), .. } => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(forgotten.len(), 1, "{outs:?}");
    assert_ne!(forgotten[0], &direct);
    assert!(e.membership().peer(&direct).is_some());
    assert_eq!(e.membership().peers().len(), 3);
    assert_eq!(e.counters().members_evicted, 1);
}
