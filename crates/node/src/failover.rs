//! Automatic failover in the node: the I/O around `tandem_core::failover`.
//!
//! Owns three tasks and one RPC handler, all driven by the control plane
//! (`crate::control`, Raft over the cluster map):
//! - the **map watcher** puts this node in the role the map names (lead
//!   the map's epoch, follow the map's leader, or stay idle). A node never
//!   leads the same epoch twice: `<data>/led_epoch` remembers the last epoch
//!   it started leading, so a leader that restarts waits for a new epoch.
//! - the **orchestrator** runs on the control plane's Raft leader: it probes
//!   every member, and when `assess` says the leader is lost it asks the
//!   others to fence, picks the node to promote with `choose_leader`, and
//!   installs it with a compare-and-set on the map. It records what happened
//!   (lost at, promoted at, RTO) in the event log and the metrics.
//! - **switchover**: pause the leader, wait for the target to hold its last
//!   LSN, move leadership, zero writes lost.
//! - the **RPC handler** answers probes, fences, pauses and switchover
//!   requests from the orchestrator.
//!
//! Decisions (when to fence, whom to promote, lease arithmetic) are in
//! `tandem_core::failover`; what a map means for this node's role (lead,
//! follow, idle, restream) is `tandem_core::replica::single_leader::decide_map`.
//! This module must not make them itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tandem_core::failover::{assess, choose_leader_keeping_all, Assessment, FailoverRpc, FencedNode, NodeReport};
use tandem_core::repl::{AckPolicy, NodeId};
use tandem_core::replica::single_leader::{decide_map, MapDecision};
use tandem_core::replica::MapView;
use tandem_core::Epoch;
use tokio::sync::watch;

use crate::config::Config;
use crate::control::{ClusterMap, ControlCmd, ControlPlane, ControlResp};
use crate::db::{mono_ms, unix_ms, Db};
use crate::events::{EventFields, Events};
use crate::metrics::Metrics;
use crate::repl::{Replication, RoleKey};

/// File in the data directory: the last epoch this node started leading.
pub const LED_EPOCH_FILE: &str = "led_epoch";
/// Longest a probe or fence call may take before the member counts as not
/// answering this round.
const RPC_TIMEOUT: Duration = Duration::from_millis(250);
/// Default time a switchover target gets to catch up.
pub const SWITCHOVER_TIMEOUT_MS_DEFAULT: u64 = 5000;
/// How long a switchover waits for the control plane to have a leader.
const RAFT_LEADER_WAIT: Duration = Duration::from_secs(3);
/// How often the same "cannot promote yet" reason is recorded as an event.
const BLOCKED_EVENT_EVERY: Duration = Duration::from_secs(5);

/// Automatic failover of one node.
pub struct Failover {
    config: Config,
    db: Arc<Db>,
    repl: Arc<Replication>,
    control: Arc<ControlPlane>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    /// Serializes role changes from the map watcher and fences.
    role_change: tokio::sync::Mutex<()>,
    orchestrator: Mutex<OrchestratorState>,
}

/// What the orchestrator remembers between rounds.
#[derive(Default)]
struct OrchestratorState {
    /// The epoch whose leader was reported lost, and when (unix ms, the
    /// last time any member had heard from it).
    lost: Option<(Epoch, u64)>,
    /// Last "cannot promote yet" event and when it was recorded.
    blocked: Option<(String, Instant)>,
}

