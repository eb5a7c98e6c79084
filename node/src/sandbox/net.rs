//! The `outbound` network of a sandboxed attempt: the attempt keeps a network namespace of its
//! own (bubblewrap `--unshare-net`) whose only way out is slirp4netns, a user-mode TCP/IP stack
//! that turns the attempt's packets into ordinary sockets of the host. It must never let the
//! attempt run before its network is configured, never give it the host's loopback, and never
//! leave slirp4netns running once the attempt is torn down.
//!
//! How one attempt gets it: bubblewrap is started with `--info-fd` (it writes the sandbox's pid
//! and namespace ids there once they exist) and `--block-fd` (it waits on that pipe before it
//! execs the task). [`Pending::start`] reads the info, opens `/proc/<pid>/ns/net` and checks its
//! inode against the namespace bubblewrap named (a reused pid cannot hand us another namespace),
//! waits until bubblewrap has set the namespace's `lo` up (it reports the pid before it does, and
//! slirp4netns configuring `tap0` alongside made that fail now and then), starts slirp4netns on
//! that open namespace, waits for its `--ready-fd` (the tap device is up,
//! addressed and routed), and only then writes to the block pipe. If anything fails, the block
//! pipe is closed unwritten: bubblewrap then runs the task with no interface but `lo` (a failure
//! fails closed), and the caller kills the attempt anyway.
//!
//! Why slirp4netns over pasta (passt): both are packaged by Debian. slirp4netns 1.x has, as
//! plain flags checked against the installed version, everything this mode rests on:
//! `--disable-host-loopback` (10.0.2.2 and the host's 127.0.0.0/8 are refused), `--enable-sandbox`
//! (it pivots into an empty root of its own and drops every capability but
//! `CAP_NET_BIND_SERVICE`), `--enable-seccomp`, `--ready-fd` and `--exit-fd`; it is what rootless
//! Podman and RootlessKit ran for years. pasta maps its gateway address to the host's loopback
//! by default (`--no-map-gw` turns that off) and was not tried here.
//!
//! Where slirp4netns runs: as root (joining a network namespace the host's root owns needs
//! `CAP_SYS_ADMIN` there; it gives up its capabilities with `--enable-sandbox` once the tap is
//! open) and inside the attempt's cgroup: the memory and CPU it spends carrying the attempt's
//! traffic are the attempt's, capped by `memory_mb` and `cpu_millis` with it, and the cgroup kill
//! that ends the attempt at exit, timeout, cancel or the next start after a crash ends it too. It
//! costs the attempt one process of `executor.pids_max`. The task cannot signal or trace it: it is
//! outside the task's PID namespace and runs as another uid. `--exit-fd` is a pipe whose write end
//! only the node holds, so slirp4netns also ends when the node dies.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the whole setup may take, from bubblewrap's start until slirp4netns has configured
/// the namespace: one deadline for every step, so that the attempt waits this long at most.
pub(super) const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The attempt's MTU: slirp4netns's largest, for throughput (it is a virtual link).
const MTU: &str = "--mtu=65520";
/// The most descriptors slirp4netns may hold. Every connection or UDP flow the task opens is a
/// socket of the host held by slirp4netns, and it would otherwise inherit the node's own limit
/// (raised to the hard limit at start: 65536 under the shipped unit, often 2^20 in a container),
/// letting one task hold that many host sockets and their ephemeral ports. The task's own limit
/// is no bound here: it opens no sockets of the host itself.
pub(super) const SLIRP_MAX_FDS: libc::rlim_t = 1024;

/// Why the attempt's outbound network could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A pipe or descriptor operation failed.
    #[error("cannot set up the outbound network: {0}")]
    Io(#[from] io::Error),
    /// bubblewrap ended or said nothing usable before naming its sandbox.
    #[error("bubblewrap did not report the sandbox's pid: {0}")]
    NoSandboxPid(String),
    /// The namespace at the reported pid is not the one bubblewrap made.
    #[error("the network namespace at pid {0} is not the attempt's")]
    WrongNamespace(u32),
    /// slirp4netns could not be started.
    #[error("cannot start slirp4netns ({path}): {message}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// slirp4netns ended, or did not become ready in time.
    #[error("slirp4netns did not bring the network up: {0}")]
    NotReady(String),
}

