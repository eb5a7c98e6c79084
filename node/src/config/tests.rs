//! Unit tests of loading, overriding and checking a configuration, hostile token files included.
//! Never reads the real environment or any file outside its own temporary directories.

use std::time::Duration;

use orgmesh_protocol::lifecycle::LeaseConfig;
use orgmesh_protocol::membership::MembershipConfig;
use orgmesh_protocol::settings::{GossipSettings, PlacementSettings};

use super::*;

/// The node ships the protocol's defaults (the protocol's own test covers the gossip and
/// placement settings' translation); a lease default changed on one side only fails here.
#[test]
fn the_default_config_is_the_protocols_defaults() {
    let config = Config::default();
    assert_eq!(config.gossip, GossipSettings::default());
    assert_eq!(config.placement, PlacementSettings::default());
    assert_eq!(config.tasks.leases(), LeaseConfig::default());
}

#[test]
fn a_gossip_fanout_of_zero_is_refused() {
    let config: Config = toml::from_str("[gossip]\nfanout = 0\n").expect("parses");
    let err = config.validate().expect_err("a mesh that never gossips");
    assert!(err.to_string().contains("gossip.fanout"), "{err}");
}

#[test]
fn the_file_reaches_the_state_machines() {
    let config: Config = toml::from_str(
        "[gossip]\ninterval_ms = 200\nfanout = 4\nsuspect_after_ms = 900\ndead_after_ms = 1300\n\
         [placement]\nfanout = 5\nbid_timeout_ms = 700\ncommit_timeout_ms = 1100\nreservation_ttl_ms = 4000\n\
         [tasks]\nlease_renew_ms = 300\nlease_ttl_ms = 1000\noverdue_grace_s = 7\n",
    )
    .expect("a valid file");
    let m: MembershipConfig = config.gossip.to_config();
    assert_eq!(
        (m.gossip_interval, m.fanout, m.suspect_after, m.dead_after),
        (Duration::from_millis(200), 4, Duration::from_millis(900), Duration::from_millis(1300))
    );
    let p = config.placement.to_config();
    assert_eq!(
        (p.fanout, p.bid_timeout, p.commit_timeout),
        (5, Duration::from_millis(700), Duration::from_millis(1100))
    );
    assert_eq!(config.placement.reservation_ttl(), Duration::from_secs(4));
    let l = config.tasks.leases();
    assert_eq!(
        (l.renew_every, l.ttl, l.stall_after, l.overdue_grace),
        (
            Duration::from_millis(300),
            Duration::from_secs(1),
            Duration::from_millis(500),
            Duration::from_secs(7)
        )
    );
}

#[test]
fn defaults_work_without_a_file() {
    let c = Config::load(None, |_| None).unwrap();
    assert_eq!(c.api.addr.to_string(), "127.0.0.1:7070");
    assert_eq!(c.data_dir(), PathBuf::from("orgmesh-data"));
}

#[test]
fn the_sandbox_network_is_none_outbound_or_host_from_file_or_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orgmesh.toml");
    std::fs::write(&path, "[executor]\nnetwork = \"outbound\"\n").unwrap();
    let c = Config::load(Some(&path), |_| None).unwrap();
    assert_eq!(c.executor.network, crate::sandbox::NetworkMode::Outbound);
    assert_eq!(c.executor.slirp4netns, PathBuf::from("/usr/bin/slirp4netns"));
    let env = |v: &'static str| move |k: &str| (k == "ORGMESH_SANDBOX_NETWORK").then(|| v.to_string());
    let c = Config::load(Some(&path), env("host")).unwrap();
    assert_eq!(c.executor.network, crate::sandbox::NetworkMode::Host);
    let c = Config::load(None, env("outbound")).unwrap();
    assert_eq!(c.executor.network, crate::sandbox::NetworkMode::Outbound);
    assert!(Config::load(None, env("bridge")).is_err());
    std::fs::write(&path, "[executor]\nnetwork = \"everything\"\n").unwrap();
    assert!(Config::load(Some(&path), |_| None).is_err());
}

#[test]
fn env_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orgmesh.toml");
    std::fs::write(&path, "[node]\norg = \"acme\"\ndata_dir = \"d\"\n[capacity]\nslots = 2\n").unwrap();
    let env = |k: &str| match k {
        "ORGMESH_SLOTS" => Some("7".to_string()),
        "ORGMESH_LABELS" => Some("zone=b,gpu=no".to_string()),
        _ => None,
    };
    let c = Config::load(Some(&path), env).unwrap();
    assert_eq!(c.node.org, "acme");
    assert_eq!(c.capacity.slots, 7);
    assert_eq!(c.node.labels.get("zone").map(String::as_str), Some("b"));
    assert_eq!(c.data_dir(), dir.path().join("d"));
}