impl Failover {
    /// Starts the map watcher and the orchestrator, and registers the RPC
    /// handler with the control plane.
    pub fn start(
        config: &Config,
        db: Arc<Db>,
        repl: Arc<Replication>,
        control: Arc<ControlPlane>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Failover> {
        let failover = Arc::new(Failover {
            config: config.clone(),
            events: repl.events.clone(),
            db,
            repl,
            control: control.clone(),
            metrics,
            role_change: tokio::sync::Mutex::new(()),
            orchestrator: Mutex::new(OrchestratorState::default()),
        });
        let handler_self = Arc::downgrade(&failover);
        control.set_app_handler(Arc::new(move |from, body| {
            let me = handler_self.clone();
            Box::pin(async move {
                match me.upgrade() {
                    Some(f) => Bytes::from(f.handle_rpc(from, &body).await.encode()),
                    None => Bytes::from(FailoverRpc::Error("node shutting down".into()).encode()),
                }
            })
        }));
        tokio::spawn(failover.clone().watch_map(shutdown.clone()));
        tokio::spawn(failover.clone().orchestrate(shutdown));
        failover
    }

    // ------------------------------------------------------------ RPCs

    /// Answers one failover RPC.
    pub async fn handle_rpc(&self, _from: NodeId, body: &[u8]) -> FailoverRpc {
        let req = match FailoverRpc::decode(body) {
            Ok(r) => r,
            Err(e) => return FailoverRpc::Error(e),
        };
        match req {
            FailoverRpc::Probe => FailoverRpc::Report(self.report()),
            FailoverRpc::Fence { old_epoch } => self.fence(old_epoch).await,
            FailoverRpc::Pause { epoch } => self.pause(epoch).await,
            FailoverRpc::Resume { epoch } => {
                if self.db.epoch() == epoch && self.repl.is_leader() {
                    self.db.stop_writes(false);
                    self.repl.set_paused(false);
                }
                FailoverRpc::Resumed
            }
            FailoverRpc::Switchover { to, timeout_ms } => match self.switchover(to, timeout_ms).await {
                Ok(done) => done,
                Err(e) => FailoverRpc::Error(e),
            },
            other => FailoverRpc::Error(format!("unexpected request {other:?}")),
        }
    }

    /// This node's report to the orchestrator.
    fn report(&self) -> NodeReport {
        let leading = matches!(self.repl.role_key(), RoleKey::Leading(_));
        let since_grant = self.repl.grantor.as_ref().map_or(0, |g| g.lock().since_grant_ms(mono_ms()));
        let since_role = self.repl.role_age().as_millis() as u64;
        NodeReport {
            epoch: self.db.epoch(),
            leading,
            lease_valid: self.repl.holds_lease(),
            since_leader_ms: if leading { 0 } else { since_grant.min(since_role) },
            last_entry_epoch: self.db.last_entry_epoch(),
            last_lsn: self.db.last_lsn(),
        }
    }

    /// Stops supporting leaders of `old_epoch` if no lease grant binds this
    /// node any more; then stops following, makes its log durable and says
    /// where it ends.
    async fn fence(&self, old_epoch: Epoch) -> FailoverRpc {
        let Some(grantor) = &self.repl.grantor else {
            return FailoverRpc::Error("this node runs without automatic failover".into());
        };
        let _guard = self.role_change.lock().await;
        let already = grantor.lock().floor_epoch() > old_epoch;
        if !already {
            let floor = match grantor.lock().try_fence(mono_ms(), old_epoch) {
                Ok(floor) => floor,
                Err(bound) => return FailoverRpc::Bound { remaining_ms: bound.remaining_ms },
            };
            if matches!(self.repl.role_key(), RoleKey::Leading(e) if e <= old_epoch) {
                // A leader is fenced only to finish a failover that already
                // fenced some member (it must stop renewing its lease with
                // the others): no write commits from here on.
                self.db.stop_writes(true);
            }
            if let Err(e) = self.db.raise_epoch(floor) {
                return FailoverRpc::Error(format!("persisting the fence: {e}"));
            }
            self.repl.become_idle_and_wait(format!("fenced epoch {old_epoch}; a new leader is being chosen")).await;
            tracing::warn!(old_epoch, epoch = floor, "fenced the old leader's epoch");
        }
        let last_lsn = self.db.last_lsn();
        if let Err(e) = self.db.wait_durable(last_lsn).await {
            return FailoverRpc::Error(format!("making the log durable before answering a fence: {e}"));
        }
        FailoverRpc::Fenced(FencedNode { last_entry_epoch: self.db.last_entry_epoch(), last_lsn })
    }

    /// Switchover, on the leader: no write commits from now on (until
    /// `Resume` or a role change); answers with the last LSN once durable.
    async fn pause(&self, epoch: Epoch) -> FailoverRpc {
        if !self.repl.is_leader() || self.db.epoch() != epoch {
            return FailoverRpc::Error(format!(
                "node {} is not the leader of epoch {epoch} (epoch {})",
                self.config.node_id,
                self.db.epoch()
            ));
        }
        self.repl.set_paused(true);
        let last_lsn = self.db.stop_writes(true);
        if let Err(e) = self.db.wait_durable(last_lsn).await {
            self.db.stop_writes(false);
            self.repl.set_paused(false);
            return FailoverRpc::Error(format!("the leader's log failed: {e}"));
        }
        FailoverRpc::Paused { last_lsn }
    }

    /// Sends `req` to `peer` (or answers it here when `peer` is this node).
    async fn call(&self, peer: NodeId, req: &FailoverRpc, timeout: Duration) -> Result<FailoverRpc, String> {
        if peer == self.config.node_id {
            return Ok(Box::pin(self.handle_rpc(peer, &req.encode())).await);
        }
        let body = self.control.call_app(peer, Bytes::from(req.encode()), timeout).await.map_err(|e| e.to_string())?;
        FailoverRpc::decode(&body)
    }

    // ------------------------------------------------------------ roles

    /// Keeps this node in the role the cluster map names.
    async fn watch_map(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut map = self.control.map();
        let mut retry = tokio::time::interval(Duration::from_millis(self.config.probe_interval_ms.max(50)));
        loop {
            let current = map.borrow_and_update().clone();
            self.apply_map(&current).await;
            tokio::select! {
                _ = shutdown.changed() => return,
                r = map.changed() => if r.is_err() { return },
                _ = retry.tick() => {}
            }
        }
    }

    /// Carries out what `decide_map` says the map means for this node.
    async fn apply_map(&self, map: &ClusterMap) {
        let _guard = self.role_change.lock().await;
        let me = self.config.node_id;
        // Membership changes (tandem cluster add/remove) reach the data
        // plane here: a leader restarts its streams (same epoch) with the
        // new follower set.
        let members: Vec<NodeId> = map.members.keys().copied().collect();
        let members_changed = !members.is_empty() && self.repl.set_members(members.clone());
        let view = MapView { leader: map.leader, epoch: map.epoch, members };
        let decision =
            decide_map(me, self.repl.role_key(), &view, members_changed, self.db.epoch(), read_led_epoch(&self.config));
        match decision {
            MapDecision::Stay => {}
            MapDecision::Invalid(why) => tracing::error!(why, "cannot apply the cluster map"),
            MapDecision::Restream => {
                tracing::info!(members = ?view.members, "members changed; restreaming");
                if let Err(e) = self.repl.become_leader(Some(map.epoch)) {
                    tracing::error!(error = %e, "cannot lead the new member set");
                }
            }
            MapDecision::Idle { reason } => self.repl.become_idle(reason),
            MapDecision::Lead { epoch } => {
                if let Err(e) = write_led_epoch(&self.config, epoch) {
                    tracing::error!(error = %e, "cannot persist led_epoch; not leading");
                    return;
                }
                if let Some(g) = &self.repl.grantor {
                    g.lock().raise_floor(epoch);
                }
                if let Err(e) = self.repl.become_leader(Some(epoch)) {
                    tracing::error!(error = %e, epoch, "cannot lead");
                }
            }
            MapDecision::Follow { leader } => {
                let Some(member) = map.members.get(&leader) else {
                    tracing::error!(leader, "the map names a leader that is not a member");
                    return;
                };
                if let Some(g) = &self.repl.grantor {
                    g.lock().raise_floor(map.epoch);
                }
                self.repl.become_follower(leader, member.peer_addr);
            }
        }
    }

    // ------------------------------------------------------------ orchestrator

    /// On the control plane's Raft leader: probe, assess, fence, promote.
    async fn orchestrate(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.probe_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            if !self.control.is_raft_leader() {
                continue;
            }
            if let Err(e) = self.orchestrate_once().await {
                tracing::debug!(error = %e, "failover round");
            }
        }
    }

