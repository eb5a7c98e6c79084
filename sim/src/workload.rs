//! The workload: task arrivals (Poisson at the rate a target load implies, or a CSV trace), and
//! the omniscient scheduler the simulated mesh is compared with on the same arrivals.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use anyhow::Context;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Duration, Scenario};

/// One task submission.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrival {
    /// When, simulated microseconds.
    pub at_us: u64,
    /// CPU.
    pub cpu_millis: u32,
    /// Memory.
    pub memory_mb: u64,
    /// How long it runs once started.
    pub duration_us: u64,
    /// Index of the org it is constrained to, if any.
    pub org: Option<usize>,
    /// The label it requires, if any.
    pub label: Option<(String, String)>,
    /// Picks the origin among the nodes up at arrival time.
    pub pick: u64,
    /// Bytes the task prints (its whole output, for an attempt that runs to the end).
    pub output_bytes: u64,
    /// Its origin is asked to cancel it this long after submission, if at all.
    pub cancel_after_us: Option<u64>,
}

/// Shortest and longest output a task prints: small, so that every task's log goes through the
/// host's spool, `Log` reports and the origin's store, but never near the wire's chunk limit.
pub const OUTPUT_BYTES: (u64, u64) = (200, 4096);

/// Draws each arrival's output size and whether (and when) it is cancelled, from a stream of
/// its own so that neither changes the arrivals themselves. A cancel comes between 1 s and the
/// task's duration plus 5 s after submission: while it waits, runs, or (then it is refused)
/// after it ended.
pub fn outputs_and_cancels(s: &Scenario, arrivals: &mut [Arrival], rng: &mut ChaCha8Rng) {
    for a in arrivals {
        a.output_bytes = rng.random_range(OUTPUT_BYTES.0..=OUTPUT_BYTES.1);
        let cancel = rng.random::<f64>() < s.workload.cancel_fraction;
        let after_us = 1_000_000 + (rng.random::<f64>() * (a.duration_us + 4_000_000) as f64) as u64;
        a.cancel_after_us = cancel.then_some(after_us);
    }
}

/// What the workload generator needs to know about a node.
#[derive(Clone, Debug)]
pub struct NodeShape {
    /// CPU.
    pub cpu_millis: u32,
    /// Memory.
    pub memory_mb: u64,
    /// Slots.
    pub slots: u32,
    /// Org index.
    pub org: usize,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl NodeShape {
    fn eligible(&self, a: &Arrival) -> bool {
        a.org.is_none_or(|o| o == self.org)
            && a.label.as_ref().is_none_or(|(k, v)| self.labels.get(k) == Some(v))
            && self.cpu_millis >= a.cpu_millis
            && self.memory_mb >= a.memory_mb
            && self.slots >= 1
    }
}

fn weighted<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T], weight: impl Fn(&T) -> f64) -> &'a T {
    let total: f64 = items.iter().map(&weight).sum();
    let mut x = rng.random::<f64>() * total;
    for item in items {
        x -= weight(item);
        if x < 0.0 {
            return item;
        }
    }
    &items[items.len() - 1]
}

fn draw_duration(rng: &mut ChaCha8Rng, d: &Duration) -> f64 {
    match *d {
        Duration::Exponential { mean_s } => -mean_s * (1.0 - rng.random::<f64>()).ln(),
        Duration::Uniform { min_s, max_s } => min_s + (max_s - min_s) * rng.random::<f64>(),
        Duration::Lognormal { median_s, sigma } => {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            median_s * (sigma * z).exp()
        }
    }
}

/// The Poisson arrival rate (tasks per second) that offers `load` of the mesh's capacity on its
/// scarcest resource (CPU, memory or slots).
pub fn arrival_rate(s: &Scenario, nodes: &[NodeShape]) -> f64 {
    let total_w: f64 = s.workload.shapes.iter().map(|x| x.weight).sum();
    let cpu: f64 =
        s.workload.shapes.iter().map(|x| x.weight * f64::from(x.cpu_millis)).sum::<f64>() / total_w;
    let mem: f64 = s.workload.shapes.iter().map(|x| x.weight * x.memory_mb as f64).sum::<f64>() / total_w;
    let sum_cpu: f64 = nodes.iter().map(|n| f64::from(n.cpu_millis)).sum();
    let sum_mem: f64 = nodes.iter().map(|n| n.memory_mb as f64).sum();
    let sum_slots: f64 = nodes.iter().map(|n| f64::from(n.slots)).sum();
    let per_task = (cpu / sum_cpu).max(mem / sum_mem).max(1.0 / sum_slots);
    s.workload.load / (s.workload.duration.mean_s() * per_task)
}

