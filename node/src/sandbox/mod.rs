//! The sandbox around one attempt of the `process` executor: its own unprivileged uid, mount,
//! PID, IPC, UTS and (by policy) network namespaces through bubblewrap, a size-capped private
//! work dir, and a cgroup that bounds memory, processes and CPU and finds every process the
//! attempt started. Never decides whether an attempt runs, only how it is confined.
//!
//! Why bubblewrap run as root, then `setpriv` to the attempt's uid: bubblewrap is small, audited
//! and packaged by every distribution (Flatpak's sandbox), so the namespaces and mounts are not
//! ours to get wrong; as root it needs no user namespace (often disabled on servers), and the
//! attempt runs as a real host uid of its own, so files it creates and signals it sends are
//! checked against a uid that owns nothing of the node's. `setpriv` (util-linux) drops every
//! capability, the bounding set and the supplementary groups, and sets `no_new_privs`, so no
//! setuid binary can lift the attempt back up. See docs/security.md.
//!
//! Network `outbound` (routes out through slirp4netns, but not to the host's loopback) is set up
//! in [`net`]: a `Confined` of that mode must get [`Confined::start_network`] once its command is
//! spawned, or its task never starts.
//!
//! Layout: this file holds the policy, the host-wide [`Sandbox`] and how it builds an attempt's
//! confinement; `confined` the [`Confined`] handle of one attempt and its teardown; [`cgroup`]
//! the limits and the process accounting; `net` network `outbound`.

pub mod cgroup;
mod confined;
mod net;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use cgroup::{AttemptCgroup, Hierarchy, Limits};

/// What the admin asks attempts to be confined by (`executor.isolation`): the same word the
/// node's signed record and `constraints.isolation` use.
pub use orgmesh_protocol::Isolation;

pub use confined::Confined;
pub use net::NetworkError;

/// What the attempt's network namespace reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only, in a namespace of its own: no route out, and the node's API unreachable.
    #[default]
    None,
    /// A namespace of its own routed out through slirp4netns: other hosts are reachable, the
    /// host's loopback (and so a loopback-only node API) is not. The host's own non-loopback
    /// addresses are reachable like any other host's (see docs/security.md).
    Outbound,
    /// The host's network, the node's loopback API included: an explicit opt-in.
    Host,
}

impl NetworkMode {
    /// The word config and `/readyz` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Outbound => "outbound",
            Self::Host => "host",
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "outbound" => Ok(Self::Outbound),
            "host" => Ok(Self::Host),
            other => Err(format!("unknown network mode {other:?} (none, outbound or host)")),
        }
    }
}

/// How attempts are confined: the host's policy, from `[executor]`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// This node's name for its cgroup directory (its peer id).
    pub node: String,
    /// The network of every sandboxed attempt.
    pub network: NetworkMode,
    /// First uid (and gid) handed to attempts.
    pub uid_base: u32,
    /// How many uids, from `uid_base` on: at most this many attempts run at once.
    pub uid_count: u32,
    /// Most processes and threads of one attempt.
    pub pids_max: u32,
    /// Size cap of an attempt's work dir, MiB.
    pub work_dir_max_mb: u64,
    /// Host directories the attempt sees read-only (the system); missing ones are skipped.
    pub read_only: Vec<PathBuf>,
    /// Paths never visible to an attempt even where they lie inside `read_only` (the node's
    /// data dir, config and keys).
    pub hidden: Vec<PathBuf>,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// The `setpriv` binary.
    pub setpriv: PathBuf,
    /// The slirp4netns binary, used by network mode `outbound` only.
    pub slirp4netns: PathBuf,
}

/// The system directories an attempt sees by default: enough for `sh`, coreutils and
/// interpreters. `/home`, `/root`, `/var`, `/run` (sockets: a read-only mount does not stop a
/// `connect`), `/srv` and `/mnt` are not among them.
pub const DEFAULT_READ_ONLY: [&str; 9] =
    ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

/// Why the sandbox cannot be built on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Why one attempt's sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The pipes of the `outbound` network could not be made.
    #[error("cannot prepare the attempt's network: {0}")]
    Network(io::Error),
    /// Every uid of the range is in use.
    #[error("no free sandbox uid: {0} attempts already run")]
    NoUid(u32),
    /// The attempt's cgroup could not be made.
    #[error("cannot create the attempt's cgroup: {0}")]
    Cgroup(io::Error),
    /// The attempt's work dir could not be made or mounted.
    #[error("cannot prepare the work dir {path}: {message}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The host's sandbox, probed once at start; shared by every attempt.