/// The pipes between the node and one attempt's bubblewrap, from `prepare` until the attempt's
/// network is up.
#[derive(Debug)]
pub(super) struct Pending {
    /// The node's end of `--info-fd`.
    info: File,
    /// bubblewrap's end of `--info-fd`: closed here once bubblewrap runs.
    info_child: Option<OwnedFd>,
    /// bubblewrap's end of `--block-fd`.
    block_child: Option<OwnedFd>,
    /// The node's end of `--block-fd`: one byte written here lets the task start.
    block: Option<File>,
}

impl Pending {
    /// The pipes for one attempt.
    pub(super) fn new() -> io::Result<Self> {
        let (info, info_w) = io::pipe()?;
        let (block_r, block) = io::pipe()?;
        Ok(Self {
            info: File::from(OwnedFd::from(info)),
            info_child: Some(OwnedFd::from(info_w)),
            block_child: Some(OwnedFd::from(block_r)),
            block: Some(File::from(OwnedFd::from(block))),
        })
    }

    /// bubblewrap's descriptors (`--info-fd`, `--block-fd`), to be inherited by it alone.
    pub(super) fn child_fds(&self) -> [RawFd; 2] {
        let fd = |f: &Option<OwnedFd>| f.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        [fd(&self.info_child), fd(&self.block_child)]
    }

    /// Once bubblewrap runs: starts slirp4netns on the attempt's namespace (inside the cgroup
    /// `join` names), waits until it is configured, then lets the task start. Blocking.
    pub(super) fn start(mut self, slirp4netns: &Path, join: Vec<File>) -> Result<Slirp, NetworkError> {
        // Our copies of bubblewrap's ends go first: an early exit of bubblewrap is then an EOF.
        self.info_child = None;
        self.block_child = None;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let info = read_info(&mut self.info, deadline)?;
        let netns = File::open(format!("/proc/{}/ns/net", info.pid))?;
        if netns.metadata()?.ino() != info.net_namespace {
            return Err(NetworkError::WrongNamespace(info.pid));
        }
        // bubblewrap reports the pid before its child sets the namespace's loopback up; netlink
        // work of slirp4netns alongside makes that setup fail now and then.
        wait_for_loopback(&netns, deadline)?;
        let slirp = Slirp::start(slirp4netns, &netns, join, deadline)?;
        if let Some(mut block) = self.block.take() {
            block.write_all(b"1")?;
        }
        Ok(slirp)
    }
}

/// What bubblewrap reports on `--info-fd`.
struct Info {
    pid: u32,
    net_namespace: u64,
}

fn read_info(from: &mut File, deadline: Instant) -> Result<Info, NetworkError> {
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if !wait_readable(from, deadline)? {
            return Err(NetworkError::NoSandboxPid("timed out".into()));
        }
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Err(NetworkError::NoSandboxPid("bubblewrap ended first".into()));
        }
        text.extend_from_slice(&buf[..n]);
        // A few hundred bytes of JSON at most: anything longer is not bubblewrap's report.
        if text.len() > 64 * 1024 {
            return Err(NetworkError::NoSandboxPid("report too long".into()));
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) {
            let field = |name: &str| value.get(name).and_then(serde_json::Value::as_u64);
            return match (field("child-pid").and_then(|p| u32::try_from(p).ok()), field("net-namespace")) {
                (Some(pid), Some(net_namespace)) if pid > 1 => Ok(Info { pid, net_namespace }),
                _ => Err(NetworkError::NoSandboxPid(String::from_utf8_lossy(&text).into_owned())),
            };
        }
    }
}

/// Waits until `lo` is up and addressed in the namespace `netns` (bubblewrap's last network
/// step before it waits on `--block-fd`). Looks from a thread of its own that joins the namespace, so that no
/// thread of the node ever changes namespace.
fn wait_for_loopback(netns: &File, deadline: Instant) -> Result<(), NetworkError> {
    let netns = netns.try_clone()?;
    let looked = std::thread::spawn(move || -> io::Result<bool> {
        join_netns(&netns)?;
        loop {
            if loopback_is_up()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join();
    match looked {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(NetworkError::NoSandboxPid("its loopback never came up".into())),
        Ok(Err(e)) => Err(NetworkError::Io(e)),
        Err(_) => Err(NetworkError::NoSandboxPid("the loopback check panicked".into())),
    }
}

/// Moves the calling thread (only) into the network namespace `netns`.
#[allow(unsafe_code)]
fn join_netns(netns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on a namespace descriptor we hold open; it changes only this thread.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `lo` of the calling thread's network namespace is up.
#[allow(unsafe_code)]
fn loopback_is_up() -> io::Result<bool> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) creates a new descriptor, owned from here on by `socket` alone.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is fresh and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `request`, which lives
    // across the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Ok(false);
    }
    // Up, and addressed (bubblewrap adds 127.0.0.1 and sets the link up, in either order).
    // SAFETY: as above, SIOCGIFADDR writes the address into `request`.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFADDR, &mut request) } != 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) { Ok(false) } else { Err(e) };
    }
    Ok(true)
}

