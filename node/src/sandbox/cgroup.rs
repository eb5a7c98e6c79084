//! Per-attempt cgroups: where an attempt's limits are set and how every process it started is
//! found and killed, on cgroup v1 (one directory per controller) and v2 (one unified directory).
//! Never decides what an attempt may use; the sandbox passes the limits in.
//!
//! Layout: every node keeps its attempts under `<its own cgroup>/orgmesh/<node>/<attempt>`, so
//! that several nodes on one host (tests, the demo) never touch each other's attempts and a
//! restarted node finds exactly its own leftovers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The controllers an attempt needs: memory and pids are required (an unbounded attempt could
/// take the host down); cpu is applied where present; freezer makes a v1 kill race-free.
const V1_REQUIRED: [&str; 2] = ["memory", "pids"];
const V1_OPTIONAL: [&str; 3] = ["cpu", "freezer", "cpuacct"];
const V2_REQUIRED: [&str; 2] = ["memory", "pids"];

/// What one attempt may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hard memory limit in bytes (an attempt over it is killed by the kernel's OOM killer).
    pub memory_bytes: u64,
    /// Most processes and threads at once.
    pub pids_max: u32,
    /// CPU in thousandths of a core, as a CFS quota; 0 means no quota.
    pub cpu_millis: u32,
}

/// Which cgroup layout the host has, and where this node's attempts live in it.
#[derive(Debug, Clone)]
pub enum Hierarchy {
    /// cgroup v1: one directory per controller, each `<mount>/<own path>/orgmesh/<node>`.
    V1 {
        /// `(controller, this node's directory under it)`.
        dirs: Vec<(&'static str, PathBuf)>,
    },
    /// cgroup v2: one directory `<own path>/orgmesh/<node>` with the controllers enabled below.
    V2 {
        /// This node's directory.
        dir: PathBuf,
        /// Whether the memory and pids controllers are enabled for attempts (false only for the
        /// tracking-only test hierarchy).
        limits: bool,
    },
}

impl Hierarchy {
    /// Finds the host's cgroup layout under `/sys/fs/cgroup` and prepares this node's
    /// directories. `node` names this node (its peer id) so that nodes sharing a host stay apart.
    pub fn detect(node: &str) -> Result<Self, String> {
        let root = Path::new("/sys/fs/cgroup");
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        if root.join("cgroup.controllers").exists() {
            let own_path = own_path_v2(&own).ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
            return Self::prepare_v2(&root.join(own_path.trim_start_matches('/')), node);
        }
        let mut dirs = Vec::new();
        for controller in V1_REQUIRED.iter().chain(&V1_OPTIONAL) {
            let mount = root.join(controller);
            if !mount.join("cgroup.procs").exists() {
                if V1_REQUIRED.contains(controller) {
                    return Err(format!(
                        "cgroup v1 controller {controller} is not mounted at {} (and no cgroup v2 at {})",
                        mount.display(),
                        root.display()
                    ));
                }
                continue;
            }
            let own_path = own_path_v1(&own, controller).unwrap_or_else(|| "/".into());
            let dir = mount.join(own_path.trim_start_matches('/')).join("orgmesh").join(node);
            fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            dirs.push((*controller, dir));
        }
        Ok(Hierarchy::V1 { dirs })
    }