#[derive(Debug)]
pub struct Sandbox {
    policy: Policy,
    hierarchy: Hierarchy,
    uids_in_use: Mutex<BTreeSet<u32>>,
}

/// Where uid claims live: one lock file per uid, held (flock) by the attempt using it, so that
/// every node on a host draws from one range without handing a uid out twice, and a crashed
/// node's claims end with its process.
const UID_LOCK_DIR: &str = "/run/orgmesh/sandbox-uids";

impl Sandbox {
    /// Checks that this host can build the sandbox (root, bubblewrap, setpriv, cgroups, and a
    /// trial run of `true` inside it) and prepares the node's cgroup directories.
    pub fn probe(policy: Policy) -> Result<Arc<Sandbox>, Unavailable> {
        let fail = |m: String| Err(Unavailable(m));
        if !running_as_root() {
            return fail("the sandbox needs root (namespaces, mounts, cgroups, per-attempt uids); the node runs as another user".into());
        }
        let mut tools =
            vec![("bubblewrap", &policy.bwrap, "bubblewrap"), ("setpriv", &policy.setpriv, "util-linux")];
        // Never a fallback to another network: without slirp4netns, `outbound` has no sandbox.
        if policy.network == NetworkMode::Outbound {
            tools.push(("slirp4netns (network \"outbound\")", &policy.slirp4netns, "slirp4netns"));
        }
        for (what, path, package) in tools {
            if !path.is_file() {
                return fail(format!(
                    "{what} not found at {} (install the {package} package)",
                    path.display()
                ));
            }
        }
        if policy.uid_count == 0
            || policy.uid_base == 0
            || policy.uid_base.checked_add(policy.uid_count).is_none()
        {
            return fail(format!("invalid sandbox uid range {} + {}", policy.uid_base, policy.uid_count));
        }
        let hierarchy = Hierarchy::detect(&policy.node).map_err(Unavailable)?;
        let sandbox = Arc::new(Sandbox { policy, hierarchy, uids_in_use: Mutex::new(BTreeSet::new()) });
        fs::create_dir_all(UID_LOCK_DIR)
            .map_err(|e| Unavailable(format!("cannot create {UID_LOCK_DIR}: {e}")))?;
        sandbox.trial_run()?;
        Ok(sandbox)
    }

    /// A sandbox on an explicit hierarchy, for tests of the cgroup code paths.
    #[cfg(test)]
    fn with_hierarchy(policy: Policy, hierarchy: Hierarchy) -> Arc<Sandbox> {
        Arc::new(Sandbox { policy, hierarchy, uids_in_use: Mutex::new(BTreeSet::new()) })
    }

    /// One line on what confines attempts here, for `/readyz` and the start-up log.
    pub fn describe(&self) -> String {
        let cgroups = match &self.hierarchy {
            Hierarchy::V1 { .. } => "cgroup v1",
            Hierarchy::V2 { .. } => "cgroup v2",
        };
        let p = &self.policy;
        format!(
            "bubblewrap namespaces, {cgroups} limits, uids {}..{}, network {}, work dir cap {} MiB",
            p.uid_base,
            p.uid_base + p.uid_count - 1,
            match p.network {
                NetworkMode::Outbound => "outbound (slirp4netns, no host loopback)",
                other => other.as_str(),
            },
            p.work_dir_max_mb
        )
    }