/// Waits until `file` is readable (or at end-of-file), up to `deadline`; false on timeout.
#[allow(unsafe_code)]
fn wait_readable(file: &File, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut poll = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll(2) on one valid pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut poll, 1, ms) };
        match n {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// One attempt's running slirp4netns. [`Slirp::stop`] ends it; dropping it stops it too.
#[derive(Debug)]
pub(super) struct Slirp {
    child: Option<Child>,
    /// The write end of `--exit-fd`: closing it tells slirp4netns to exit, and the kernel closes
    /// it if the node dies.
    exit: Option<File>,
}

impl Slirp {
    fn start(path: &Path, netns: &File, join: Vec<File>, deadline: Instant) -> Result<Self, NetworkError> {
        let (ready_r, ready_w) = io::pipe()?;
        let (exit_r, exit_w) = io::pipe()?;
        let log = memfd("slirp4netns-log")?;
        let inherit = [ready_w.as_raw_fd(), exit_r.as_raw_fd(), netns.as_raw_fd()];
        let mut cmd = Command::new(path);
        cmd.env_clear()
            .args(["--configure", MTU, "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp"])
            .arg(format!("--ready-fd={}", inherit[0]))
            .arg(format!("--exit-fd={}", inherit[1]))
            .arg("--netns-type=path")
            // slirp4netns opens the namespace we checked, through its own inherited descriptor.
            .arg(format!("/proc/self/fd/{}", inherit[2]))
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone()?);
        super::join_cgroup_before_exec(&mut cmd, join);
        inherit_fds(&mut cmd, inherit.to_vec());
        limit_fds(&mut cmd, SLIRP_MAX_FDS);
        let child = cmd
            .spawn()
            .map_err(|e| NetworkError::Spawn { path: path.to_path_buf(), message: e.to_string() })?;
        drop(ready_w);
        drop(exit_r);
        let mut slirp = Slirp { child: Some(child), exit: Some(File::from(OwnedFd::from(exit_w))) };
        let mut ready = File::from(OwnedFd::from(ready_r));
        let mut byte = [0u8; 1];
        let ok = wait_readable(&ready, deadline)? && matches!(ready.read(&mut byte), Ok(1));
        if ok {
            return Ok(slirp);
        }
        let status = slirp.stop();
        let mut said = String::new();
        let mut log = log;
        let _ = io::Seek::seek(&mut log, io::SeekFrom::Start(0));
        let _ = log.take(4096).read_to_string(&mut said);
        Err(NetworkError::NotReady(format!("{status}: {}", said.trim())))
    }

    /// The process id, for tests and logs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Ends slirp4netns and reaps it; returns how it ended. Idempotent.
    pub(super) fn stop(&mut self) -> String {
        self.exit = None;
        let Some(mut child) = self.child.take() else { return "stopped".into() };
        let _ = child.kill();
        match child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("wait failed: {e}"),
        }
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An anonymous in-memory file (close-on-exec): slirp4netns's stderr, read only if it fails.
/// Its pages are charged to the writer's cgroup, the attempt's.
#[allow(unsafe_code)]
fn memfd(name: &str) -> io::Result<File> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: memfd_create(2) with a valid NUL-terminated name; the returned descriptor is new
    // and owned by the File alone.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Lets the child inherit `fds` across exec (the node opens every descriptor close-on-exec, so
/// no other child ever sees them): clears `FD_CLOEXEC` between fork and exec, in the child only.
#[allow(unsafe_code)]
pub(super) fn inherit_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl(2), which is
    // async-signal-safe, on descriptors the parent keeps open until the child is spawned.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if *fd < 0 {
                    continue;
                }
                let flags = libc::fcntl(*fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(*fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Caps the child's open descriptors at `max` (soft and hard, so it cannot raise them again).
#[allow(unsafe_code)]
fn limit_fds(cmd: &mut Command, max: libc::rlim_t) {
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2), which
    // is async-signal-safe, on a struct on its own stack. Descriptors already open stay valid.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: max, rlim_max: max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
