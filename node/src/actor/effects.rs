//! The engine's outputs, carried out: messages onto the swarm, answers onto their streams,
//! writes into the store (reported back once durable when the engine waits for them), attempts
//! into the executor, spool reads, and events into the event log and the logs. Decides nothing:
//! every choice was the engine's.

use orgmesh_protocol::engine::{Event, Input, Output, Persisted, Request, Response, Write, WriteId};
use orgmesh_protocol::membership::{MembershipEvent, PeerState, RejectReason};
use orgmesh_protocol::{Attempt, PeerId, TaskId};
use orgmesh_store::{AppendError, NewEvent, Pending};
use tokio_util::sync::CancellationToken;

use super::network::{Channel, Protocol};
use super::{EventLoop, guard};
use crate::executor::{self, ExecRequest};
use crate::identity::to_libp2p;

impl EventLoop {
    /// Carries out everything the engine asked for, until it asks for nothing more.
    pub(super) fn apply_outputs(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Send { to, id, request } => self.send(&to, id, request),
                Output::Respond { reply, response } => self.respond(reply, response),
                Output::Persist { id, write } => self.persist(id, write),
                Output::StartAttempt { origin, task, attempt, spec } => {
                    self.start_attempt(&origin, task, attempt, *spec);
                }
                Output::StopAttempt { task, attempt } => {
                    if let Some(token) = self.attempts.get(&(task, attempt)) {
                        token.cancel();
                    }
                }
                Output::ReadLog { task, attempt, offset, max } => {
                    let data = self.read_spool(task, attempt, offset, max);
                    let now = self.now();
                    self.feed(Input::LogRead { task, attempt, offset, data }, now);
                }
                Output::ForgetAttempt { task, attempt } => {
                    self.readers.remove(&(task, attempt));
                    // One still running keeps writing its (then unlinked) spool until it ends.
                    self.facts.spool.remove(task, attempt);
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn send(&mut self, to: &PeerId, id: orgmesh_protocol::engine::RequestId, request: Request) {
        let Some(p2p) = to_libp2p(to) else {
            let now = self.now();
            return self.feed(Input::RequestFailed { id }, now);
        };
        let behaviour = self.swarm.behaviour_mut();
        let (protocol, libp2p_id) = match request {
            Request::Gossip(request) => {
                self.metrics.gossip_sent(&request);
                (Protocol::Gossip, behaviour.gossip.send_request(&p2p, request))
            }
            Request::Place(request) => (Protocol::Place, behaviour.place.send_request(&p2p, request)),
            Request::Task(request) => (Protocol::Task, behaviour.task.send_request(&p2p, request)),
            Request::Receipt(request) => (Protocol::Receipt, behaviour.receipt.send_request(&p2p, request)),
        };
        self.sent(protocol, libp2p_id, id);
    }

    fn respond(&mut self, reply: orgmesh_protocol::engine::ReplyId, response: Option<Response>) {
        let Some(channel) = self.channels.remove(&reply) else { return };
        // No response: dropping the channel makes the peer retry.
        let Some(response) = response else { return };
        let behaviour = self.swarm.behaviour_mut();
        let sent = match (channel, response) {
            (Channel::Gossip(ch), Response::Gossip(r)) => behaviour.gossip.send_response(ch, r).is_ok(),
            (Channel::Place(ch), Response::Place(r)) => behaviour.place.send_response(ch, r).is_ok(),
            (Channel::Task(ch), Response::Task(r)) => behaviour.task.send_response(ch, r).is_ok(),
            (Channel::Receipt(ch), Response::Receipt(r)) => behaviour.receipt.send_response(ch, r).is_ok(),
            (_, response) => {
                tracing::error!(?response, "an answer for another protocol's stream; dropped");
                false
            }
        };
        if !sent {
            tracing::debug!("the peer closed the stream before its answer");
        }
    }

    fn persist(&mut self, id: Option<WriteId>, write: Write) {
        match write {
            Write::Task { task, status_changed } => {
                let events = if status_changed { vec![crate::events::task_event(&task)] } else { Vec::new() };
                let pending = self.store.put_task(*task, events);
                self.when_durable(id, pending, |r| r.map_or(Persisted::Failed, |()| Persisted::Done));
            }
            Write::Log { task, at, data } => {
                let pending = self.store.append_log(task, at, data);
                self.when_durable(id, pending, |r| match r {
                    Ok(Ok(len)) => Persisted::Log { len },
                    Ok(Err(AppendError::Gap { have, .. })) => Persisted::LogGap { have },
                    Ok(Err(_)) | Err(_) => Persisted::Failed,
                });
            }
            Write::Run(record) => {
                let pending = self.store.put_run(super::recovery::hosted(record));
                self.when_durable(id, pending, |r| r.map_or(Persisted::Failed, |()| Persisted::Done));
            }
            Write::RemoveRun { task, attempt } => {
                let pending = self.store.remove_run(task, attempt);
                self.when_durable(id, pending, |r| r.map_or(Persisted::Failed, |()| Persisted::Done));
            }
            Write::Peer(record) => {
                let pending = self.store.put_peer(*record);
                self.when_durable(id, pending, |r| r.map_or(Persisted::Failed, |()| Persisted::Done));
            }
            Write::ForgetPeer(peer) => {
                let pending = self.store.remove_peer(&peer);
                self.when_durable(id, pending, |r| r.map_or(Persisted::Failed, |()| Persisted::Done));
            }
        }
    }

    /// Reports `pending`'s result to the engine once committed, if the engine waits for it.
    fn when_durable<T: Send + 'static>(
        &mut self,
        id: Option<WriteId>,
        pending: Pending<T>,
        result: fn(Result<T, orgmesh_store::StoreError>) -> Persisted,
    ) {
        let Some(id) = id else { return };
        self.completions.push(Box::pin(async move { (id, result(pending.await)) }));
    }

    fn start_attempt(
        &mut self,
        origin: &PeerId,
        task: TaskId,
        attempt: Attempt,
        spec: orgmesh_protocol::TaskSpec,
    ) {
        let cancel = CancellationToken::new();
        let spool = self.facts.spool.path(task, attempt);
        tracing::debug!(task = %task, %attempt, origin = %origin.short(), "starting the attempt's process");
        executor::spawn(
            ExecRequest {
                task,
                attempt,
                spec,
                work_root: self.facts.work_root.clone(),
                kill_grace: self.facts.kill_grace,
                kind: self.facts.executor,
                sandbox: self.facts.sandbox.clone(),
                output_cap: self.facts.output_cap,
                spool,
            },
            self.exec_tx.clone(),
            cancel.clone(),
        );
        self.attempts.insert((task, attempt), cancel);
    }

    /// Up to `max` bytes of an attempt's spool from `offset`; `None` if it cannot be read.
    fn read_spool(&mut self, task: TaskId, attempt: Attempt, offset: u64, max: usize) -> Option<Vec<u8>> {
        let key = (task, attempt);
        let read = match self.readers.get(&key) {
            Some(file) => crate::spool::read_chunk(file, offset, max),
            None => crate::spool::open(&self.facts.spool.path(task, attempt)).and_then(|file| {
                let read = crate::spool::read_chunk(&file, offset, max);
                self.readers.insert(key, file);
                read
            }),
        };
        match read {
            Ok(data) => Some(data),
            Err(e) => {
                tracing::warn!(task = %task, %attempt, offset, error = %e, "cannot read the attempt's spool");
                None
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Membership(event) => self.on_membership_event(event),
            Event::Declined { task, attempt, peer, reason } => {
                let data = serde_json::json!({"id": task, "attempt": attempt.0, "peer_id": peer, "reason": reason.to_string()});
                drop(
                    self.store.append_events(vec![NewEvent {
                        kind: "task.declined".into(),
                        data: data.to_string(),
                    }]),
                );
            }
            Event::Placing { task, attempt } => tracing::debug!(task = %task, %attempt, "placing"),
            Event::Placed { task, attempt, host } => {
                tracing::debug!(task = %task, %attempt, host = %host.short(), "placed");
            }
            Event::ResultAccepted { task, attempt } => {
                tracing::debug!(task = %task, %attempt, "result accepted")
            }
        }
    }

    fn on_membership_event(&mut self, event: MembershipEvent) {
        let now = self.now().time;
        if let Some(count) = self.joined.summary(now) {
            tracing::info!(count, "peer joins not written as events (over the per-minute limit)");
            let data = serde_json::json!({ "count": count });
            drop(self.store.append_events(vec![NewEvent {
                kind: "peer.joined_suppressed".into(),
                data: data.to_string(),
            }]));
        }
        match event {
            MembershipEvent::Joined { record } | MembershipEvent::Updated { record } => {
                if let Some(p2p) = to_libp2p(&record.peer_id) {
                    for addr in record.addrs.iter().filter_map(|a| a.parse::<libp2p::Multiaddr>().ok()) {
                        self.swarm.add_peer_address(p2p, addr);
                    }
                }
                if self.joined.joined(&record.peer_id, now) == super::joins::Join::Write {
                    tracing::info!(peer = %record.peer_id.short(), org = %record.org, "peer joined");
                    let data = serde_json::json!({"peer_id": record.peer_id, "org": record.org, "name": record.name});
                    drop(self.store.append_events(vec![NewEvent {
                        kind: "peer.joined".into(),
                        data: data.to_string(),
                    }]));
                }
            }
            MembershipEvent::StateChanged { peer, from, to } => {
                tracing::info!(peer = %peer.short(), from = from.as_str(), to = to.as_str(), "peer state changed");
                let info = self.engine.membership().peer(&peer);
                let data = serde_json::json!({
                    "peer_id": peer,
                    "org": info.as_ref().map(|i| i.record.org.clone()),
                    "name": info.as_ref().map(|i| i.record.name.clone()),
                    "from": from.as_str(),
                    "state": to.as_str(),
                });
                let kind = format!("peer.{}", to.as_str());
                drop(self.store.append_events(vec![NewEvent { kind, data: data.to_string() }]));
                if to == PeerState::Dead {
                    tracing::debug!(peer = %peer.short(), "its attempts here are unreachable until it returns");
                }
            }
            MembershipEvent::Evicted { peer } => {
                tracing::debug!(peer = %peer.short(), "peer evicted from a full membership table");
                self.joined.forget(&peer);
            }
            MembershipEvent::Rejected { from, reason } => {
                self.counters.rejected_records += 1;
                tracing::debug!(peer = %from.short(), ?reason, "gossip record rejected");
                // Only a bad signature is the sender's fault: an honest relay verifies before it
                // relays, while a record our own trust policy refuses may be fine to the relay.
                if reason == RejectReason::BadSignature {
                    let now = self.now();
                    let verdict = self.guard.offence(&from, guard::Offence::RejectedRecord, now.time);
                    self.enforce(&from, verdict, "sent records that failed verification");
                }
            }
        }
    }
}
