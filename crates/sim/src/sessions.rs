//! Session guarantees against the simulated cluster: simulated clients route
//! their reads with the real [`tandem_core::session::Session`] and the
//! harness counts the anomalies the guarantees exist to prevent.
//!
//! One seed builds one fault-free cluster (1 to 3 followers, drawn from the
//! seed) whose followers apply with a delay drawn from the seed (the
//! [`Sim::set_apply_delay`] knob). Clients of every [`Mode`] share it:
//! - routing sees a *poller's* topology: a snapshot of [`NodeView`]s (each
//!   follower's applied LSN from ground truth, its time lag as the leader
//!   reports it, healthy when up and streaming) refreshed every
//!   `refresh_ms` of virtual time, so it is stale like the proxy's;
//! - `WaitThenNode` is modelled as `WAITLSN`: virtual time runs (the whole
//!   cluster keeps going) for up to `wait_ms` until the follower's applied
//!   LSN reaches the target, then the read goes there, else to the leader;
//! - after a read the session learns the serving node's applied LSN at that
//!   moment ([`Session::on_read_from`]), after a write the leader's last LSN
//!   ([`Session::on_write`]).
//!
//! Workload: a client writes its own keys (`c<i>:k<j>`) and reads them
//! back; a background writer (not any client's session) bumps a per-client
//! counter (`ctr:<i>`) that the client reads. Counted per mode: reads that
//! miss the client's own last write, and counter reads lower than one the
//! client already read (time travel).

use std::fmt;

use tandem_core::repl::{AckLevel, Durability, NodeId, ReplicaState};
use tandem_core::session::{Balance, NodeView, Route, Ryw, Session, SessionConfig, Target};
use tandem_core::Lsn;

use crate::rng::SimRng;
use crate::{Sim, SimConfig, SimFailure};

/// The guarantees a simulated client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No guarantee (round robin over followers).
    Off,
    /// Read-your-writes by token, waiting up to `token_wait_ms`.
    Token,
    /// Read-your-writes by leader window of `leader_window_ms`.
    LeaderWindow,
    /// Monotonic reads.
    Monotonic,
    /// Leader only.
    Strong,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Mode; 5] = [Mode::Off, Mode::Token, Mode::LeaderWindow, Mode::Monotonic, Mode::Strong];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Token => "token",
            Mode::LeaderWindow => "leader-window",
            Mode::Monotonic => "monotonic",
            Mode::Strong => "strong",
        }
    }

    /// The session configuration a client of this mode runs with (also the
    /// real clients of `tandem lab run stale-read --real`).
    pub fn session_config(self, c: &SessionsConfig) -> SessionConfig {
        let mut s = SessionConfig { balance: Balance::RoundRobin, ..SessionConfig::default() };
        match self {
            Mode::Off => {}
            Mode::Token => s.ryw = Ryw::Token { wait_ms: c.token_wait_ms },
            Mode::LeaderWindow => s.ryw = Ryw::LeaderWindow { ms: c.leader_window_ms },
            Mode::Monotonic => s.monotonic = true,
            Mode::Strong => s.strong = true,
        }
        s
    }
}

/// What one session run looks like.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// Followers; `None`: drawn from the seed (1 to 3).
    pub followers: Option<usize>,
    /// Clients of each mode.
    pub clients_per_mode: usize,
    /// Operations (writes, reads, counter bumps) per run.
    pub ops: usize,
    /// Largest virtual gap between operations, in ms.
    pub op_gap_ms_max: u64,
    /// How often the poller refreshes the topology snapshot.
    pub refresh_ms: u64,
    /// Apply delays drawn per follower from these, in ms.
    pub apply_delays_ms: Vec<u64>,
    /// `Ryw::Token` wait bound.
    pub token_wait_ms: u64,
    /// `Ryw::LeaderWindow` length.
    pub leader_window_ms: u64,
    /// Chance per operation that a follower crashes (losing what it had
    /// not synced) and restarts from its disk `crash_down_ms` later; 0 by
    /// default (the guarantees are judged without faults, see
    /// `docs/simulator.md`).
    pub crash_chance: f64,
    /// How long a crashed follower stays down.
    pub crash_down_ms: u64,
    /// Print every routing decision.
    pub verbose: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            followers: None,
            clients_per_mode: 2,
            ops: 200,
            op_gap_ms_max: 20,
            refresh_ms: 50,
            apply_delays_ms: vec![0, 5, 40, 120, 250],
            token_wait_ms: 30,
            leader_window_ms: 500,
            crash_chance: 0.0,
            crash_down_ms: 30,
            verbose: false,
        }
    }
}

