//! The bodies of the fuzz targets in `fuzz/` (libFuzzer through `cargo fuzz`), kept here on
//! stable Rust so that the test suite runs them too (`tests/tests/fuzz_smoke.rs`): each takes
//! arbitrary bytes and must never panic; a panic is a bug found. Also the seed inputs: real,
//! valid encodings of every message, spec and config shape.

use std::collections::BTreeMap;
use std::fmt::Debug;

use orgmesh_protocol::record::{NodeRecord, RecordVersion, SignedRecord};
use orgmesh_protocol::wire::gossip::{DigestEntry, GossipRequest, GossipResponse, GossipUpdate};
use orgmesh_protocol::wire::place::{BidRequest, CommitRequest, PlaceRequest};
use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::wire::{self, limits};
use orgmesh_protocol::{Attempt, Org, PeerId, ReservationId, TaskId, TaskSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The fuzz targets, by name (the file names in `fuzz/fuzz_targets/`).
pub const TARGETS: [&str; 5] = ["wire_gossip", "wire_place", "wire_task", "task_spec_json", "config_toml"];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "wire_gossip" => wire_gossip(data),
        "wire_place" => wire_place(data),
        "wire_task" => wire_task(data),
        "task_spec_json" => task_spec_json(data),
        "config_toml" => config_toml(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Whatever decodes must re-encode within the limit and decode to the same message.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8], limit: usize) {
    if let Ok(msg) = wire::decode::<T>(data, limit) {
        let again = match wire::encode(&msg, limit) {
            Ok(bytes) => bytes,
            Err(e) => panic!("decoded {msg:?} does not re-encode: {e}"),
        };
        assert_eq!(wire::decode::<T>(&again, limit).ok().as_ref(), Some(&msg));
    }
}

/// `/orgmesh/gossip/1` frames, both directions.
pub fn wire_gossip(data: &[u8]) {
    round_trip::<GossipRequest>(data, limits::GOSSIP);
    round_trip::<GossipResponse>(data, limits::GOSSIP);
}

/// `/orgmesh/place/1` frames, both directions.
pub fn wire_place(data: &[u8]) {
    round_trip::<PlaceRequest>(data, limits::PLACE);
    round_trip::<orgmesh_protocol::wire::place::PlaceResponse>(data, limits::PLACE);
}

/// `/orgmesh/task/1` frames, both directions.
pub fn wire_task(data: &[u8]) {
    round_trip::<TaskRequest>(data, limits::TASK);
    round_trip::<TaskResponse>(data, limits::TASK);
}

/// A task spec as `POST /v1/tasks` receives it: JSON, then validation. A spec that validates
/// must survive a JSON round trip and fit the wire's spec limit.
pub fn task_spec_json(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<TaskSpec>(data) else { return };
    if spec.validate().is_ok() {
        let text = serde_json::to_vec(&spec).expect("a parsed spec serializes");
        assert_eq!(serde_json::from_slice::<TaskSpec>(&text).ok().as_ref(), Some(&spec));
        let bytes = postcard::to_allocvec(&spec).expect("a valid spec encodes");
        assert!(bytes.len() <= orgmesh_protocol::task::MAX_SPEC_BYTES);
    }
}

/// `orgmesh.toml` as `up` reads it: TOML, then validation.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = orgmesh_node::config::Config::parse_and_validate(text);
}

fn peer(n: u8) -> PeerId {
    PeerId::new(format!("12D3KooWSeedPeer{n}")).expect("valid")
}

fn record() -> SignedRecord {
    let record = NodeRecord {
        peer_id: peer(1),
        org: Org::new("acme").expect("valid"),
        name: "acme".into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/7000".into()],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        capacity: Default::default(),
        accepts: Default::default(),
        draining: false,
        isolation: Default::default(),
        software: "orgmesh/0.1.0".into(),
        version: RecordVersion { generation: 3, version: 9 },
    };
    SignedRecord { record, signature: vec![7; 64] }
}

fn spec() -> TaskSpec {
    let mut spec = TaskSpec::new(vec!["sh".into(), "-c".into(), "echo hi".into()]);
    spec.env.insert("KEY".into(), "value".into());
    spec.constraints.orgs.push(Org::new("globex").expect("valid"));
    spec
}

