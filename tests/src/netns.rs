//! Test hosts of our own: network namespaces on one bridge, each with its own address, so that
//! what crosses a network (source addresses, partitions) is real. Needs root; everything it makes
//! is removed when dropped. Addresses come from 198.18.0.0/15 (reserved for benchmarking), never
//! from a range that could be someone else's.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// A set of hosts on one bridge.
#[derive(Debug)]
pub struct Hosts {
    bridge: String,
    names: Vec<String>,
    /// Each host's address.
    pub ips: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Hosts {
    /// Creates `n` hosts. Names and the subnet are unique per process and call, so concurrent
    /// tests do not collide.
    pub fn create(n: usize) -> anyhow::Result<Hosts> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() % 1000) * 10 + seq % 10;
        // 198.18.0.0/15: one /24 per (process, call).
        let (hi, lo) = (18 + (id / 256) % 2, id % 256);
        let bridge = format!("omb{id}");
        let mut hosts = Hosts { bridge: bridge.clone(), names: Vec::new(), ips: Vec::new() };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("198.{hi}.{lo}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let name = format!("om{id}h{i}");
            let (host_if, ns_if) = (format!("om{id}v{i}"), format!("om{id}p{i}"));
            let addr = format!("198.{hi}.{lo}.{}", 10 + i);
            ip(&["netns", "add", &name])?;
            hosts.names.push(name.clone());
            ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
            ip(&["link", "set", &ns_if, "netns", &name])?;
            ip(&["link", "set", &host_if, "master", &bridge, "up"])?;
            ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{addr}/24"), "dev", &ns_if])?;
            ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
            ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
            hosts.ips.push(addr);
        }
        Ok(hosts)
    }

    /// The namespace name of host `i`.
    pub fn netns(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