    /// The policies whose acknowledged writes a promotion must keep: the
    /// default keyspace's and every single-leader keyspace's (they share
    /// the log).
    fn policies(&self, map: &ClusterMap) -> Vec<AckPolicy> {
        let node = self.repl.default_durability();
        let mut policies = vec![map.ack_policy.clone().unwrap_or_else(|| node.policy.clone())];
        for def in map.keyspaces.values() {
            let tandem_core::keyspace::Mode::SingleLeader(p) = &def.mode else { continue };
            let policy = p.durability(node).policy;
            if !policies.contains(&policy) {
                policies.push(policy);
            }
        }
        policies
    }

    /// Probes `members` the way the orchestrator does and returns the
    /// reports of those that answered in time. Read-only: the dashboard
    /// uses it to show every replica's lag from any node.
    pub async fn probe(&self, members: &[NodeId]) -> BTreeMap<NodeId, NodeReport> {
        self.probe_all(members).await
    }

    async fn probe_all(&self, members: &[NodeId]) -> BTreeMap<NodeId, NodeReport> {
        let calls =
            members.iter().map(|&id| async move { (id, self.call(id, &FailoverRpc::Probe, RPC_TIMEOUT).await) });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|(id, r)| match r {
                Ok(FailoverRpc::Report(report)) => Some((id, report)),
                _ => None,
            })
            .collect()
    }

    async fn orchestrate_once(&self) -> Result<(), String> {
        let map = self.control.map().borrow().clone();
        let members: Vec<NodeId> = map.members.keys().copied().collect();
        if members.is_empty() {
            return Ok(());
        }
        let reports = self.probe_all(&members).await;
        match assess(&members, map.leader, map.epoch, &reports, self.config.failover_timeout_ms) {
            Assessment::Healthy => {
                self.orchestrator.lock().lost = None;
                Ok(())
            }
            Assessment::Wait(why) => {
                self.blocked(why);
                Ok(())
            }
            Assessment::Bootstrap { leader, epoch } => {
                let cmd = ControlCmd::SetLeader {
                    leader,
                    epoch,
                    expected_epoch: map.epoch,
                    reason: "bootstrap: the most up-to-date of a majority".into(),
                };
                if let ControlResp::Applied(_) = self.control.propose(cmd).await.map_err(|e| e.to_string())? {
                    self.events.record(
                        "bootstrap",
                        format!("node {leader} chosen to lead epoch {epoch} (most up-to-date of a majority)"),
                        EventFields { epoch: Some(epoch), subject: Some(leader), ..Default::default() },
                    );
                }
                Ok(())
            }
            Assessment::Fence { old_epoch, targets } => {
                let old_leader = map.leader.expect("fence implies a leader");
                let lost_at = {
                    let mut st = self.orchestrator.lock();
                    match st.lost {
                        Some((e, at)) if e == old_epoch => at,
                        _ => {
                            // When the leader was last heard of: by the member
                            // that heard from it most recently.
                            let since = reports
                                .iter()
                                .filter(|(&id, _)| id != old_leader)
                                .map(|(_, r)| r.since_leader_ms)
                                .min()
                                .unwrap_or(0);
                            let at = unix_ms().saturating_sub(since);
                            st.lost = Some((old_epoch, at));
                            let fields =
                                EventFields { epoch: Some(old_epoch), subject: Some(old_leader), ..Default::default() };
                            if reports.contains_key(&old_leader) {
                                // It answers, so it is not lost: it restarted
                                // and must not lead the epoch it led before.
                                self.events.record(
                                    "restarted",
                                    format!(
                                        "node {old_leader} (leader of epoch {old_epoch}) is up but no longer leads \
                                         it (it restarted; a node never leads the same epoch twice); choosing a new \
                                         leader"
                                    ),
                                    fields,
                                );
                            } else {
                                self.events.record(
                                    "lost",
                                    format!(
                                        "node {old_leader} (leader of epoch {old_epoch}) lost: last heard at {}",
                                        crate::rollback::rfc3339(at)
                                    ),
                                    fields,
                                );
                            }
                            at
                        }
                    }
                };
                let calls = targets.iter().map(|&id| async move {
                    (id, self.call(id, &FailoverRpc::Fence { old_epoch }, RPC_TIMEOUT).await)
                });
                let mut fenced = BTreeMap::new();
                let mut bound = Vec::new();
                for (id, r) in futures::future::join_all(calls).await {
                    match r {
                        Ok(FailoverRpc::Fenced(f)) => {
                            fenced.insert(id, f);
                        }
                        Ok(FailoverRpc::Bound { remaining_ms }) => bound.push(format!("{id} bound {remaining_ms} ms")),
                        Ok(other) => bound.push(format!("{id}: {other:?}")),
                        Err(e) => bound.push(format!("{id}: {e}")),
                    }
                }
                let policies = self.policies(&map);
                let policy = policies.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("', '");
                let candidate = match choose_leader_keeping_all(&policies, &members, old_leader, &fenced) {
                    Ok(c) => c,
                    Err(why) => {
                        self.blocked(format!("cannot promote a new leader yet: {why} ({})", bound.join(", ")));
                        return Ok(());
                    }
                };
                let epoch = old_epoch + 1;
                let cmd = ControlCmd::SetLeader {
                    leader: candidate,
                    epoch,
                    expected_epoch: old_epoch,
                    reason: format!("failover: node {old_leader} lost"),
                };
                match self.control.propose(cmd).await.map_err(|e| e.to_string())? {
                    ControlResp::Applied(_) => {
                        let rto_ms = unix_ms().saturating_sub(lost_at);
                        let f = fenced[&candidate];
                        self.metrics.failovers.inc();
                        self.metrics.failover_rto_seconds.observe(rto_ms as f64 / 1000.0);
                        self.events.record(
                            "promoted",
                            format!(
                                "node {candidate} promoted to lead epoch {epoch} at {} (RTO {rto_ms} ms since node \
                                 {old_leader} was last heard; its log ends at LSN {}; policy '{policy}'); writes \
                                 node {old_leader} had that node {candidate} lacks go to a rollback file on node \
                                 {old_leader} when it returns",
                                crate::rollback::rfc3339(unix_ms()),
                                f.last_lsn
                            ),
                            EventFields {
                                rto_ms: Some(rto_ms),
                                epoch: Some(epoch),
                                subject: Some(candidate),
                                ..Default::default()
                            },
                        );
                        self.orchestrator.lock().lost = None;
                    }
                    ControlResp::Rejected { reason, .. } => tracing::info!(reason, "promotion rejected by the map"),
                }
                Ok(())
            }
        }
    }

    /// Records a "cannot act yet" reason, at most every few seconds.
    fn blocked(&self, why: String) {
        let mut st = self.orchestrator.lock();
        let due = match &st.blocked {
            Some((last, at)) => last != &why || at.elapsed() >= BLOCKED_EVENT_EVERY,
            None => true,
        };
        if due {
            self.events.record("promotion_blocked", why.clone(), EventFields::default());
            st.blocked = Some((why, Instant::now()));
        }
    }

    // ------------------------------------------------------------ switchover

    /// Moves leadership to `to` with zero writes lost: pause the leader,
    /// wait until `to` holds its last LSN, compare-and-set the map. Runs on
    /// the control plane's Raft leader; elsewhere it is forwarded there.
    pub async fn switchover(&self, to: NodeId, timeout_ms: u64) -> Result<FailoverRpc, String> {
        let timeout_ms = if timeout_ms == 0 { SWITCHOVER_TIMEOUT_MS_DEFAULT } else { timeout_ms };
        // An election may be settling: wait a little until this node leads
        // the control plane or knows who does.
        let deadline = Instant::now() + RAFT_LEADER_WAIT;
        let forward_to = loop {
            if self.control.is_raft_leader() {
                break None;
            }
            match self.control.raft_leader() {
                Some(l) if l != self.config.node_id => break Some(l),
                _ if Instant::now() >= deadline => {
                    return Err(format!("the control plane has had no leader for {RAFT_LEADER_WAIT:?}"))
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        if let Some(raft_leader) = forward_to {
            let req = FailoverRpc::Switchover { to, timeout_ms };
            return match self.call(raft_leader, &req, Duration::from_millis(timeout_ms + 2000)).await? {
                FailoverRpc::Error(e) => Err(e),
                done => Ok(done),
            };
        }
        let map = self.control.map().borrow().clone();
        let old = map.leader.ok_or("no leader to switch over from")?;
        if !map.members.contains_key(&to) {
            return Err(format!("node {to} is not a member"));
        }
        if old == to {
            return Err(format!("node {to} already leads (epoch {})", map.epoch));
        }
        let started = Instant::now();
        let last_lsn = match self.call(old, &FailoverRpc::Pause { epoch: map.epoch }, RPC_TIMEOUT * 4).await? {
            FailoverRpc::Paused { last_lsn } => last_lsn,
            FailoverRpc::Error(e) => return Err(format!("pausing node {old}: {e}")),
            other => return Err(format!("pausing node {old}: unexpected {other:?}")),
        };
        let resume = || async {
            let _ = self.call(old, &FailoverRpc::Resume { epoch: map.epoch }, RPC_TIMEOUT).await;
        };
        // The target must hold (durably) everything the old leader has.
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            match self.call(to, &FailoverRpc::Probe, RPC_TIMEOUT).await {
                Ok(FailoverRpc::Report(r)) if r.last_lsn >= last_lsn => break,
                _ if Instant::now() >= deadline => {
                    resume().await;
                    return Err(format!(
                        "node {to} did not catch up to LSN {last_lsn} within {timeout_ms} ms; node {old} leads on"
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        let epoch = map.epoch + 1;
        let cmd = ControlCmd::SetLeader {
            leader: to,
            epoch,
            expected_epoch: map.epoch,
            reason: format!("switchover from node {old}"),
        };
        match self.control.propose(cmd).await {
            Ok(ControlResp::Applied(_)) => {}
            Ok(ControlResp::Rejected { reason, .. }) => {
                resume().await;
                return Err(format!("the map changed meanwhile: {reason}"));
            }
            Err(e) => {
                resume().await;
                return Err(format!("the control plane did not commit the switchover: {e}"));
            }
        }
        let paused_ms = started.elapsed().as_millis() as u64;
        self.metrics.switchovers.inc();
        self.events.record(
            "switchover",
            format!(
                "switchover: node {to} leads epoch {epoch} after node {old}; every write up to LSN {last_lsn} is on \
                 node {to}, 0 writes lost; writes paused {paused_ms} ms"
            ),
            EventFields { epoch: Some(epoch), subject: Some(to), lost_writes: Some(0), ..Default::default() },
        );
        Ok(FailoverRpc::SwitchedOver { epoch, lsn: last_lsn, paused_ms })
    }
}

fn read_led_epoch(config: &Config) -> Epoch {
    std::fs::read_to_string(config.data_dir.join(LED_EPOCH_FILE)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

fn write_led_epoch(config: &Config, epoch: Epoch) -> std::io::Result<()> {
    let path = config.data_dir.join(LED_EPOCH_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{epoch}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&config.data_dir)?.sync_all()
}