/// Valid inputs of target `name`, to start fuzzing from.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let task = TaskId::new(1_700_000_000_000, 42);
    let enc = |msg: &dyn erased::Encode, limit| msg.encode(limit);
    match name {
        "wire_gossip" => {
            let digest = vec![DigestEntry { peer: peer(1), version: record().record.version, heartbeat: 5 }];
            let updates = vec![GossipUpdate { record: record().into(), heartbeat: 5 }];
            vec![
                enc(&GossipRequest::Syn { digest: digest.clone() }, limits::GOSSIP),
                enc(&GossipRequest::Push { updates: updates.clone() }, limits::GOSSIP),
                enc(&GossipResponse::Ack { updates, heartbeats: digest, wanted: vec![peer(2)] }, limits::GOSSIP),
                enc(&GossipResponse::Done, limits::GOSSIP),
            ]
        }
        "wire_place" => vec![
            enc(
                &PlaceRequest::Bid(BidRequest {
                    task,
                    attempt: Attempt(1),
                    origin_org: Org::new("acme").expect("valid"),
                    resources: spec().resources,
                    constraints: spec().constraints,
                }),
                limits::PLACE,
            ),
            enc(
                &PlaceRequest::Commit(CommitRequest {
                    task,
                    attempt: Attempt(1),
                    reservation: ReservationId(77),
                    origin_org: Org::new("acme").expect("valid"),
                    spec: spec(),
                }),
                limits::PLACE,
            ),
            enc(&PlaceRequest::Release { reservation: ReservationId(77) }, limits::PLACE),
        ],
        "wire_task" => vec![
            enc(&TaskRequest::Started { task, attempt: Attempt(2) }, limits::TASK),
            enc(&TaskRequest::Log { task, attempt: Attempt(2), offset: 10, data: b"hello\n".to_vec() }, limits::TASK),
            enc(
                &TaskRequest::Finished {
                    task,
                    attempt: Attempt(2),
                    outcome: Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len: 16 },
                },
                limits::TASK,
            ),
            enc(&TaskRequest::Renew { attempts: vec![(task, Attempt(2))] }, limits::TASK),
            enc(&TaskResponse::Leases { stop: vec![(task, Attempt(1))], cancel: vec![] }, limits::TASK),
            enc(&TaskResponse::LogGap { have: 3 }, limits::TASK),
        ],
        "task_spec_json" => vec![
            br#"{"command":["echo","hi"]}"#.to_vec(),
            serde_json::to_vec(&spec()).expect("serializes"),
            br#"{"command":["sh","-c","x"],"resources":{"cpu_millis":100,"memory_mb":64,"gpus":0},"constraints":{"orgs":["a"],"node_labels":{"zone":"b"}},"timeout_s":60,"max_attempts":3,"queue_timeout_s":600,"priority":0,"replace_after_s":60}"#.to_vec(),
        ],
        "config_toml" => vec![
            b"[node]\norg = \"acme\"\n[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/7000\"]\n".to_vec(),
            b"[node]\norg = \"acme\"\nlabels = { zone = \"a\" }\n[api]\naddr = \"127.0.0.1:7070\"\n[capacity]\nslots = 4\n[policy]\naccept_from = [\"globex\"]\n[gossip]\ninterval_ms = 200\nsuspect_after_ms = 1000\ndead_after_ms = 2000\n[tasks]\nlease_renew_ms = 500\nlease_ttl_ms = 2000\n".to_vec(),
        ],
        other => panic!("no fuzz target {other}"),
    }
}

mod erased {
    use serde::Serialize;

    /// Encodes any wire message in its envelope (object-safe, so seeds of several types mix).
    pub(super) trait Encode {
        fn encode(&self, limit: usize) -> Vec<u8>;
    }

    impl<T: Serialize> Encode for T {
        fn encode(&self, limit: usize) -> Vec<u8> {
            orgmesh_protocol::wire::encode(self, limit).expect("a seed message encodes")
        }
    }
}
