//! The virtual network: per-region-pair base latency plus log-normal jitter, a serialization
//! delay on each sender's uplink (messages queue behind each other), random loss, and partitions.
//! It decides *when* (or whether) a message arrives; what a message means is the node's business.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::NetworkSection;

/// What became of a message handed to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transit {
    /// It arrives at this time (microseconds).
    Arrives(u64),
    /// It is lost (dropped at random, or the two ends are partitioned).
    Lost,
}

/// The links between all nodes.
#[derive(Debug)]
pub struct Network {
    config: NetworkSection,
    /// One-way base latency per region pair, microseconds.
    base_us: Vec<Vec<f64>>,
    region_of: Vec<usize>,
    /// When each node's uplink is next free.
    uplink_free_at: Vec<u64>,
    /// Partition side of each node; nodes talk only within a side.
    side: Vec<u8>,
    rng: ChaCha8Rng,
}

impl Network {
    /// `region_of[i]` is node `i`'s region; `regions` how many there are.
    pub fn new(config: NetworkSection, regions: usize, region_of: Vec<usize>, rng: ChaCha8Rng) -> Self {
        let base_us = (0..regions)
            .map(|a| {
                (0..regions)
                    .map(|b| {
                        let ms =
                            config.latency_ms.get(a).and_then(|row| row.get(b)).copied().unwrap_or(
                                if a == b { config.intra_region_ms } else { config.inter_region_ms },
                            );
                        ms * 1000.0
                    })
                    .collect()
            })
            .collect();
        let n = region_of.len();
        Self { config, base_us, region_of, uplink_free_at: vec![0; n], side: vec![0; n], rng }
    }

    /// Sends `bytes` from `from` to `to` at `now`.
    pub fn send(&mut self, from: usize, to: usize, bytes: usize, now: u64) -> Transit {
        // The sender serializes whatever happens next, so its uplink is busy either way.
        let bits = (bytes as f64) * 8.0;
        let serialize_us =
            if self.config.bandwidth_mbps > 0.0 { bits / self.config.bandwidth_mbps } else { 0.0 };
        let start = self.uplink_free_at[from].max(now);
        let done = start + serialize_us.ceil() as u64;
        self.uplink_free_at[from] = done;
        let lost = self.config.loss > 0.0 && self.rng.random::<f64>() < self.config.loss;
        if lost || self.cut(from, to) {
            return Transit::Lost;
        }
        Transit::Arrives(done + self.latency_us(from, to))
    }

    /// One-way latency of a message between two nodes (without serialization).
    pub fn latency_us(&mut self, from: usize, to: usize) -> u64 {
        let base = self.base_us[self.region_of[from]][self.region_of[to]];
        let jitter = if self.config.jitter_ms > 0.0 {
            // Log-normal: median `jitter_ms`, Box-Muller for the normal draw.
            let (u1, u2): (f64, f64) = (self.rng.random::<f64>().max(1e-12), self.rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            self.config.jitter_ms * 1000.0 * (self.config.jitter_sigma * z).exp()
        } else {
            0.0
        };
        (base + jitter).round().max(1.0) as u64
    }

    /// Whether a partition separates the two nodes.
    pub fn cut(&self, a: usize, b: usize) -> bool {
        self.side[a] != self.side[b]
    }

    /// Opens a partition: `cut_off` nodes on one side, everyone else on the other.
    pub fn partition(&mut self, cut_off: &[usize]) {
        self.side.iter_mut().for_each(|s| *s = 0);
        for &i in cut_off {
            self.side[i] = 1;
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
    }

    /// The request timeout, microseconds.
    pub fn request_timeout_us(&self) -> u64 {
        self.config.request_timeout_ms * 1000
    }

    /// Node `i`'s region.
    pub fn region(&self, i: usize) -> usize {
        self.region_of[i]
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn net(config: NetworkSection) -> Network {
        Network::new(config, 2, vec![0, 0, 1], ChaCha8Rng::seed_from_u64(1))
    }

    #[test]
    fn latency_is_base_plus_jitter_per_region_pair() {
        let config = NetworkSection { jitter_ms: 0.0, ..NetworkSection::default() };
        let mut n = net(config);
        assert_eq!(n.latency_us(0, 1), 500);
        assert_eq!(n.latency_us(0, 2), 30_000);
        let mut n = net(NetworkSection { jitter_ms: 2.0, jitter_sigma: 0.5, ..NetworkSection::default() });
        let samples: Vec<u64> = (0..2000).map(|_| n.latency_us(0, 2) - 30_000).collect();
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        assert!((1800..2200).contains(&median), "median jitter {median} us");
        assert!(sorted[0] > 0 && sorted[sorted.len() - 1] < 20_000);
    }

    #[test]
    fn uplink_serializes_messages_in_turn() {
        // 8 Mbit/s: 1000 bytes take 1 ms on the wire.
        let config = NetworkSection { jitter_ms: 0.0, bandwidth_mbps: 8.0, ..NetworkSection::default() };
        let mut n = net(config);
        assert_eq!(n.send(0, 1, 1000, 0), Transit::Arrives(1000 + 500));
        assert_eq!(n.send(0, 1, 1000, 0), Transit::Arrives(2000 + 500), "queued behind the first");
        assert_eq!(n.send(1, 0, 1000, 0), Transit::Arrives(1000 + 500), "another uplink is free");
        assert_eq!(n.send(0, 1, 1000, 10_000), Transit::Arrives(11_000 + 500), "idle uplink");
    }

    #[test]
    fn loss_and_partitions() {
        let mut n = net(NetworkSection { loss: 0.25, ..NetworkSection::default() });
        let lost = (0..4000).filter(|_| n.send(0, 1, 10, 0) == Transit::Lost).count();
        assert!((800..1200).contains(&lost), "{lost} of 4000 lost");

        let mut n = net(NetworkSection::default());
        n.partition(&[2]);
        assert_eq!(n.send(0, 2, 10, 0), Transit::Lost);
        assert_eq!(n.send(2, 1, 10, 0), Transit::Lost);
        assert!(matches!(n.send(0, 1, 10, 0), Transit::Arrives(_)));
        n.heal();
        assert!(matches!(n.send(0, 2, 10, 0), Transit::Arrives(_)));
    }
}