    /// The policy it applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Runs `true` in a full sandbox: namespaces that the kernel or a container runtime forbid
    /// show up here, at start, instead of failing every attempt.
    fn trial_run(self: &Arc<Self>) -> Result<(), Unavailable> {
        let dir =
            std::env::temp_dir().join(format!("orgmesh-probe-{}-{}", std::process::id(), self.policy.node));
        let limits = Limits { memory_bytes: 64 << 20, pids_max: 16, cpu_millis: 0 };
        let mut confined = self
            .prepare("probe", &limits, &dir, &["true".to_string()], &[])
            .map_err(|e| Unavailable(format!("cannot set up a trial sandbox: {e}")))?;
        confined.command.stdout(Stdio::null()).stderr(Stdio::piped());
        let result = confined.command.spawn().and_then(|child| {
            if let Err(e) = confined.start_network() {
                confined.kill_all();
                let _ = child.wait_with_output();
                return Err(io::Error::other(e.to_string()));
            }
            child.wait_with_output()
        });
        confined.release();
        let _ = fs::remove_dir(&dir);
        match result {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(Unavailable(format!(
                "a trial sandbox failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
            Err(e) => Err(Unavailable(format!("cannot start a trial sandbox: {e}"))),
        }
    }

    /// The cgroups of this node's attempts that exist now (running, or not yet torn down).
    pub fn running_attempts(&self) -> Vec<AttemptCgroup> {
        self.hierarchy.leftovers()
    }

    /// Kills and removes whatever attempts of an earlier run of this node left behind (a crash
    /// or SIGKILL of the node), and unmounts their work dirs under `work_root`. Returns how many
    /// processes were still running.
    pub fn reap_leftovers(&self, work_root: &Path) -> usize {
        let mut killed = 0;
        for cgroup in self.hierarchy.leftovers() {
            killed += cgroup.pids().len();
            cgroup.kill_all();
            cgroup.remove();
        }
        if let Ok(entries) = fs::read_dir(work_root) {
            for entry in entries.flatten() {
                let path = entry.path();
                unmount(&path);
                let _ = fs::remove_dir_all(&path);
            }
        }
        killed
    }

    /// Sets up the sandbox of one attempt: a uid, a cgroup with `limits`, and `work_dir` as a
    /// private size-capped tmpfs owned by that uid; returns the command that runs `command`
    /// inside it with `env` (and nothing else) in its environment.
    pub fn prepare(
        self: &Arc<Self>,
        name: &str,
        limits: &Limits,
        work_dir: &Path,
        command: &[String],
        env: &[(String, String)],
    ) -> Result<Confined, PrepareError> {
        let (uid, uid_lock) = self.take_uid()?;
        let mut confined = Confined {
            sandbox: Arc::clone(self),
            uid,
            uid_lock: Some(uid_lock),
            cgroup: None,
            work_dir: work_dir.to_path_buf(),
            mounted: false,
            pending: None,
            slirp: Mutex::new(None),
            command: Command::new(&self.policy.bwrap),
        };
        confined.cgroup = Some(self.hierarchy.create(name, limits).map_err(PrepareError::Cgroup)?);
        let work_err = |message: String| PrepareError::WorkDir { path: work_dir.to_path_buf(), message };
        fs::create_dir_all(work_dir).map_err(|e| work_err(e.to_string()))?;
        fs::set_permissions(work_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| work_err(e.to_string()))?;
        let options =
            format!("size={}m,mode=0700,uid={uid},gid={uid},nosuid,nodev", self.policy.work_dir_max_mb);
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "orgmesh-work"])
            .arg(work_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| work_err(format!("cannot run mount: {e}")))?;
        if !mount.status.success() {
            return Err(work_err(format!("mount failed: {}", String::from_utf8_lossy(&mount.stderr).trim())));
        }
        confined.mounted = true;
        if self.policy.network == NetworkMode::Outbound {
            confined.pending = Some(net::Pending::new().map_err(PrepareError::Network)?);
        }
        let fds = confined.pending.as_ref().map(net::Pending::child_fds);
        confined.command = self.command(uid, work_dir, command, env, fds);
        let cgroup = confined.cgroup.as_ref().ok_or_else(|| work_err("no cgroup".into()))?;
        let join = cgroup.join_files().map_err(PrepareError::Cgroup)?;
        join_cgroup_before_exec(&mut confined.command, join);
        if let Some(fds) = fds {
            net::inherit_fds(&mut confined.command, fds.to_vec());
        }
        Ok(confined)
    }

    /// bubblewrap's command line: the mounts, the namespaces, then `setpriv` to the attempt's uid.
    /// `outbound` (the `--info-fd` and `--block-fd` descriptors) makes bubblewrap report its
    /// sandbox and wait for the network before it runs the command.
    fn command(
        &self,
        uid: u32,
        work_dir: &Path,
        command: &[String],
        env: &[(String, String)],
        outbound: Option<[i32; 2]>,
    ) -> Command {
        let p = &self.policy;
        let mut cmd = Command::new(&p.bwrap);
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        cmd.args(["--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
        // Its own UTS namespace, under the host's name: a task may say where it ran, but cannot
        // rename the host.
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let hostname = if hostname.trim().is_empty() { "orgmesh-task" } else { hostname.trim() };
        cmd.args(["--unshare-cgroup-try", "--hostname", hostname]);
        if p.network != NetworkMode::Host {
            cmd.arg("--unshare-net");
        }
        if let Some([info, block]) = outbound {
            cmd.arg("--info-fd").arg(info.to_string()).arg("--block-fd").arg(block.to_string());
        }
        // A private /tmp first (capped like the work dir: tmpfs pages would otherwise be a
        // second, uncapped disk), so that a system directory configured below it stays visible.
        let tmp_size = (p.work_dir_max_mb << 20).to_string();
        cmd.args([
            "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", &tmp_size, "--tmpfs", "/tmp",
        ]);
        cmd.args(["--symlink", "/tmp", "/var/tmp"]);
        for dir in &p.read_only {
            match fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = fs::read_link(dir) {
                        cmd.arg("--symlink").arg(target).arg(dir);
                    }
                }
                Ok(m) if m.is_dir() => {
                    cmd.arg("--ro-bind").arg(dir).arg(dir);
                }
                _ => {}
            }
        }
        // Secrets inside the visible system are covered: a directory by an empty tmpfs, a file by
        // /dev/null.
        for hidden in &p.hidden {
            if !p.read_only.iter().any(|ro| hidden.starts_with(ro)) {
                continue;
            }
            match fs::metadata(hidden) {
                Ok(m) if m.is_dir() => {
                    cmd.arg("--tmpfs").arg(hidden);
                }
                Ok(_) => {
                    cmd.arg("--ro-bind").arg("/dev/null").arg(hidden);
                }
                Err(_) => {}
            }
        }
        cmd.arg("--bind").arg(work_dir).arg(work_dir).arg("--chdir").arg(work_dir);
        // bubblewrap drops every capability before running the command; setpriv needs these two
        // for the switch to the attempt's uid, which then clears them for good.
        cmd.args(["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]);
        cmd.arg(&p.setpriv);
        cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}"));
        cmd.args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]);
        cmd.args(command);
        cmd
    }

