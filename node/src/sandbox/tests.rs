//! The sandbox against hostile commands, on this host's real namespaces and cgroups. These tests
//! need root, bubblewrap, setpriv and slirp4netns (tests/run-all.sh installs them); without them
//! they fail rather than pass by skipping.

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique name per test, so tests running at once never share a cgroup directory.
fn unique(what: &str) -> String {
    format!("test-{}-{what}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

struct Fixture {
    sandbox: Arc<Sandbox>,
    dir: tempfile::TempDir,
}

/// A sandbox whose visible system also holds a scratch directory with a `secret` file in it
/// that the policy hides, as the node hides its keys.
fn fixture(tweak: impl FnOnce(&mut Policy)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "the node's key").unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/store.redb"), "the node's store").unwrap();
    std::fs::write(dir.path().join("public"), "visible").unwrap();
    // World-readable, all of it: only the sandbox's hiding may keep the attempt out.
    for path in ["", "secret", "data", "data/store.redb", "public"] {
        let mode = if path.is_empty() || path == "data" { 0o755 } else { 0o644 };
        std::fs::set_permissions(dir.path().join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let mut read_only: Vec<PathBuf> = DEFAULT_READ_ONLY.iter().map(PathBuf::from).collect();
    read_only.push(dir.path().to_path_buf());
    let mut policy = Policy {
        node: unique("node"),
        network: NetworkMode::None,
        uid_base: 210_000,
        uid_count: 1000,
        pids_max: 64,
        work_dir_max_mb: 16,
        read_only,
        hidden: vec![dir.path().join("secret"), dir.path().join("data")],
        bwrap: "/usr/bin/bwrap".into(),
        setpriv: "/usr/bin/setpriv".into(),
        slirp4netns: "/usr/bin/slirp4netns".into(),
    };
    tweak(&mut policy);
    let sandbox =
        Sandbox::probe(policy).unwrap_or_else(|e| panic!("the sandbox must work on this host: {e}"));
    Fixture { sandbox, dir }
}

struct Ran {
    out: String,
    status: std::process::ExitStatus,
    oom: bool,
    /// The attempt's slirp4netns while it ran (network `outbound`).
    slirp4netns: Option<u32>,
}

fn run(f: &Fixture, limits: Limits, script: &str) -> Ran {
    let work = f.dir.path().join(unique("work"));
    let mut confined = f
        .sandbox
        .prepare(
            &unique("attempt"),
            &limits,
            &work,
            &["sh".into(), "-c".into(), script.into()],
            &[("PATH".into(), "/usr/bin:/bin".into())],
        )
        .unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = confined.command.spawn().unwrap();
    confined.start_network().unwrap_or_else(|e| panic!("the attempt's network: {e}"));
    let slirp4netns = confined.slirp4netns_pid();
    let out = child.wait_with_output().unwrap();
    let oom = confined.oom_killed();
    confined.release();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ran { out: text, status: out.status, oom, slirp4netns }
}

fn limits() -> Limits {
    Limits { memory_bytes: 64 << 20, pids_max: 64, cpu_millis: 0 }
}

#[test]
fn runs_as_an_unprivileged_uid_of_its_own_with_no_capabilities() {
    let f = fixture(|_| {});
    let ran = run(
        &f,
        limits(),
        "id -u; id -g; id -G; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; grep NoNewPrivs /proc/self/status",
    );
    let lines: Vec<&str> = ran.out.lines().collect();
    let uid: u32 = lines[0].parse().unwrap();
    assert!((210_000..211_000).contains(&uid), "{}", ran.out);
    assert_eq!(lines[1], lines[0], "gid is the uid's own: {}", ran.out);
    assert_eq!(lines[2], lines[0], "no supplementary groups: {}", ran.out);
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        let line = lines.iter().find(|l| l.starts_with(cap)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{cap} not empty: {}", ran.out);
    }
    assert!(ran.out.contains("NoNewPrivs:\t1"), "{}", ran.out);
}

#[test]
fn hidden_files_and_the_rest_of_the_host_are_not_visible() {
    let f = fixture(|_| {});
    let d = f.dir.path().display();
    let script = format!(
        "cat {d}/public; echo; cat {d}/secret; echo; ls {d}/data; cat {d}/data/store.redb; \
         cat ../secret ../../secret; ls /root /home /var/lib 2>&1; ls /tmp | wc -l; echo end"
    );
    let ran = run(&f, limits(), &script);
    assert!(ran.out.starts_with("visible"), "{}", ran.out);
    assert!(!ran.out.contains("the node's key"), "secret readable: {}", ran.out);
    assert!(!ran.out.contains("the node's store"), "store readable: {}", ran.out);
    assert!(!ran.out.lines().any(|l| l.trim() == "store.redb"), "store listed: {}", ran.out);
    assert!(ran.out.contains("end"), "{}", ran.out);
}

#[test]
fn the_network_is_loopback_only_unless_the_host_opts_in() {
    let f = fixture(|_| {});
    // /proc/net/dev lists the interfaces of the reader's network namespace: two header lines,
    // then one line per interface.
    let interfaces = |text: &str| -> Vec<String> {
        text.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_string()).collect()
    };
    let ran = run(&f, limits(), "cat /proc/net/dev");
    assert_eq!(interfaces(&ran.out), vec!["lo".to_string()], "{}", ran.out);
    let f = fixture(|p| p.network = NetworkMode::Host);
    let ran = run(&f, limits(), "cat /proc/net/dev");
    let host = interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(interfaces(&ran.out), host, "{}", ran.out);
}

#[test]
fn kill_minus_one_and_proc_reach_only_the_attempt() {
    let f = fixture(|_| {});
    let mut outside = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let ran = run(&f, limits(), "kill -9 -1; ls /proc | grep -c '^[0-9]'; echo survived");
    assert!(ran.out.contains("survived"), "{}", ran.out);
    let visible: u32 = ran.out.lines().next().unwrap().trim().parse().unwrap();
    assert!(visible <= 4, "sees {visible} processes: {}", ran.out);
    assert!(outside.try_wait().unwrap().is_none(), "a process outside the sandbox was killed");
    outside.kill().unwrap();
    let _ = outside.wait();
}

#[test]
fn memory_over_the_limit_is_an_oom_kill() {
    let f = fixture(|_| {});
    let limits = Limits { memory_bytes: 32 << 20, ..limits() };
    // The shell keeps the whole substitution in memory: 200 MB against a 32 MB limit.
    let ran = run(&f, limits, "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}");
    assert!(!ran.status.success(), "{}", ran.out);
    assert!(ran.oom, "the cgroup should report the OOM kill: {}", ran.out);
}

#[test]
fn process_count_is_capped() {
    let f = fixture(|_| {});
    let limits = Limits { pids_max: 20, ..limits() };
    let work = f.dir.path().join(unique("work"));
    let script = "for i in $(seq 3000); do sleep 30 & done; echo spawned all";
    let mut confined = f
        .sandbox
        .prepare(&unique("attempt"), &limits, &work, &["sh".into(), "-c".into(), script.into()], &[])
        .unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = confined.command.output().unwrap();
    let cgroup = confined.cgroup().unwrap();
    let peak = cgroup.peak_pids();
    let emptied = confined.kill_all();
    confined.release();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The shell gives up at the first fork the limit refuses.
    assert!(text.contains("fork") && !text.contains("spawned all"), "{text}");
    if let Some(peak) = peak {
        assert!(peak <= 20, "{peak} processes at once");
    }
    assert!(emptied, "processes outlived the attempt");
}

#[test]
fn the_work_dir_is_capped() {
    let f = fixture(|p| p.work_dir_max_mb = 4);
    let ran = run(&f, limits(), "head -c 20000000 /dev/zero > big; du -k big | cut -f1");
    assert!(ran.out.contains("No space left"), "{}", ran.out);
    let kib: u64 = ran.out.lines().next().unwrap().trim().parse().unwrap();
    assert!(kib <= 4 * 1024, "{kib} KiB written: {}", ran.out);
}

#[test]
fn what_escaped_with_setsid_dies_with_the_attempt() {
    let f = fixture(|_| {});
    let script = "setsid sh -c 'sleep 300 & sleep 300 &' </dev/null >/dev/null 2>&1; echo left; exit 0";
    let started = Instant::now();
    let ran = run(&f, limits(), script);
    // The attempt's PID namespace ends with its first process, and the kernel kills the rest.
    assert!(ran.out.contains("left") && started.elapsed() < Duration::from_secs(20), "{}", ran.out);
}

#[test]
fn kill_all_finds_what_escaped_with_setsid_and_double_forks() {
    let f = fixture(|_| {});
    let work = f.dir.path().join(unique("work"));
    let script = "setsid sh -c 'sleep 300 & sleep 300 &' </dev/null >/dev/null 2>&1; sleep 300";
    let mut confined = f
        .sandbox
        .prepare(&unique("attempt"), &limits(), &work, &["sh".into(), "-c".into(), script.into()], &[])
        .unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = confined.command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while confined.cgroup().unwrap().pids().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(confined.cgroup().unwrap().pids().len() >= 4, "{:?}", confined.cgroup().unwrap().pids());
    assert!(confined.kill_all());
    assert!(confined.cgroup().unwrap().pids().is_empty());
    let _ = child.wait();
    confined.release();
}

#[test]
fn leftovers_of_a_crashed_node_are_reaped() {
    let f = fixture(|_| {});
    let work_root = f.dir.path().join("work-root");
    let work = work_root.join("t-1");
    let mut confined = f
        .sandbox
        .prepare(&unique("attempt"), &limits(), &work, &["sleep".into(), "300".into()], &[])
        .unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let child = confined.command.spawn().unwrap();
    let pids = confined.cgroup().unwrap().pids();
    assert!(!pids.is_empty());
    // The node dies without tearing down: nothing of `confined` runs.
    std::mem::forget(confined);
    std::mem::forget(child);
    let again = Sandbox::probe(f.sandbox.policy().clone()).unwrap();
    assert!(again.reap_leftovers(&work_root) >= 1);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid), "pid {pid} still runs");
    }
    assert!(again.hierarchy.leftovers().is_empty());
    assert!(!work.exists(), "the work dir is unmounted and removed");
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