/// What one mode's clients saw in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeCounts {
    /// Reads of the client's own keys.
    pub own_reads: u64,
    /// Counter reads.
    pub counter_reads: u64,
    /// Reads served by a follower (directly or after a wait).
    pub follower_reads: u64,
    /// Reads served by the leader.
    pub leader_reads: u64,
    /// `WAITLSN`-style waits, and those that fell back to the leader.
    pub waits: u64,
    /// Waits that timed out (then the leader served).
    pub wait_fallbacks: u64,
    /// Reads that missed the client's own last write.
    pub misses: u64,
    /// Counter reads lower than a value the client had already read.
    pub time_travel: u64,
    /// Reads routed to a follower that was down (a connection error for
    /// the client: not judged).
    pub unavailable: u64,
    /// The first miss, described.
    pub first_miss: Option<String>,
    /// The first time travel, described.
    pub first_time_travel: Option<String>,
}

/// What a session run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsReport {
    /// The seed.
    pub seed: u64,
    /// Followers.
    pub followers: usize,
    /// Apply delay of each follower (node 2 first), ms.
    pub apply_delays_ms: Vec<u64>,
    /// Per mode, in [`Mode::ALL`] order.
    pub modes: Vec<ModeCounts>,
    /// Virtual time at the end.
    pub virtual_ms: u64,
    /// The cluster's trace hash (equal seeds give equal hashes).
    pub trace_hash: u64,
}

impl SessionsReport {
    /// The counts of `mode`.
    pub fn mode(&self, mode: Mode) -> &ModeCounts {
        &self.modes[Mode::ALL.iter().position(|m| *m == mode).expect("a mode")]
    }
}

impl fmt::Display for SessionsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}: {} followers, apply delays {:?} ms", self.seed, self.followers, self.apply_delays_ms)?;
        for (mode, c) in Mode::ALL.iter().zip(&self.modes) {
            write!(
                f,
                "\n  {:<13} reads {}+{} (follower {}, leader {}), waits {} ({} fell back), misses {}, time travel {}",
                mode.name(),
                c.own_reads,
                c.counter_reads,
                c.follower_reads,
                c.leader_reads,
                c.waits,
                c.wait_fallbacks,
                c.misses,
                c.time_travel
            )?;
        }
        Ok(())
    }
}

struct Client {
    mode: usize,
    session: Session,
    /// Last value this client wrote to each of its keys.
    written: Vec<Option<u64>>,
    /// Highest counter value this client has read.
    counter_seen: u64,
}

const KEYS_PER_CLIENT: u64 = 4;
/// The leader's node id (followers are 2..=N+1); [`NodeView::index`] is the node id.
const LEADER: NodeId = 1;

struct Run<'a> {
    config: &'a SessionsConfig,
    sim: Sim,
    rng: SimRng,
    clients: Vec<Client>,
    counts: Vec<ModeCounts>,
    /// Values written by the background writer, per client counter.
    counters: Vec<u64>,
    views: Vec<NodeView>,
    refreshed_at_ms: Option<u64>,
    next_value: u64,
    /// Crashed followers and when they restart.
    restarts: Vec<(NodeId, u64)>,
}

fn durability() -> Durability {
    Durability { policy: "async".parse().expect("async"), level: AckLevel::Flush, timeout_ms: 0 }
}

