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
    /// The bridge side of each host's veth.
    links: Vec<String>,
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
        let mut hosts =
            Hosts { bridge: bridge.clone(), names: Vec::new(), links: Vec::new(), ips: Vec::new() };
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
            hosts.links.push(host_if.clone());
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

    /// Host `i`'s cable: `ip link set` on the bridge side of its veth, so the host keeps its own
    /// interface and addresses but nothing reaches it or leaves it.
    pub fn set_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        ip(&["link", "set", &self.links[i], if up { "up" } else { "down" }])
    }

    /// Drops `percent` % of the TCP segments host `i` receives to or from `port` (its p2p port
    /// when every host listens on the same one), chosen at random per packet by nftables
    /// (`numgen random`; this kernel has no netem). Replaces any earlier drop rule on that host.
    pub fn drop_packets(&self, i: usize, port: u16, percent: u8) -> anyhow::Result<()> {
        self.clear_drops(i)?;
        let ns = &self.names[i];
        let nft = |args: &[&str]| -> anyhow::Result<()> {
            let mut all = vec!["netns", "exec", ns, "nft"];
            all.extend_from_slice(args);
            ip(&all)
        };
        nft(&["add", "table", "inet", "orgmesh_chaos"])?;
        nft(&[
            "add",
            "chain",
            "inet",
            "orgmesh_chaos",
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ])?;
        let (port, percent) = (port.to_string(), percent.to_string());
        for dir in ["dport", "sport"] {
            nft(&[
                "add",
                "rule",
                "inet",
                "orgmesh_chaos",
                "input",
                "tcp",
                dir,
                &port,
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &percent,
                "drop",
            ])?;
        }
        Ok(())
    }

    /// Removes host `i`'s drop rules (nothing to do when there are none).
    pub fn clear_drops(&self, i: usize) -> anyhow::Result<()> {
        let ns = &self.names[i];
        let listed = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "list", "tables"])
            .output()
            .context("running nft (nftables)")?;
        if String::from_utf8_lossy(&listed.stdout).contains("orgmesh_chaos") {
            ip(&["netns", "exec", ns, "nft", "delete", "table", "inet", "orgmesh_chaos"])?;
        }
        Ok(())
    }

    /// Cuts hosts `i` and `j` apart, and only them: each drops every packet from the other
    /// (nftables, table `orgmesh_pair`), while both still reach everyone else.
    pub fn cut_pair(&self, i: usize, j: usize) -> anyhow::Result<()> {
        for (at, from) in [(i, j), (j, i)] {
            let ns = &self.names[at];
            let nft = |args: &[&str]| -> anyhow::Result<()> {
                let mut all = vec!["netns", "exec", ns, "nft"];
                all.extend_from_slice(args);
                ip(&all)
            };
            nft(&["add", "table", "inet", "orgmesh_pair"])?;
            let chain = "{ type filter hook input priority 0; policy accept; }";
            nft(&["add", "chain", "inet", "orgmesh_pair", "input", chain])?;
            nft(&["add", "rule", "inet", "orgmesh_pair", "input", "ip", "saddr", &self.ips[from], "drop"])?;
        }
        Ok(())
    }

    /// Whether `nft` can be run (the `nftables` package is installed).
    pub fn have_nft() -> bool {
        Command::new("nft").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
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