#[test]
fn honest_work_runs_with_the_usual_tools() {
    let f = fixture(|_| {});
    let mut script = String::from(
        "echo hello > f && cat f && wc -c < f && sort -r f | head -1 && ls -a . && touch /tmp/x && echo tmp-ok",
    );
    if Path::new("/usr/bin/python3").exists() {
        script.push_str(" && /usr/bin/python3 -c 'print(6*7)'");
    }
    let ran = run(&f, limits(), &script);
    assert!(ran.status.success(), "{}", ran.out);
    assert!(ran.out.starts_with("hello\n6\nhello\n"), "{}", ran.out);
    assert!(ran.out.contains("tmp-ok"), "{}", ran.out);
    if Path::new("/usr/bin/python3").exists() {
        assert!(ran.out.contains("42"), "{}", ran.out);
    }
}

#[test]
fn uids_are_not_shared_between_sandboxes_on_one_host() {
    // A range of its own: other tests hold uids of the shared one at the same time, and the
    // claims are host-wide, so a run of this test in another checkout must not share it either.
    let a = fixture(|p| {
        p.uid_base = 220_000 + 2 * (std::process::id() % 4096);
        p.uid_count = 2;
    });
    let b = Sandbox::probe(Policy { node: unique("node"), ..a.sandbox.policy().clone() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let one =
        a.sandbox.prepare(&unique("a"), &limits(), &dir.path().join("1"), &["true".into()], &[]).unwrap();
    let two = b.prepare(&unique("b"), &limits(), &dir.path().join("2"), &["true".into()], &[]).unwrap();
    assert_ne!(one.uid(), two.uid());
    assert!(matches!(
        a.sandbox.prepare(&unique("a"), &limits(), &dir.path().join("3"), &["true".into()], &[]),
        Err(PrepareError::NoUid(2))
    ));
    let freed = one.uid();
    one.release();
    // A process another test forks at this moment holds a copy of the lock's descriptor until
    // it execs (joining a v1 cgroup in between can take milliseconds): the claim ends with that
    // copy, so the free uid may show up a moment later, never the held one.
    let deadline = Instant::now() + Duration::from_secs(2);
    let three = loop {
        match b.prepare(&unique("b"), &limits(), &dir.path().join("4"), &["true".into()], &[]) {
            Err(PrepareError::NoUid(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(three.uid(), freed);
}

/// The v2 code path (one directory, `cgroup.kill`), tracking only: this host's unified hierarchy
/// has no controllers, so limits are tested through v1 above and v2 limits only where v2 runs.
#[test]
fn a_v2_cgroup_tracks_and_kills_everything() {
    let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/unified")
    };
    assert!(base.join("cgroup.procs").exists(), "no cgroup v2 hierarchy on this host");
    let hierarchy = Hierarchy::v2_tracking_only(base.join(unique("orgmesh"))).unwrap();
    let f = fixture(|_| {});
    let sandbox = Sandbox::with_hierarchy(f.sandbox.policy().clone(), hierarchy.clone());
    let work = f.dir.path().join(unique("work"));
    let script = "setsid sh -c 'sleep 300 &' </dev/null >/dev/null 2>&1; sleep 300";
    let mut confined = sandbox
        .prepare(&unique("attempt"), &limits(), &work, &["sh".into(), "-c".into(), script.into()], &[])
        .unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = confined.command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while confined.cgroup().unwrap().pids().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(confined.cgroup().unwrap().pids().len() >= 3);
    assert!(confined.kill_all());
    let _ = child.wait();
    confined.release();
    if let Hierarchy::V2 { dir, .. } = &hierarchy {
        let _ = std::fs::remove_dir(dir);
    }
}

/// An IPv4 address of this host beyond loopback, where a listener is "outside" the attempt:
/// the default route's source address, or else one on a dummy interface made for the test
/// (removed when the guard drops).
fn outside_address() -> (std::net::Ipv4Addr, Option<DummyInterface>) {
    let out = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output();
    let found = out.ok().and_then(|out| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find_map(|w| w.split_once('/').and_then(|(addr, _)| addr.parse::<std::net::Ipv4Addr>().ok()))
    });
    if let Some(addr) = found {
        return (addr, None);
    }
    let dummy = DummyInterface(format!("om{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["link", "add", &dummy.0, "type", "dummy"]);
    ip(&["addr", "add", "198.51.100.7/32", "dev", &dummy.0]);
    ip(&["link", "set", &dummy.0, "up"]);
    ("198.51.100.7".parse().unwrap(), Some(dummy))
}

struct DummyInterface(String);

impl Drop for DummyInterface {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// A listener that sends `byte` to whoever connects, and counts them.
fn listener(addr: std::net::IpAddr, byte: u8) -> (u16, Arc<AtomicU32>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind((addr, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(&[byte]);
        }
    });
    (port, accepted)
}

/// A shell line that connects to `addr:port` (bash's /dev/tcp, 5 s at most) and prints the
/// first byte the peer sends, or `no-<what>` if it cannot connect.
fn dial(addr: &str, port: u16, what: &str) -> String {
    format!(
        "(timeout 5 bash -c 'exec 3<>/dev/tcp/{addr}/{port} && head -c1 <&3' 2>/dev/null || printf no-{what}); echo; "
    )
}

#[test]
fn outbound_reaches_beyond_loopback_but_not_the_host_loopback() {
    let f = fixture(|p| p.network = NetworkMode::Outbound);
    let (outside, _dummy) = outside_address();
    let (out_port, out_accepted) = listener(outside.into(), b'O');
    let (lo_port, lo_accepted) = listener(std::net::Ipv4Addr::LOCALHOST.into(), b'L');
    let script = format!(
        "{}{}{}{}cat /proc/net/dev",
        dial(&outside.to_string(), out_port, "outside"),
        // 10.0.2.2 is slirp4netns's name for the host's loopback; --disable-host-loopback refuses it.
        dial("10.0.2.2", lo_port, "gateway"),
        dial("127.0.0.1", lo_port, "loopback"),
        dial("localhost", lo_port, "localhost"),
    );
    let ran = run(&f, limits(), &script);
    let lines: Vec<&str> = ran.out.lines().collect();
    assert_eq!(lines[0], "O", "the outside listener's byte: {}", ran.out);
    assert_eq!(out_accepted.load(Ordering::SeqCst), 1, "{}", ran.out);
    assert_eq!(&lines[1..4], ["no-gateway", "no-loopback", "no-localhost"], "{}", ran.out);
    assert!(!ran.out.contains('L'), "reached the host's loopback: {}", ran.out);
    assert_eq!(lo_accepted.load(Ordering::SeqCst), 0, "the loopback listener saw a connection");
    // Its own namespace: its loopback and the tap slirp4netns serves, nothing of the host's.
    let interfaces: Vec<&str> =
        lines[6..].iter().filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo", "tap0"], "{}", ran.out);
}

#[test]
fn slirp4netns_ends_with_the_attempt() {
    let f = fixture(|p| p.network = NetworkMode::Outbound);
    let ran = run(&f, limits(), "true");
    assert!(ran.status.success(), "{}", ran.out);
    let pid = ran.slirp4netns.expect("an outbound attempt has a slirp4netns");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "slirp4netns {pid} outlived its attempt");
    // Killed mid-run, as at a timeout or cancel: slirp4netns goes with the rest.
    let work = f.dir.path().join(unique("work"));
    let mut confined = f
        .sandbox
        .prepare(&unique("attempt"), &limits(), &work, &["sleep".into(), "300".into()], &[])
        .unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = confined.command.spawn().unwrap();
    confined.start_network().unwrap();
    let pid = confined.slirp4netns_pid().unwrap();
    let in_cgroup = confined.cgroup().unwrap().pids();
    assert!(in_cgroup.contains(&i32::try_from(pid).unwrap()), "slirp4netns runs in the attempt's cgroup");
    // The host sockets it holds for the task are bounded, not the node's raised limit.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    let max = net::SLIRP_MAX_FDS.to_string();
    assert_eq!(open_files.split_whitespace().skip(3).take(2).collect::<Vec<_>>(), [&max, &max], "{limits}");
    assert!(confined.kill_all(), "processes outlived kill_all");
    let _ = child.wait();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "slirp4netns {pid} outlived kill_all");
    confined.release();
}

#[test]
fn outbound_without_slirp4netns_is_refused_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(|_| {});
    let policy = Policy {
        node: unique("node"),
        network: NetworkMode::Outbound,
        slirp4netns: dir.path().join("no-slirp4netns"),
        ..f.sandbox.policy().clone()
    };
    let why = Sandbox::probe(policy).unwrap_err().0;
    assert!(why.contains("slirp4netns package"), "{why}");
}

#[test]
fn network_modes_parse_and_outbound_is_described() {
    assert_eq!("outbound".parse::<NetworkMode>(), Ok(NetworkMode::Outbound));
    assert_eq!("none".parse::<NetworkMode>(), Ok(NetworkMode::None));
    assert_eq!("host".parse::<NetworkMode>(), Ok(NetworkMode::Host));
    assert!("bridge".parse::<NetworkMode>().unwrap_err().contains("none, outbound or host"));
    let f = fixture(|p| p.network = NetworkMode::Outbound);
    assert!(f.sandbox.describe().contains("network outbound"), "{}", f.sandbox.describe());
}

#[test]
fn a_crashed_nodes_slirp4netns_is_reaped_with_its_attempt() {
    let f = fixture(|p| p.network = NetworkMode::Outbound);
    let work_root = f.dir.path().join("work-root");
    let mut confined = f
        .sandbox
        .prepare(&unique("attempt"), &limits(), &work_root.join("t-1"), &["sleep".into(), "300".into()], &[])
        .unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let child = confined.command.spawn().unwrap();
    confined.start_network().unwrap();
    let pid = i32::try_from(confined.slirp4netns_pid().unwrap()).unwrap();
    let running = confined.cgroup().unwrap().pids();
    assert!(running.contains(&pid), "slirp4netns {pid} is not in the attempt's cgroup: {running:?}");
    // The node dies without tearing down; its exit-fd stays open here, so only the cgroup
    // reaping of the next start can end slirp4netns.
    std::mem::forget(confined);
    std::mem::forget(child);
    let again = Sandbox::probe(f.sandbox.policy().clone()).unwrap();
    // At least what ran once the network was up (bubblewrap may still be forking the task then).
    assert!(again.reap_leftovers(&work_root) >= running.len(), "bubblewrap, the task and slirp4netns");
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid), "slirp4netns {pid} still runs");
}

#[test]
fn a_slirp4netns_that_never_gets_ready_is_killed_and_the_task_gets_loopback_only() {
    let f = fixture(|_| {});
    // Starts, never reports ready, and would live on: every failure of the setup must end it.
    let fake = f.dir.path().join("fake-slirp4netns");
    let pid_file = f.dir.path().join("fake-slirp4netns.pid");
    std::fs::write(&fake, format!("#!/bin/sh\necho $$ > {}\nexec sleep 300\n", pid_file.display())).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Past the probe, which would refuse this slirp4netns: the attempt is what is under test.
    let policy = Policy {
        node: unique("node"),
        network: NetworkMode::Outbound,
        slirp4netns: fake,
        ..f.sandbox.policy().clone()
    };
    let sandbox = Sandbox::with_hierarchy(policy.clone(), Hierarchy::detect(&policy.node).unwrap());
    let work = f.dir.path().join(unique("work"));
    let command = ["sh".to_string(), "-c".into(), "cat /proc/net/dev".into()];
    let mut confined = sandbox.prepare(&unique("attempt"), &limits(), &work, &command, &[]).unwrap();
    confined.command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = confined.command.spawn().unwrap();
    let started = Instant::now();
    let e = confined.start_network().unwrap_err();
    assert!(matches!(e, NetworkError::NotReady(_)), "{e}");
    assert!(started.elapsed() < net::SETUP_TIMEOUT + Duration::from_secs(2), "one deadline for the setup");
    assert_eq!(confined.slirp4netns_pid(), None);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the unready slirp4netns {pid} still runs");
    // Fails closed: the task was let go without a network, so it saw its own loopback alone.
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let interfaces: Vec<&str> =
        text.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo"], "{text}{}", String::from_utf8_lossy(&out.stderr));
    confined.release();
}