/// All arrivals of a run, between the end of warm-up and `duration_s`.
pub fn arrivals(s: &Scenario, nodes: &[NodeShape], rng: &mut ChaCha8Rng) -> anyhow::Result<Vec<Arrival>> {
    let start_us = (s.warmup_s * 1e6) as u64;
    let end_us = (s.duration_s * 1e6) as u64;
    if let Some(path) = &s.workload.trace {
        return trace(path, s, start_us, end_us, rng);
    }
    let rate = arrival_rate(s, nodes);
    let w = &s.workload;
    let mut out = Vec::new();
    let mut t = start_us as f64;
    if rate <= 0.0 || w.shapes.is_empty() {
        return Ok(out);
    }
    loop {
        t += -(1.0 - rng.random::<f64>()).ln() / rate * 1e6;
        if t >= end_us as f64 {
            break;
        }
        let shape = weighted(rng, &w.shapes, |x| x.weight);
        let duration_us = (draw_duration(rng, &w.duration) * 1e6).max(1000.0) as u64;
        let org = (rng.random::<f64>() < w.org_constrained).then(|| rng.random_range(0..s.orgs.len().max(1)));
        let label =
            (!w.label_constraints.is_empty() && rng.random::<f64>() < w.label_constrained).then(|| {
                let l = &w.label_constraints[rng.random_range(0..w.label_constraints.len())];
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                (k.to_owned(), v.to_owned())
            });
        out.push(Arrival {
            at_us: t as u64,
            cpu_millis: shape.cpu_millis,
            memory_mb: shape.memory_mb,
            duration_us,
            org,
            label,
            pick: rng.random(),
            output_bytes: 0,
            cancel_after_us: None,
        });
    }
    Ok(out)
}

fn trace(
    path: &str,
    s: &Scenario,
    start_us: u64,
    end_us: u64,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<Vec<Arrival>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read trace {path}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("at_s") {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = || format!("{path}:{}: expected at_s,cpu_millis,memory_mb,duration_s[,org][,label]", n + 1);
        if f.len() < 4 {
            anyhow::bail!(bad());
        }
        let at_us = start_us + (f[0].parse::<f64>().with_context(bad)? * 1e6) as u64;
        if at_us >= end_us {
            continue;
        }
        let org = f.get(4).filter(|o| !o.is_empty()).and_then(|o| s.orgs.iter().position(|x| x == o));
        let label = f.get(5).filter(|l| !l.is_empty()).map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_owned(), v.to_owned())
        });
        out.push(Arrival {
            at_us,
            cpu_millis: f[1].parse().with_context(bad)?,
            memory_mb: f[2].parse().with_context(bad)?,
            duration_us: (f[3].parse::<f64>().with_context(bad)? * 1e6) as u64,
            org,
            label,
            pick: rng.random(),
            output_bytes: 0,
            cancel_after_us: None,
        });
    }
    out.sort_by_key(|a| a.at_us);
    Ok(out)
}

/// What the omniscient scheduler achieved.
#[derive(Debug, Default)]
pub struct Omniscient {
    /// Start time of each arrival, `None` if never started (fits nowhere).
    pub start_us: Vec<Option<u64>>,
    /// CPU-microseconds used inside `[from, to)`.
    pub cpu_us_in_window: f64,
}