impl Run<'_> {
    fn trace(&self, line: impl FnOnce() -> String) {
        if self.config.verbose {
            println!("{:>8} ms  {}", self.sim.elapsed_ms(), line());
        }
    }

    /// The poller: a snapshot of the cluster, taken every `refresh_ms`.
    fn poll(&mut self) {
        let now = self.sim.elapsed_ms();
        if self.refreshed_at_ms.is_some_and(|t| now < t + self.config.refresh_ms) {
            return;
        }
        self.refreshed_at_ms = Some(now);
        let mut views = vec![NodeView {
            index: LEADER as usize,
            is_leader: true,
            applied_lsn: self.sim.leader_last_lsn(),
            staleness_ms: 0,
            healthy: true,
        }];
        for f in 0..self.sim.follower_count() {
            let id = f as NodeId + 2;
            let status = self.sim.replica(id);
            let applied = self.sim.follower_applied_lsn(id);
            views.push(NodeView {
                index: id as usize,
                is_leader: false,
                applied_lsn: applied.unwrap_or(0),
                staleness_ms: status.time_lag_ms,
                healthy: applied.is_some()
                    && matches!(status.state, ReplicaState::CatchingUp | ReplicaState::Streaming),
            });
        }
        self.views = views;
    }

    fn write(&mut self, key: &str, value: u64) -> Result<Lsn, String> {
        self.sim.write(&["set", key, &value.to_string()], &durability())?;
        Ok(self.sim.leader_last_lsn())
    }

    /// Ground truth: what node `id` has applied (`LASTLSN` there).
    fn applied(&self, id: NodeId) -> Lsn {
        if id == LEADER {
            self.sim.leader_last_lsn()
        } else {
            self.sim.follower_applied_lsn(id).unwrap_or(0)
        }
    }

    fn get(&self, id: NodeId, key: &str) -> Option<u64> {
        let value = if id == LEADER { self.sim.leader_get(key) } else { self.sim.follower_get(id, key) };
        value.map(|v| v.parse().expect("the harness writes numbers"))
    }

    /// Routes a read of `key` for client `c`, performs it, and reports what
    /// the session learns. Returns the value and the serving node's id.
    /// `None` when the chosen follower is down (the client gets an error).
    fn read(&mut self, c: usize, key: &str) -> Result<Option<(Option<u64>, NodeId, Route)>, String> {
        self.poll();
        let now = self.sim.elapsed_ms();
        let views = std::mem::take(&mut self.views);
        let route = self.clients[c].session.route_read(now, &views);
        self.views = views;
        let mode = self.clients[c].mode;
        let node = match route.target {
            Target::Node(n) => n as NodeId,
            Target::Leader => LEADER,
            Target::WaitThenNode { node, lsn, wait_ms } => {
                let node = node as NodeId;
                // WAITLSN lsn wait_ms on the follower, else the leader.
                self.counts[mode].waits += 1;
                let deadline = now + wait_ms;
                while self.applied(node) < lsn && self.sim.elapsed_ms() < deadline {
                    self.sim.run_for(1)?;
                }
                if self.applied(node) >= lsn {
                    node
                } else {
                    self.counts[mode].wait_fallbacks += 1;
                    LEADER
                }
            }
        };
        if node != LEADER && self.sim.follower_applied_lsn(node).is_none() {
            self.counts[mode].unavailable += 1;
            self.trace(|| format!("client {c}: GET {key} routed to {route}: node {node} is down"));
            return Ok(None);
        }
        let value = self.get(node, key);
        let applied = self.applied(node);
        self.clients[c].session.on_read_from(applied);
        if node == LEADER {
            self.counts[mode].leader_reads += 1;
        } else {
            self.counts[mode].follower_reads += 1;
        }
        Ok(Some((value, node, route)))
    }

    fn faults(&mut self) {
        let now = self.sim.elapsed_ms();
        let due: Vec<NodeId> = self.restarts.iter().filter(|(_, at)| *at <= now).map(|(id, _)| *id).collect();
        self.restarts.retain(|(_, at)| *at > now);
        for id in due {
            self.sim.restart(id);
            self.trace(|| format!("node {id}: restart at lsn {:?}", self.sim.follower_applied_lsn(id)));
        }
        if self.config.crash_chance > 0.0 && self.rng.chance(self.config.crash_chance) {
            let id = self.rng.below(self.sim.follower_count() as u64) as NodeId + 2;
            if self.sim.follower_applied_lsn(id).is_some() {
                self.trace(|| format!("node {id}: crash at applied lsn {:?}", self.sim.follower_applied_lsn(id)));
                self.sim.crash(id);
                self.restarts.push((id, now + self.config.crash_down_ms));
            }
        }
    }

    fn op(&mut self) -> Result<(), String> {
        let gap = self.rng.range(0, self.config.op_gap_ms_max);
        self.sim.run_for(gap)?;
        self.faults();
        let c = self.rng.below(self.clients.len() as u64) as usize;
        let mode = self.clients[c].mode;
        let roll = self.rng.below(100);
        if roll < 20 {
            // The background writer bumps client c's counter.
            self.counters[c] += 1;
            let value = self.counters[c];
            let lsn = self.write(&format!("ctr:{c}"), value)?;
            self.trace(|| format!("writer: ctr:{c} = {value} at lsn {lsn}"));
        } else if roll < 50 {
            let k = self.rng.below(KEYS_PER_CLIENT) as usize;
            self.next_value += 1;
            let value = self.next_value;
            let lsn = self.write(&format!("c{c}:k{k}"), value)?;
            let now = self.sim.elapsed_ms();
            let client = &mut self.clients[c];
            client.session.on_write(now, lsn);
            client.written[k] = Some(value);
            self.trace(|| format!("client {c} ({}): c{c}:k{k} = {value} at lsn {lsn}", Mode::ALL[mode].name()));
        } else if roll < 75 {
            let written: Vec<usize> =
                (0..KEYS_PER_CLIENT as usize).filter(|&k| self.clients[c].written[k].is_some()).collect();
            if written.is_empty() {
                return Ok(());
            }
            let k = *self.rng.pick(&written);
            let key = format!("c{c}:k{k}");
            let Some((value, node, route)) = self.read(c, &key)? else { return Ok(()) };
            let want = self.clients[c].written[k];
            self.counts[mode].own_reads += 1;
            let at = self.sim.elapsed_ms();
            let line = format!(
                "client {c} ({}): GET {key} routed to {route}, served by node {node} -> {value:?} (wrote {want:?})",
                Mode::ALL[mode].name()
            );
            self.trace(|| line.clone());
            if value != want {
                self.counts[mode].misses += 1;
                self.counts[mode].first_miss.get_or_insert(format!("miss at {at} ms: {line}"));
            }
        } else {
            let key = format!("ctr:{c}");
            let Some((value, node, route)) = self.read(c, &key)? else { return Ok(()) };
            let value = value.unwrap_or(0);
            let seen = self.clients[c].counter_seen;
            self.counts[mode].counter_reads += 1;
            let at = self.sim.elapsed_ms();
            let line = format!(
                "client {c} ({}): GET {key} routed to {route}, served by node {node} -> {value} (had read {seen})",
                Mode::ALL[mode].name()
            );
            self.trace(|| line.clone());
            if value < seen {
                self.counts[mode].time_travel += 1;
                self.counts[mode].first_time_travel.get_or_insert(format!("time travel at {at} ms: {line}"));
            }
            self.clients[c].counter_seen = seen.max(value);
        }
        Ok(())
    }
}

