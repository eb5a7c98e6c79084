//! The adversary: a share of the simulated nodes attack the rest (`[byzantine]` in a scenario).
//! An attacker is an honest `Engine` whose outgoing messages are tampered with on their way into
//! the simulated network, plus a misbehaving executor stand-in, plus scripted messages it injects
//! (encoded with `wire::encode` like all traffic). The adversary is omniscient: it reads the world
//! (victims' generations, heartbeats, the attempts on a host) to make its lies as good as they can
//! be. It must never decide anything for an honest node, and never touch an honest engine's state:
//! whatever an attack achieves, it achieves through messages an honest engine receives.

use std::collections::BTreeSet;
use std::sync::Arc;

use orgmesh_protocol::engine::{Request, RequestId, Response};
use orgmesh_protocol::record::{InsecureTestKeyring, SignedRecord};
use orgmesh_protocol::task::Constraints;
use orgmesh_protocol::wire::gossip::{DigestEntry, GossipRequest, GossipResponse, GossipUpdate};
use orgmesh_protocol::wire::place::{BidRequest, BidResponse, PlaceRequest, PlaceResponse};
use orgmesh_protocol::wire::task::TaskResponse;
use orgmesh_protocol::wire::{self, limits};
use orgmesh_protocol::{Attempt, PeerId, RecordVersion, Resources, TaskId, TaskStatus};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Ev, Msg, Proto, World};
use crate::report::{ByzantineReport, FalseDeath};
use crate::scenario::Attack;

/// The requester incarnation of a message the adversary injects: no process has it, so the
/// answer is dropped on arrival (the adversary does not read it) and never reaches the attacker's
/// engine, which did not ask.
pub(super) const ADVERSARY_INC: u32 = u32::MAX;
/// False deaths kept with their time and observer (all are counted).
const MAX_LISTED: usize = 20;

/// What the attackers did and what the honest nodes saw.
#[derive(Debug, Default)]
pub(super) struct Adversary {
    pub(super) attack: Option<Attack>,
    /// Per node: whether it is hostile (also in the baseline, where it behaves).
    pub(super) hostile: Vec<bool>,
    rng: Option<ChaCha8Rng>,
    /// Forged heartbeat entries sent.
    forged_sent: u64,
    /// Offers sent with an inflated score.
    offers_inflated: u64,
    /// Bid requests for made-up tasks sent.
    bids_flooded: u64,
    /// Identities minted and pushed.
    identities_minted: u64,
    /// Foreign stop/cancel entries sent.
    foreign_sent: u64,
    /// Honest tasks with an attempt started on an attacker.
    placed_on_attackers: BTreeSet<TaskId>,
    /// Attempts an attacker was told to stop and ignored, because their origin still counted on them.
    stops_ignored: u64,
    false_deaths: Vec<FalseDeath>,
    false_dead: u64,
    false_suspect: u64,
    next_mint: u64,
    next_bid: u64,
}

impl Adversary {
    /// Draws the attackers for `fraction` of `n` nodes from their own stream, so the same nodes
    /// are hostile in every attack and in the baseline.
    pub(super) fn new(
        attack: Option<Attack>,
        fraction: f64,
        active: bool,
        n: usize,
        mut rng: ChaCha8Rng,
    ) -> Self {
        let mut hostile = vec![false; n];
        if active && fraction > 0.0 {
            let want = ((fraction * n as f64).round() as usize).min(n.saturating_sub(1));
            let mut chosen = 0;
            while chosen < want {
                let i = rng.random_range(0..n);
                if !hostile[i] {
                    hostile[i] = true;
                    chosen += 1;
                }
            }
        }
        Self { attack, hostile, rng: Some(rng), ..Self::default() }
    }

    /// Whether node `i` is hostile and attacking with `attack` (not in the baseline).
    pub(super) fn attacks(&self, i: usize, attack: Attack) -> bool {
        self.attack == Some(attack) && self.hostile.get(i).copied().unwrap_or(false)
    }

    fn is_hostile(&self, i: usize) -> bool {
        self.hostile.get(i).copied().unwrap_or(false)
    }

    /// Whether there is anything to report (a byzantine run or its baseline).
    pub(super) fn active(&self) -> bool {
        self.hostile.iter().any(|&h| h)
    }

    fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng.get_or_insert_with(|| rand::SeedableRng::seed_from_u64(0))
    }
}

impl World {
    /// Schedules each attacker's first injection, for the attacks that inject messages.
    pub(super) fn schedule_adversary(&mut self) {
        let per_s = match self.adv.attack {
            Some(Attack::FloodBids) => self.s.byzantine.bids_per_s,
            Some(Attack::MintIdentities) => self.s.byzantine.pushes_per_s,
            _ => return,
        };
        if per_s <= 0.0 {
            return;
        }
        let start = (self.s.warmup_s * 1e6) as u64;
        let gap = (1e6 / per_s) as u64;
        for i in 0..self.nodes.len() {
            if self.adv.is_hostile(i) {
                // Spread the attackers over one gap so they do not all fire at one instant.
                let offset = self.adv.rng().random_range(0..gap.max(1));
                self.q.push(start + offset, Ev::Adversary { node: i });
            }
        }
    }

    /// One injection by attacker `i`, then the next one.
    pub(super) fn on_adversary(&mut self, i: usize) {
        if self.now >= self.faults_end_us {
            return;
        }
        let per_s = match self.adv.attack {
            Some(Attack::FloodBids) => self.s.byzantine.bids_per_s,
            Some(Attack::MintIdentities) => self.s.byzantine.pushes_per_s,
            _ => return,
        };
        self.q.push(self.now + (1e6 / per_s).max(1.0) as u64, Ev::Adversary { node: i });
        if !self.up(i) {
            return;
        }
        let honest: Vec<usize> = (0..self.nodes.len()).filter(|&j| !self.adv.is_hostile(j)).collect();
        if honest.is_empty() {
            return;
        }
        let to = honest[self.adv.rng().random_range(0..honest.len())];
        let (proto, bytes) = match self.adv.attack {
            Some(Attack::FloodBids) => {
                self.adv.next_bid += 1;
                let wall = self.wall_ms(i);
                let bid = BidRequest {
                    task: TaskId::new(wall, u128::from(self.adv.next_bid) | (1 << 79)),
                    attempt: Attempt(1),
                    origin_org: self.nodes[i].org.clone(),
                    // A small task fits everywhere, so every host reserves for it.
                    resources: Resources { cpu_millis: 100, memory_mb: 64, gpus: 0 },
                    constraints: Constraints::default(),
                };
                self.adv.bids_flooded += 1;
                (Proto::Place, wire::encode(&PlaceRequest::Bid(bid), limits::PLACE))
            }
            Some(Attack::MintIdentities) => {
                let updates = (0..self.s.byzantine.records_per_push).filter_map(|_| self.mint(i)).collect();
                (Proto::Gossip, wire::encode(&GossipRequest::Push { updates }, limits::GOSSIP))
            }
            _ => return,
        };
        let Ok(bytes) = bytes else {
            self.stats.oversized();
            return;
        };
        self.send(Msg {
            from: i,
            to,
            proto,
            id: RequestId(0),
            requester_inc: ADVERSARY_INC,
            sent_at: self.now,
            is_request: true,
            bytes,
        });
    }

    /// A freshly minted identity's record, validly signed (the test keyring signs for any peer
    /// id, as anyone can mint an ed25519 key), claiming the attacker's capacity.
    fn mint(&mut self, i: usize) -> Option<GossipUpdate> {
        let mut record = self.nodes[i].live.as_ref()?.engine.membership().local().clone();
        self.adv.next_mint += 1;
        let n = self.adv.next_mint;
        let tag: String = format!("{n:08}").bytes().map(|d| char::from(b'a' + (d - b'0'))).collect();
        let id = PeerId::new(format!("12D3KooWmint{tag}")).ok()?;
        record.peer_id = id.clone();
        record.name = format!("mint{n}");
        record.version = RecordVersion { generation: self.wall_ms(i), version: 1 };
        let signed = SignedRecord::sign(record, &InsecureTestKeyring::new(id));
        self.adv.identities_minted += 1;
        Some(GossipUpdate { record: Arc::new(signed), heartbeat: 1 })
    }