/// Places every arrival the instant it arrives (or the instant capacity frees) on the best-fit
/// node, seeing every node's true free capacity; never fails, never waits for the network.
pub fn omniscient(arrivals: &[Arrival], nodes: &[NodeShape], window: (u64, u64)) -> Omniscient {
    let mut free: Vec<(u32, u64, u32)> = nodes.iter().map(|n| (n.cpu_millis, n.memory_mb, n.slots)).collect();
    let mut ends: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut out = Omniscient { start_us: vec![None; arrivals.len()], cpu_us_in_window: 0.0 };
    let best_fit = |free: &[(u32, u64, u32)], a: &Arrival| -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        for (i, n) in nodes.iter().enumerate() {
            let f = free[i];
            if !n.eligible(a) || f.2 == 0 || f.0 < a.cpu_millis || f.1 < a.memory_mb {
                continue;
            }
            // Tightest fit: least idle once the task is in.
            let idle = (f64::from(f.0 - a.cpu_millis) / f64::from(n.cpu_millis.max(1))
                + (f.1 - a.memory_mb) as f64 / n.memory_mb.max(1) as f64
                + f64::from(f.2 - 1) / f64::from(n.slots.max(1)))
                / 3.0;
            if best.is_none_or(|(b, _)| idle < b) {
                best = Some((idle, i));
            }
        }
        best.map(|(_, i)| i)
    };
    let mut start =
        |k: usize, i: usize, now: u64, free: &mut Vec<(u32, u64, u32)>, ends: &mut BinaryHeap<_>| {
            let a = &arrivals[k];
            free[i].0 -= a.cpu_millis;
            free[i].1 -= a.memory_mb;
            free[i].2 -= 1;
            out.start_us[k] = Some(now);
            let end = now + a.duration_us;
            let overlap = end.min(window.1).saturating_sub(now.max(window.0));
            out.cpu_us_in_window += f64::from(a.cpu_millis) * overlap as f64;
            ends.push(Reverse((end, k, i)));
        };
    let mut next = 0;
    loop {
        let next_end = ends.peek().map(|Reverse((t, _, _))| *t);
        let next_arrival = arrivals.get(next).map(|a| a.at_us);
        match (next_arrival, next_end) {
            (None, None) => break,
            (Some(at), end) if end.is_none_or(|e| at < e) => {
                let a = &arrivals[next];
                match best_fit(&free, a) {
                    Some(i) => start(next, i, at, &mut free, &mut ends),
                    None if nodes.iter().any(|n| n.eligible(a)) => queue.push_back(next),
                    None => {}
                }
                next += 1;
            }
            (_, Some(now)) => {
                let Some(Reverse((_, k, i))) = ends.pop() else { break };
                let a = &arrivals[k];
                free[i].0 += a.cpu_millis;
                free[i].1 += a.memory_mb;
                free[i].2 += 1;
                // Backfill: whatever waits and fits now starts now, oldest first.
                let mut rest = VecDeque::new();
                while let Some(q) = queue.pop_front() {
                    match best_fit(&free, &arrivals[q]) {
                        Some(j) => start(q, j, now, &mut free, &mut ends),
                        None => rest.push_back(q),
                    }
                }
                queue = rest;
            }
            (Some(_), None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn shapes(n: usize) -> Vec<NodeShape> {
        (0..n)
            .map(|i| NodeShape {
                cpu_millis: 4000,
                memory_mb: 8192,
                slots: 4,
                org: i % 3,
                labels: BTreeMap::new(),
            })
            .collect()
    }

    #[test]
    fn poisson_rate_matches_the_target_load() {
        let s = Scenario { duration_s: 1015.0, warmup_s: 15.0, ..Scenario::default() };
        let nodes = shapes(100);
        // 400 slots, 1000-millicore tasks on 4000-millicore nodes: CPU and slots bind equally.
        let rate = arrival_rate(&s, &nodes);
        assert!((rate - 0.5 * 400.0 / 20.0).abs() < 1e-9, "{rate}");
        let a = arrivals(&s, &nodes, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        let got = a.len() as f64 / 1000.0;
        assert!((got - rate).abs() / rate < 0.05, "{got} vs {rate}");
    }

    #[test]
    fn cancels_come_at_the_share_asked_and_outputs_stay_in_their_bounds() {
        let mut s = Scenario { duration_s: 1015.0, warmup_s: 15.0, ..Scenario::default() };
        let mut a = arrivals(&s, &shapes(100), &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        outputs_and_cancels(&s, &mut a, &mut ChaCha8Rng::seed_from_u64(4));
        assert!(a.iter().all(|a| a.cancel_after_us.is_none()), "no cancels by default");
        s.workload.cancel_fraction = 0.1;
        outputs_and_cancels(&s, &mut a, &mut ChaCha8Rng::seed_from_u64(4));
        let share = a.iter().filter(|a| a.cancel_after_us.is_some()).count() as f64 / a.len() as f64;
        assert!((share - 0.1).abs() < 0.02, "{share}");
        assert!(a.iter().all(|a| (OUTPUT_BYTES.0..=OUTPUT_BYTES.1).contains(&a.output_bytes)));
        assert!(a.iter().filter_map(|a| a.cancel_after_us).all(|c| c >= 1_000_000));
    }

    #[test]
    fn omniscient_queues_only_when_full() {
        let nodes = shapes(1)[..1].to_vec();
        let task = |at_s: u64| Arrival {
            at_us: at_s * 1_000_000,
            cpu_millis: 1000,
            memory_mb: 1,
            duration_us: 10_000_000,
            org: None,
            label: None,
            pick: 0,
            output_bytes: 0,
            cancel_after_us: None,
        };
        let a: Vec<Arrival> = (0..5).map(|_| task(1)).collect();
        let o = omniscient(&a, &nodes, (0, u64::MAX));
        assert_eq!(o.start_us[..4], [Some(1_000_000); 4]);
        assert_eq!(o.start_us[4], Some(11_000_000), "the fifth waits for the first slot to free");
    }
}