/// Runs one seeded session workload against a fault-free cluster.
pub fn run_sessions_seed(seed: u64, config: &SessionsConfig) -> Result<SessionsReport, SimFailure> {
    crate::run_caught(seed, crate::REPRO_REPLICATION, || {
        run_inner(seed, config).map_err(|(message, at_ms)| (message, at_ms, Vec::new()))
    })
}

fn run_inner(seed: u64, config: &SessionsConfig) -> Result<SessionsReport, (String, u64)> {
    let sim_config = SimConfig { followers: config.followers, faults: false, ..SimConfig::default() };
    let mut sim = Sim::new(seed, &sim_config, true);
    // A separate stream for the workload, so the cluster's draws match `Sim::new`'s.
    let mut rng = SimRng::new(seed ^ 0x5e55_1055_0000_0006);
    let apply_delays_ms: Vec<u64> = (0..sim.follower_count()).map(|_| *rng.pick(&config.apply_delays_ms)).collect();
    for (f, ms) in apply_delays_ms.iter().enumerate() {
        sim.set_apply_delay(f as NodeId + 2, *ms);
    }
    let clients = (0..Mode::ALL.len() * config.clients_per_mode)
        .map(|i| {
            let mode = i % Mode::ALL.len();
            Client {
                mode,
                session: Session::new(Mode::ALL[mode].session_config(config)),
                written: vec![None; KEYS_PER_CLIENT as usize],
                counter_seen: 0,
            }
        })
        .collect::<Vec<_>>();
    let counters = vec![0; clients.len()];
    let mut run = Run {
        config,
        sim,
        rng,
        clients,
        counts: vec![ModeCounts::default(); Mode::ALL.len()],
        counters,
        views: Vec::new(),
        refreshed_at_ms: None,
        next_value: 0,
        restarts: Vec::new(),
    };
    let result = (|| {
        // Let the followers connect.
        run.sim.run_for(100)?;
        for _ in 0..config.ops {
            run.op()?;
        }
        Ok::<(), String>(())
    })();
    if let Err(message) = result {
        return Err((message, run.sim.elapsed_ms()));
    }
    let report = run.sim.report();
    Ok(SessionsReport {
        seed,
        followers: report.followers,
        apply_delays_ms,
        modes: run.counts,
        virtual_ms: run.sim.elapsed_ms(),
        trace_hash: report.trace_hash,
    })
}