    /// Tampers with a request attacker `i` is sending.
    pub(super) fn tamper_request(&mut self, i: usize, request: &mut Request) {
        if self.adv.attacks(i, Attack::ForgeHeartbeats)
            && let Request::Gossip(GossipRequest::Syn { digest }) = request
        {
            let forged = self.forged_entries(i);
            digest.extend(forged);
        }
    }

    /// Tampers with an answer attacker `i` is sending to node `to`.
    pub(super) fn tamper_response(&mut self, i: usize, to: usize, response: &mut Response) {
        match response {
            Response::Gossip(GossipResponse::Ack { heartbeats, .. })
                if self.adv.attacks(i, Attack::ForgeHeartbeats) =>
            {
                let forged = self.forged_entries(i);
                heartbeats.extend(forged);
            }
            Response::Place(PlaceResponse::Bid(BidResponse::Offer { score, .. }))
                if self.adv.attacks(i, Attack::BidHighNeverFinish) =>
            {
                *score = u16::MAX;
                self.adv.offers_inflated += 1;
            }
            Response::Task(TaskResponse::Leases { stop, cancel })
                if self.adv.attacks(i, Attack::ForeignLeases) =>
            {
                // Every attempt of another origin on the renewing host: half to stop, half to cancel.
                let Some(live) = self.nodes[to].live.as_ref() else { return };
                let foreign: Vec<(TaskId, Attempt)> = live
                    .processes
                    .keys()
                    .filter(|(task, _)| self.truths.get(task).is_some_and(|t| t.origin != i))
                    .copied()
                    .collect();
                for (k, entry) in foreign.into_iter().enumerate() {
                    self.adv.foreign_sent += 1;
                    if k % 2 == 0 { stop.push(entry) } else { cancel.push(entry) }
                }
            }
            _ => {}
        }
    }

    /// Forged heartbeat entries about honest victims that are up, with their current
    /// generation: a third claim `u64::MAX` (the old freeze), a third lead what the attacker
    /// holds by `lead_beats`, a third relay a stale heartbeat.
    fn forged_entries(&mut self, i: usize) -> Vec<DigestEntry> {
        let n = self.nodes.len();
        let want = self.s.byzantine.forged_per_message;
        let lead = self.s.byzantine.lead_beats;
        let mut out = Vec::with_capacity(want);
        for _ in 0..want.saturating_mul(4) {
            if out.len() >= want {
                break;
            }
            let v = self.adv.rng().random_range(0..n);
            if self.adv.is_hostile(v) {
                continue;
            }
            let Some(version) = self.nodes[v].live.as_ref().map(|l| l.engine.membership().local().version)
            else {
                continue;
            };
            let peer = self.nodes[v].id.clone();
            let held = self.nodes[i]
                .live
                .as_ref()
                .and_then(|l| l.engine.membership().peer(&peer))
                .map_or(0, |p| p.heartbeat);
            let heartbeat = match self.adv.rng().random_range(0..3) {
                0 => u64::MAX,
                1 => held.saturating_add(lead),
                _ => held.saturating_sub(lead),
            };
            out.push(DigestEntry { peer, version, heartbeat });
        }
        self.adv.forged_sent += out.len() as u64;
        out
    }

    /// Whether attacker `i`'s executor never ends this attempt: under `bid_high_never_finish`
    /// it runs forever.
    pub(super) fn never_finishes(&self, i: usize) -> bool {
        self.adv.attacks(i, Attack::BidHighNeverFinish)
    }

    /// Whether attacker `i` ignores a stop of `(task, attempt)`: it does while the origin still
    /// counts on the attempt (stopping would report a result); once the origin has moved on,
    /// stopping frees the slot to capture another task.
    pub(super) fn ignores_stop(&mut self, i: usize, task: TaskId, attempt: Attempt) -> bool {
        if !self.never_finishes(i) {
            return false;
        }
        let counted_on = self.truths.get(&task).is_some_and(|t| {
            self.nodes[t.origin]
                .store
                .tasks
                .get(&task)
                .is_some_and(|o| o.attempt == attempt && !o.status.is_terminal())
        });
        if counted_on {
            self.adv.stops_ignored += 1;
        }
        counted_on
    }

    /// An attempt of `task` started on node `i`.
    pub(super) fn attempt_started(&mut self, i: usize, task: TaskId) {
        if self.adv.is_hostile(i) && self.truths.get(&task).is_some_and(|t| !self.adv.is_hostile(t.origin)) {
            self.adv.placed_on_attackers.insert(task);
        }
    }