#[test]
fn bad_values_are_named() {
    let err = Config::parse("[node]\norgg = \"x\"").unwrap_err();
    assert!(err.contains("orgg"), "{err}");
    let e = Config::load(None, |k| (k == "ORGMESH_ORG").then(|| "Bad Org".to_string())).unwrap_err();
    assert!(e.to_string().contains("node.org"), "{e}");
    // Numbers are parsed as the setting's own type: out of range is an error, not a clamp.
    let e = Config::load(None, |k| (k == "ORGMESH_API_RATE_PER_S").then(|| "5000000000".into())).unwrap_err();
    assert!(e.to_string().contains("ORGMESH_API_RATE_PER_S"), "{e}");
    let c = Config::load(None, |k| (k == "ORGMESH_API_BURST").then(|| "17".into())).unwrap();
    assert_eq!(c.api.burst, 17);
}

#[test]
fn toml_round_trip() {
    let c = Config::default();
    let text = c.to_toml();
    let back = Config::parse(&text).unwrap();
    assert_eq!(back.p2p.listen, c.p2p.listen);
    assert!(back.api.open_on_loopback);
    assert!(text.contains("# Tokenless requests get every scope"), "{text}");
}

#[test]
fn api_tokens_and_tls_are_checked() {
    let hash = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
    let ok = format!(
        "[api]\nopen_on_loopback = false\n[[api.tokens]]\nname = \"ci\"\nscopes = [\"submit\"]\nsha256 = \"{hash}\"\n"
    );
    let c = Config::parse(&ok).unwrap();
    let tokens = c.api_tokens().unwrap();
    assert_eq!(tokens[0].name, "ci");
    assert_eq!(tokens[0].scopes, vec![orgmesh_api::Scope::Submit]);
    assert!(!c.api.open_on_loopback);
    let bad_scope = ok.replace("\"submit\"", "\"root\"");
    assert!(Config::parse(&bad_scope).unwrap().validate().is_err());
    let bad_hash = ok.replace(hash, "abc");
    assert!(Config::parse(&bad_hash).unwrap().validate().is_err());

    let files = Config::parse("[api]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
    assert!(matches!(files.api_tls().unwrap(), ApiTls::Files { .. }));
    assert!(Config::parse("[api]\ntls_cert = \"c.pem\"\n").unwrap().validate().is_err());
    let ts = Config::parse("[api]\ntls = \"tailscale\"\n[discovery.tailscale]\nsocket = \"/s\"\n").unwrap();
    assert_eq!(ts.api_tls().unwrap(), ApiTls::Tailscale { socket: PathBuf::from("/s"), domain: None });
    assert!(Config::parse("[api]\ntls = \"acme\"\n").unwrap().validate().is_err());
}

#[test]
fn accept_from_orgs_without_an_attestation_are_listed() {
    let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let text = format!(
        "[policy]\naccept_from = [\"acme\", \"globex\", \"initech\", \"{peer}\"]\n\
         [trust.orgs]\nacme = [\"{peer}\"]\ninitech = []\n"
    );
    assert_eq!(Config::parse(&text).unwrap().unattested_accept_from(), vec!["globex"]);
    assert!(Config::default().unattested_accept_from().is_empty());
}

#[test]
fn security_runs_every_start_check() {
    assert!(Config::default().security().is_ok(), "the defaults start");
    let public_api = Config::parse("[api]\naddr = \"0.0.0.0:7070\"\n").unwrap();
    assert!(matches!(public_api.security(), Err(Refused::Api(_))));
    let open_p2p = Config::parse("[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/7000\"]\n").unwrap();
    let e = open_p2p.security().unwrap_err();
    assert!(matches!(e, Refused::OpenP2p(_)) && e.to_string().contains("ORGMESH_MESH_KEY_FILE"), "{e}");
    let bad_token = "[[api.tokens]]\nname = \"ci\"\nscopes = [\"root\"]\nsha256 = \"00\"\n";
    assert!(matches!(Config::parse(bad_token).unwrap().security(), Err(Refused::Config(_))));
}

#[test]
fn a_p2p_listener_beyond_loopback_needs_a_trust_source() {
    let load = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(None, |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
    };
    assert_eq!(load(&[]).p2p_exposure_problem(), None, "the default listens on loopback");
    let open = load(&[("ORGMESH_P2P_LISTEN", "/ip4/0.0.0.0/tcp/7000")]);
    let problem = open.p2p_exposure_problem().unwrap();
    assert!(
        problem.contains("/ip4/0.0.0.0/tcp/7000") && problem.contains("ORGMESH_MESH_KEY_FILE"),
        "{problem}"
    );
    for addr in ["/ip6/::/tcp/7000", "/ip4/10.0.0.1/tcp/7000", "/dns4/node.example/tcp/7000"] {
        assert!(load(&[("ORGMESH_P2P_LISTEN", addr)]).p2p_exposure_problem().is_some(), "{addr}");
    }
    for addr in ["/ip4/127.0.0.3/tcp/7000", "/ip6/::1/tcp/7000"] {
        assert_eq!(load(&[("ORGMESH_P2P_LISTEN", addr)]).p2p_exposure_problem(), None, "{addr}");
    }
    let keyed = load(&[("ORGMESH_P2P_LISTEN", "/ip4/0.0.0.0/tcp/7000"), ("ORGMESH_MESH_KEY_FILE", "/k")]);
    assert_eq!(keyed.p2p_exposure_problem(), None);
    let mut trusted = open.clone();
    trusted.trust.trusted_peers = vec!["12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()];
    assert_eq!(trusted.p2p_exposure_problem(), None);
    let mut tailnet = open.clone();
    tailnet.discovery.tailscale = Some(TailscaleSection::default());
    assert_eq!(tailnet.p2p_exposure_problem(), None);
    tailnet.discovery.tailscale =
        Some(TailscaleSection { verify_inbound: false, ..TailscaleSection::default() });
    assert!(tailnet.p2p_exposure_problem().is_some(), "a tailnet that checks nobody is no trust source");
}

#[test]
fn api_tokens_come_from_a_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "a".repeat(64);
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, format!("[[tokens]]\nname = \"ops\"\nscopes = [\"admin\"]\nsha256 = \"{hash}\"\n"))
        .unwrap();
    let vars = [("ORGMESH_API_TOKENS_FILE".to_string(), file.display().to_string())];
    let env = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let config = Config::load(None, env).unwrap();
    assert_eq!(config.api.tokens.len(), 1);
    assert_eq!(config.api_tokens().unwrap().len(), 1);

    std::fs::write(&file, "[[tokens]]\nname = \"ops\"\nscopes = [\"root\"]\nsha256 = \"xyz\"\n").unwrap();
    assert!(matches!(Config::load(None, env), Err(ConfigError::Invalid { .. })), "bad entries are refused");
    // A bad entry is named by its file and position; so is a file with no entries at all.
    let good = format!("[[tokens]]\nname = \"ops\"\nscopes = [\"admin\"]\nsha256 = \"{hash}\"\n");
    std::fs::write(
        &file,
        format!("{good}[[tokens]]\nname = \"ci\"\nscopes = [\"submit\"]\nsha256 = \"{}\"\n", "g".repeat(64)),
    )
    .unwrap();
    let err = Config::load(None, env).unwrap_err().to_string();
    assert!(err.contains("tokens.toml") && err.contains("entry 2") && err.contains("\"ci\""), "{err}");
    for empty in ["", "# tokens go here\n", "tokens = []\n"] {
        std::fs::write(&file, empty).unwrap();
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("tokens.toml") && err.contains("no [[tokens]]"), "{empty:?}: {err}");
    }
    // Hostile shapes: an unknown field, a line format, a token in the clear.
    for bad in [
        format!("{good}admin = true\n"),
        format!("ops:admin:{hash}\n"),
        "[[tokens]]\nname = \"ops\"\nscopes = [\"admin\"]\ntoken = \"om_secret\"\n".to_string(),
        "[[tokens]]\nname = \"ops\"\nscopes = \"om_secret\"\nsha256 = \"\"\n".to_string(),
        "om_secret\n".to_string(),
    ] {
        std::fs::write(&file, &bad).unwrap();
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("tokens.toml"), "{bad:?}: {err}");
        assert!(!err.contains("om_secret"), "a secret is not echoed: {err}");
        assert!(err.contains("line "), "{err}");
    }
    std::fs::write(&file, "not toml [").unwrap();
    let err = Config::load(None, env).unwrap_err().to_string();
    assert!(err.contains("tokens.toml"), "{err}");
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(Config::load(None, env), Err(ConfigError::Read { .. })));
}