    /// A uid no other attempt on this host holds: free in this node, and its lock file not held
    /// by another node.
    fn take_uid(&self) -> Result<(u32, fs::File), PrepareError> {
        let mut in_use = self.uids_in_use.lock().unwrap_or_else(|e| e.into_inner());
        let p = &self.policy;
        for uid in (p.uid_base..p.uid_base + p.uid_count).filter(|u| !in_use.contains(u)) {
            let path = Path::new(UID_LOCK_DIR).join(uid.to_string());
            let Ok(file) = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                in_use.insert(uid);
                return Ok((uid, file));
            }
        }
        Err(PrepareError::NoUid(p.uid_count))
    }

    fn give_back_uid(&self, uid: u32) {
        self.uids_in_use.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Every `Confined` holds an `Arc` of this: no attempt is left when this runs.
        self.hierarchy.remove_node_dirs();
    }
}

/// Unmounts `dir` if something is mounted there (lazily: an open file must not keep it).
fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).stdin(Stdio::null()).stderr(Stdio::null()).status();
}

/// Whether this process's effective uid is 0 (`/proc/self` is owned by it).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Makes the child join the attempt's cgroup(s) between fork and exec, so that bubblewrap and
/// everything it starts are inside from their first instruction: nothing escapes the limits or
/// the final kill by forking early.
#[allow(unsafe_code)]
pub(crate) fn join_cgroup_before_exec(cmd: &mut Command, files: Vec<fs::File>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fds: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: the closure runs in the forked child before exec; it only calls write(2), which is
    // async-signal-safe, on descriptors opened before the fork (kept open by `files`, which the
    // closure owns), and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let _keep_open = &files;
            for fd in &fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Sends `signal` to process `pid`.
#[allow(unsafe_code)]
pub(crate) fn signal(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory effects; pid comes from a cgroup of this node's attempt.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

#[cfg(test)]
mod tests;