    /// Honest observer `i` judged `peer`, an honest process that is up, `suspect` or `dead`.
    pub(super) fn verdict(&mut self, i: usize, peer: &PeerId, dead: bool) {
        if !self.adv.active() || self.adv.is_hostile(i) {
            return;
        }
        let Some(&v) = self.index.get(peer) else { return };
        if self.adv.is_hostile(v) || !self.process_judged_is_up(i, peer) {
            return;
        }
        if !dead {
            self.adv.false_suspect += 1;
            return;
        }
        self.adv.false_dead += 1;
        if self.adv.false_deaths.len() < MAX_LISTED {
            self.adv.false_deaths.push(FalseDeath { observer: i, victim: v, time_s: self.now as f64 / 1e6 });
        }
    }

    /// The byzantine section of the report, if this run has attackers (or is their baseline).
    pub(super) fn byzantine_report(&self) -> Option<ByzantineReport> {
        if !self.adv.active() {
            return None;
        }
        let hostile = |i: usize| self.adv.is_hostile(i);
        let (mut honest_tasks, mut lost, mut never_terminal) = (0u64, 0u64, 0u64);
        let (mut waits, mut useful_waits, mut completions) = (Vec::new(), Vec::new(), Vec::new());
        let mut lost_tasks = Vec::new();
        for (id, t) in &self.truths {
            if hostile(t.origin) {
                continue;
            }
            honest_tasks += 1;
            let status = self.nodes[t.origin].store.tasks.get(id).map(|o| o.status);
            if status != Some(TaskStatus::Succeeded) {
                lost += 1;
                if !status.is_some_and(|s| s.is_terminal()) {
                    never_terminal += 1;
                }
                if lost_tasks.len() < MAX_LISTED {
                    lost_tasks.push(format!("{id} (origin n{}): {status:?}", t.origin));
                }
            }
            if let Some(start) = t.first_start_us {
                waits.push(start - t.submitted_us);
            }
            if let Some((attempt, at)) = t.result {
                completions.push(at.saturating_sub(t.submitted_us));
                if let Some(&start) = t.starts.get(&attempt) {
                    useful_waits.push(start - t.submitted_us);
                }
            }
        }
        let mut counters = orgmesh_protocol::engine::EngineCounters::default();
        for (i, n) in self.nodes.iter().enumerate() {
            if hostile(i) {
                continue;
            }
            let live = n.live.as_ref().map(|l| l.engine.counters()).unwrap_or_default();
            counters.forged_heartbeats += n.counters.forged_heartbeats + live.forged_heartbeats;
            counters.foreign_entries += n.counters.foreign_entries + live.foreign_entries;
            counters.attempts_overdue += n.counters.attempts_overdue + live.attempts_overdue;
            counters.attempts_expired += n.counters.attempts_expired + live.attempts_expired;
        }
        let known: Vec<u64> = (0..self.nodes.len())
            .filter(|&i| !hostile(i))
            .filter_map(|i| self.nodes[i].live.as_ref().map(|l| l.engine.membership().peers().len() as u64))
            .collect();
        let a = &self.adv;
        Some(ByzantineReport::build(crate::report::ByzantineInputs {
            attack: if self.s.byzantine.honest { None } else { a.attack },
            attackers: a.hostile.iter().filter(|&&h| h).count() as u64,
            honest_tasks,
            lost,
            never_terminal,
            lost_tasks,
            false_dead: a.false_dead,
            false_suspect: a.false_suspect,
            false_deaths: a.false_deaths.clone(),
            waits,
            useful_waits,
            completions,
            placed_on_attackers: a.placed_on_attackers.len() as u64,
            stops_ignored: a.stops_ignored,
            forged_sent: a.forged_sent,
            offers_inflated: a.offers_inflated,
            bids_flooded: a.bids_flooded,
            identities_minted: a.identities_minted,
            foreign_sent: a.foreign_sent,
            counters,
            peers_known_max: known.iter().copied().max().unwrap_or(0),
            peers_known_mean: if known.is_empty() {
                0.0
            } else {
                known.iter().sum::<u64>() as f64 / known.len() as f64
            },
        }))
    }
}