    /// A v2 hierarchy rooted at `base` (the node's own cgroup). A cgroup with processes cannot
    /// hand controllers to its children, so when the node's own cgroup holds processes and is not
    /// the root, the node first moves itself into `<base>/supervisor`.
    fn prepare_v2(base: &Path, node: &str) -> Result<Self, String> {
        let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let available = read(&base.join("cgroup.controllers"))?;
        let missing: Vec<_> =
            V2_REQUIRED.iter().filter(|c| !available.split_whitespace().any(|a| a == **c)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "cgroup v2 controllers {missing:?} are not delegated to {} (systemd: Delegate=yes)",
                base.display()
            ));
        }
        let is_root = !base.join("cgroup.type").exists();
        if !is_root && !read(&base.join("cgroup.procs"))?.trim().is_empty() {
            let supervisor = base.join("supervisor");
            fs::create_dir_all(&supervisor)
                .map_err(|e| format!("cannot create {}: {e}", supervisor.display()))?;
            write_file(&supervisor.join("cgroup.procs"), "0")
                .map_err(|e| format!("cannot move the node into {}: {e}", supervisor.display()))?;
        }
        let wanted: String = available
            .split_whitespace()
            .filter(|c| ["memory", "pids", "cpu"].contains(c))
            .map(|c| format!("+{c} "))
            .collect();
        let orgmesh = base.join("orgmesh");
        let dir = orgmesh.join(node);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for level in [base, orgmesh.as_path(), dir.as_path()] {
            write_file(&level.join("cgroup.subtree_control"), wanted.trim())
                .map_err(|e| format!("cannot enable {wanted}in {}: {e}", level.display()))?;
        }
        Ok(Hierarchy::V2 { dir, limits: true })
    }

    /// A v2 directory used for tracking and killing only, with no controllers: how the v2 code
    /// path is tested on a host whose unified hierarchy has none (cgroup v1 hosts).
    pub fn v2_tracking_only(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Hierarchy::V2 { dir, limits: false })
    }

    /// Creates the cgroup of attempt `name` with `limits`.
    pub fn create(&self, name: &str, limits: &Limits) -> io::Result<AttemptCgroup> {
        let cgroup = match self {
            Hierarchy::V1 { dirs } => {
                let mut made = Vec::new();
                for (controller, base) in dirs {
                    let dir = base.join(name);
                    fs::create_dir_all(&dir)?;
                    made.push((*controller, dir));
                }
                AttemptCgroup { version: Version::V1, dirs: made }
            }
            Hierarchy::V2 { dir, limits: with_limits } => {
                let dir = dir.join(name);
                fs::create_dir_all(&dir)?;
                let controller = if *with_limits { "unified" } else { "tracking" };
                AttemptCgroup { version: Version::V2, dirs: vec![(controller, dir)] }
            }
        };
        if let Err(e) = cgroup.apply(limits) {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Removes this node's (empty) directories: a node that stops leaves nothing behind.
    pub fn remove_node_dirs(&self) {
        let dirs: Vec<&Path> = match self {
            Hierarchy::V1 { dirs } => dirs.iter().map(|(_, d)| d.as_path()).collect(),
            Hierarchy::V2 { dir, .. } => vec![dir.as_path()],
        };
        for dir in dirs {
            let _ = fs::remove_dir(dir);
        }
    }

    /// The cgroups of attempts left behind by an earlier run of this node (it crashed or was
    /// killed): each must be emptied and removed before new work starts.
    pub fn leftovers(&self) -> Vec<AttemptCgroup> {
        let subdirs = |base: &Path| -> Vec<String> {
            fs::read_dir(base)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n != "supervisor")
                .collect()
        };
        match self {
            Hierarchy::V1 { dirs } => {
                let mut names: Vec<String> = dirs.iter().flat_map(|(_, base)| subdirs(base)).collect();
                names.sort();
                names.dedup();
                names
                    .into_iter()
                    .map(|name| AttemptCgroup {
                        version: Version::V1,
                        dirs: dirs
                            .iter()
                            .map(|(c, base)| (*c, base.join(&name)))
                            .filter(|(_, d)| d.exists())
                            .collect(),
                    })
                    .collect()
            }
            Hierarchy::V2 { dir, .. } => subdirs(dir)
                .into_iter()
                .map(|name| AttemptCgroup { version: Version::V2, dirs: vec![("unified", dir.join(name))] })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// One attempt's cgroup (a directory per v1 controller, or one v2 directory).
#[derive(Debug)]
pub struct AttemptCgroup {
    version: Version,
    dirs: Vec<(&'static str, PathBuf)>,
}

impl AttemptCgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|(c, _)| *c == controller).map(|(_, d)| d.as_path())
    }

    fn apply(&self, limits: &Limits) -> io::Result<()> {
        match self.version {
            Version::V1 => {
                if let Some(mem) = self.dir("memory") {
                    write_file(&mem.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
                    // Where swap accounting is on, swap must not stretch the limit.
                    let memsw = mem.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write_file(&memsw, &limits.memory_bytes.to_string())?;
                    }
                }
                if let Some(pids) = self.dir("pids") {
                    write_file(&pids.join("pids.max"), &limits.pids_max.to_string())?;
                }
                if let Some(cpu) = self.dir("cpu")
                    && limits.cpu_millis > 0
                {
                    write_file(&cpu.join("cpu.cfs_period_us"), "100000")?;
                    write_file(
                        &cpu.join("cpu.cfs_quota_us"),
                        &(u64::from(limits.cpu_millis) * 100).to_string(),
                    )?;
                }
            }
            Version::V2 => {
                let Some(dir) = self.dir("unified") else { return Ok(()) };
                write_file(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write_file(&swap, "0")?;
                }
                write_file(&dir.join("pids.max"), &limits.pids_max.to_string())?;
                if limits.cpu_millis > 0 && dir.join("cpu.max").exists() {
                    write_file(
                        &dir.join("cpu.max"),
                        &format!("{} 100000", u64::from(limits.cpu_millis) * 100),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Opens the files a starting process writes `0` to in order to join this cgroup. Opened
    /// before the fork, so the child only has to `write(2)`.
    pub fn join_files(&self) -> io::Result<Vec<File>> {
        self.dirs.iter().map(|(_, d)| OpenOptions::new().write(true).open(d.join("cgroup.procs"))).collect()
    }

    /// Every process in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|(_, d)| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: i32) {
        for pid in self.pids() {
            super::signal(pid, signal);
        }
    }

    /// Kills every process in the cgroup and waits until it is empty (bounded: a process stuck
    /// in the kernel may take a moment). v2 has `cgroup.kill`; v1 freezes the cgroup first, so
    /// nothing can fork between the listing and the kill. Returns whether it is empty.
    pub fn kill_all(&self) -> bool {
        let kill_file = self.dir("unified").or(self.dir("tracking")).map(|d| d.join("cgroup.kill"));
        for round in 0..200 {
            if self.pids().is_empty() {
                return true;
            }
            match &kill_file {
                Some(kill) if kill.exists() => {
                    let _ = write_file(kill, "1");
                }
                _ => {
                    let freezer = self.dir("freezer").map(|d| d.join("freezer.state"));
                    if let Some(state) = &freezer {
                        let _ = write_file(state, "FROZEN");
                    }
                    self.signal_all(libc::SIGKILL);
                    // A frozen process only dies once thawed.
                    if let Some(state) = &freezer {
                        let _ = write_file(state, "THAWED");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(if round < 20 { 5 } else { 25 }));
        }
        self.pids().is_empty()
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let count = |file: PathBuf, key: &str| -> u64 {
            fs::read_to_string(file)
                .ok()
                .and_then(|text| {
                    text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
                })
                .unwrap_or(0)
        };
        match self.version {
            Version::V1 => self.dir("memory").is_some_and(|d| {
                count(d.join("memory.oom_control"), "oom_kill ") > 0
                    // Kernels before 4.13 have no oom_kill count: the limit was hit and a process died.
                    || count(d.join("memory.oom_control"), "under_oom ") > 0
            }),
            Version::V2 => {
                self.dir("unified").is_some_and(|d| count(d.join("memory.events"), "oom_kill ") > 0)
            }
        }
    }

    /// Peak memory in bytes, where the kernel reports it.
    pub fn peak_memory(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => self.dir("memory")?.join("memory.max_usage_in_bytes"),
            Version::V2 => self.dir("unified")?.join("memory.peak"),
        };
        fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// CPU time its processes used, in milliseconds, where the kernel reports it (v1
    /// `cpuacct.usage` in ns, wherever cpuacct is mounted; v2 `cpu.stat` `usage_usec`).
    pub fn cpu_ms(&self) -> Option<u64> {
        match self.version {
            Version::V1 => {
                let dir = self.dir("cpuacct").or_else(|| self.dir("cpu"))?;
                let ns: u64 = fs::read_to_string(dir.join("cpuacct.usage")).ok()?.trim().parse().ok()?;
                Some(ns / 1_000_000)
            }
            Version::V2 => {
                let stat = fs::read_to_string(self.dir("unified")?.join("cpu.stat")).ok()?;
                let usec =
                    stat.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse::<u64>().ok()?;
                Some(usec / 1000)
            }
        }
    }

    /// Most processes it held at once, where the kernel reports it (`pids.peak`, Linux 6.1+).
    pub fn peak_pids(&self) -> Option<u64> {
        let dir = match self.version {
            Version::V1 => self.dir("pids")?,
            Version::V2 => self.dir("unified")?,
        };
        fs::read_to_string(dir.join("pids.peak")).ok()?.trim().parse().ok()
    }

    /// Removes the cgroup's directories (after [`Self::kill_all`]); a cgroup still holding a
    /// process cannot be removed and is left for the next start's reaping.
    pub fn remove(&self) {
        for (_, dir) in &self.dirs {
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }

    /// The directories, for logs and tests.
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|(_, d)| d.as_path()).collect()
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

/// The node's own cgroup for a v1 `controller`, from `/proc/self/cgroup` (`N:ctrl,ctrl:/path`).
fn own_path_v1(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == controller).then(|| path.to_string())
    })
}

/// The node's own v2 cgroup, from `/proc/self/cgroup` (`0::/path`).
fn own_path_v2(proc_cgroup: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| line.strip_prefix("0::").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_are_read_from_proc_self_cgroup() {
        let text = "12:pids:/a\n4:memory:/process_api/x\n1:cpu,cpuacct:/c\n0::/user.slice/u.service\n";
        assert_eq!(own_path_v1(text, "memory").as_deref(), Some("/process_api/x"));
        assert_eq!(own_path_v1(text, "cpuacct").as_deref(), Some("/c"));
        assert_eq!(own_path_v1(text, "freezer"), None);
        assert_eq!(own_path_v2(text).as_deref(), Some("/user.slice/u.service"));
    }
}
