//! One attempt's sandbox once it is set up: the handle the executor starts, signals, kills and
//! finally releases. Teardown happens exactly once, on `release` or on drop, and gives the uid
//! back only when nothing runs as it any more. Never decides when an attempt stops.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::cgroup::AttemptCgroup;
use super::{Sandbox, net, signal, unmount};

/// One attempt's sandbox, set up and ready to start. [`Confined::release`] tears it down: every
/// process killed, the cgroup removed, the work dir unmounted, the uid given back. Dropping it
/// without `release` releases it too.
#[derive(Debug)]
pub struct Confined {
    pub(super) sandbox: Arc<Sandbox>,
    pub(super) uid: u32,
    /// Held while the attempt runs: its claim on `uid` host-wide.
    pub(super) uid_lock: Option<fs::File>,
    pub(super) cgroup: Option<AttemptCgroup>,
    pub(super) work_dir: PathBuf,
    pub(super) mounted: bool,
    /// `outbound`: the pipes to bubblewrap, until [`Confined::start_network`].
    pub(super) pending: Option<net::Pending>,
    /// `outbound`: the attempt's slirp4netns, once started.
    pub(super) slirp: Mutex<Option<net::Slirp>>,
    /// The command that starts the attempt (stdio still to be set by the caller).
    pub command: Command,
}

impl Confined {
    /// The attempt's uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Takes the command out, to be started by the caller (as a tokio command, say); the
    /// sandbox stays set up until released.
    pub fn take_command(&mut self) -> Command {
        std::mem::replace(&mut self.command, Command::new("/bin/false"))
    }

    /// Once the command is spawned: gives the attempt its network and lets the task start. Only
    /// `outbound` has anything to do here (slirp4netns, up to 10 s); the other modes return at
    /// once. Blocking. On an error the caller must kill the attempt (its task would otherwise run
    /// with loopback only, never with more).
    pub fn start_network(&mut self) -> Result<(), net::NetworkError> {
        let Some(pending) = self.pending.take() else { return Ok(()) };
        let join = match &self.cgroup {
            Some(cgroup) => cgroup.join_files()?,
            None => Vec::new(),
        };
        let slirp = pending.start(&self.sandbox.policy.slirp4netns, join)?;
        *self.slirp.lock().unwrap_or_else(|e| e.into_inner()) = Some(slirp);
        Ok(())
    }

    /// The pid of the attempt's slirp4netns while it runs (`outbound` only).
    pub fn slirp4netns_pid(&self) -> Option<u32> {
        self.slirp.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(net::Slirp::pid)
    }

    /// Ends the attempt's slirp4netns, if any, and reaps it.
    fn stop_network(&self) {
        if let Some(mut slirp) = self.slirp.lock().unwrap_or_else(|e| e.into_inner()).take() {
            slirp.stop();
        }
    }

    /// The attempt's cgroup.
    pub fn cgroup(&self) -> Option<&AttemptCgroup> {
        self.cgroup.as_ref()
    }

    /// Sends `signal` to every process of the attempt.
    pub fn signal_all(&self, signal: i32) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal_all(signal);
        }
    }

    /// Sends `signal` to the task's own processes, those running as the attempt's uid, and not to
    /// the sandbox's (bubblewrap, slirp4netns: root). A SIGTERM to bubblewrap would kill it, and
    /// with it the PID namespace and the task, before the task could wind down.
    pub fn signal_task(&self, sig: i32) {
        let Some(cgroup) = &self.cgroup else { return };
        for pid in cgroup.pids() {
            if uid_of(pid) == Some(self.uid) {
                signal(pid, sig);
            }
        }
    }

    /// Kills every process of the attempt, its slirp4netns included; returns whether none is left.
    pub fn kill_all(&self) -> bool {
        self.stop_network();
        self.cgroup.as_ref().is_none_or(AttemptCgroup::kill_all)
    }

    /// Whether the attempt ran out of memory.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(AttemptCgroup::oom_killed)
    }

    /// Tears the sandbox down. Blocking (cgroup and mount work): call it off the async threads.
    pub fn release(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        self.pending = None;
        self.stop_network();
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.kill_all();
            cgroup.remove();
        }
        if self.mounted {
            unmount(&self.work_dir);
            self.mounted = false;
        }
        if self.uid != 0 {
            // Only once nothing runs as the uid may another attempt have it.
            self.uid_lock = None;
            self.sandbox.give_back_uid(self.uid);
            self.uid = 0;
        }
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The real uid of process `pid`, if it still exists.
fn uid_of(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}
