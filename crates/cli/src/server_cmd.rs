//! `tandem server`: merges the config file, `TANDEM_*` variables and flags
//! (flags win over variables, which win over the file) and runs a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tandem_node::Config;
use tandem_storage::log::FsyncPolicy;

/// Flags of `tandem server`. Every flag can also be set as the environment
/// variable named in its help, or in the TOML file given by `--config`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// TOML configuration file: every setting below by its snake_case name
    /// (node_id, data_dir, members, ack, ...) plus a [limits] table; see
    /// docs/configuration.md. Flags and TANDEM_* variables override it.
    #[arg(long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id in the cluster [default: 1].
    #[arg(long, env = "TANDEM_NODE_ID")]
    node_id: Option<u64>,
    /// Directory for the log, snapshots and metadata [default: ./tandem-data].
    #[arg(long, env = "TANDEM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// RESP listener for clients [default: 127.0.0.1:7379].
    #[arg(long, env = "TANDEM_CLIENT_ADDR")]
    client_addr: Option<SocketAddr>,
    /// HTTP listener for /healthz, /status and /metrics [default: 127.0.0.1:7380].
    #[arg(long, env = "TANDEM_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Listener for replication between nodes [default: 127.0.0.1:7381].
    #[arg(long, env = "TANDEM_PEER_ADDR")]
    peer_addr: Option<SocketAddr>,
    /// When a write is acknowledged [default: batch]. always: each write is
    /// fsynced on its own before its reply. batch: group commit, a write is
    /// acknowledged after the fsync that covers it, concurrent writes share
    /// fsyncs. everysec: acknowledged once written to the OS (survives a
    /// process crash), fsynced about once a second (a power loss can lose
    /// about a second). never: written to the OS, fsync left to the OS.
    #[arg(long, env = "TANDEM_FSYNC")]
    fsync: Option<FsyncPolicy>,
    /// Password clients must give with AUTH or HELLO .. AUTH (visible in
    /// `ps`: prefer --requirepass-file).
    #[arg(long, env = "TANDEM_REQUIREPASS", hide_env_values = true, conflicts_with = "requirepass_file")]
    requirepass: Option<String>,
    /// File holding the client password (first line; trailing whitespace
    /// ignored), so it never appears on a command line.
    #[arg(long, env = "TANDEM_REQUIREPASS_FILE")]
    requirepass_file: Option<PathBuf>,
    /// Bearer token the admin port requires on every route but /healthz
    /// (visible in `ps`: prefer --admin-token-file). Required when
    /// --admin-addr is not a loopback address.
    #[arg(long, env = "TANDEM_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "admin_token_file")]
    admin_token: Option<String>,
    /// File holding the admin token (first line).
    #[arg(long, env = "TANDEM_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serve POST /faults on the admin port (link-fault injection for tests
    /// and drills). Without it the route does not exist.
    #[arg(long, env = "TANDEM_FAULT_INJECTION")]
    fault_injection: bool,
    /// Take a snapshot after this many log entries (0: only on SAVE/BGSAVE
    /// and shutdown) [default: 1000000].
    #[arg(long, env = "TANDEM_SNAPSHOT_ENTRIES")]
    snapshot_entries: Option<u64>,
    /// Log segment size in bytes before a new segment file starts; the log
    /// is truncated in whole segments behind snapshots [default: 67108864].
    #[arg(long, env = "TANDEM_SEGMENT_BYTES_MAX")]
    segment_bytes_max: Option<u64>,
    /// Maximum client connections [default: 10000].
    #[arg(long, env = "TANDEM_CLIENTS_MAX")]
    clients_max: Option<usize>,
    /// Largest bulk string a client may send, bytes [default: 536805376,
    /// 64 KiB under 512 MiB so the largest value and its key fit one log
    /// entry].
    #[arg(long, env = "TANDEM_BULK_BYTES_MAX")]
    bulk_bytes_max: Option<usize>,
    /// Most elements in one request [default: 1048576].
    #[arg(long, env = "TANDEM_ARRAY_LEN_MAX")]
    array_len_max: Option<usize>,
    /// Longest inline command line, bytes [default: 65536].
    #[arg(long, env = "TANDEM_INLINE_BYTES_MAX")]
    inline_bytes_max: Option<usize>,
    /// Most unparsed request bytes buffered per connection [default: 1073741824].
    #[arg(long, env = "TANDEM_QUERY_BUFFER_BYTES_MAX")]
    query_buffer_bytes_max: Option<usize>,
    /// Most reply bytes buffered per connection before it is closed [default: 536870912].
    #[arg(long, env = "TANDEM_REPLY_BUFFER_BYTES_MAX")]
    reply_buffer_bytes_max: Option<usize>,
    /// Most bytes one write's effects may take in the log; a larger write
    /// (e.g. an MSET of several big values) is refused whole, nothing
    /// applied [default and maximum: 536870912].
    #[arg(long, env = "TANDEM_ENTRY_BYTES_MAX")]
    entry_bytes_max: Option<usize>,
    /// PEM certificate chain: with --tls-key the client port speaks only
    /// TLS and the admin port only HTTPS (docs/security.md).
    #[arg(long, env = "TANDEM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TANDEM_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: with --tls-cert and --tls-key, every peer
    /// connection is mutual TLS, both sides' certificates must chain to it.
    #[arg(long, env = "TANDEM_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Most bytes the keys and values may take (INFO memory used_memory):
    /// bytes or Redis's syntax, e.g. 100mb, 1gb; 0: no limit [default: 0].
    #[arg(long, env = "TANDEM_MAXMEMORY")]
    maxmemory: Option<String>,
    /// At maxmemory: noeviction (writes that may grow memory get -OOM),
    /// allkeys-lru, allkeys-random, volatile-lru, volatile-ttl; evictions
    /// are logged so followers evict the same keys [default: noeviction].
    #[arg(long, env = "TANDEM_MAXMEMORY_POLICY")]
    maxmemory_policy: Option<String>,
    /// Keys sampled per eviction (approximated LRU) [default: 16].
    #[arg(long, env = "TANDEM_MAXMEMORY_SAMPLES")]
    maxmemory_samples: Option<usize>,
    /// A Lua script (EVAL) running longer than this many ms is aborted and
    /// none of its writes are applied [default: 5000].
    #[arg(long, env = "TANDEM_LUA_TIME_LIMIT_MS")]
    lua_time_limit_ms: Option<u64>,
    /// Cluster members and their peer addresses: "1=127.0.0.1:7381,2=127.0.0.1:7391,3=...".
    /// Without it the node is standalone and leads itself.
    #[arg(long, env = "TANDEM_MEMBERS")]
    members: Option<String>,
    /// The member that leads at start (at run time: REPLICAOF host peer-port /
    /// REPLICAOF NO ONE). Without it, members run the control plane (Raft).
    #[arg(long, env = "TANDEM_LEADER")]
    leader: Option<u64>,
    /// Join a running cluster instead of initializing the control plane: the
    /// node waits until `tandem cluster add` (POST /cluster/members) adds it.
    #[arg(long, env = "TANDEM_JOIN")]
    join: bool,
    /// Control plane (Raft) heartbeat interval, ms [default: 50].
    #[arg(long, env = "TANDEM_CONTROL_HEARTBEAT_MS")]
    control_heartbeat_ms: Option<u64>,
    /// Control plane election timeout, lower bound, ms [default: 150].
    #[arg(long, env = "TANDEM_CONTROL_ELECTION_TIMEOUT_MIN_MS")]
    control_election_timeout_min_ms: Option<u64>,
    /// Control plane election timeout, upper bound, ms [default: 300].
    #[arg(long, env = "TANDEM_CONTROL_ELECTION_TIMEOUT_MAX_MS")]
    control_election_timeout_max_ms: Option<u64>,
    /// Default ack policy: "async", "any K", "first K (ID,ID,..)", "all" [default: async].
    #[arg(long, env = "TANDEM_ACK")]
    ack: Option<String>,
    /// What a follower's ack means: "flush" (on its disk) or "apply" (on disk
    /// and visible to reads) [default: flush].
    #[arg(long, env = "TANDEM_ACK_LEVEL")]
    ack_level: Option<String>,
    /// How long a write waits for its ack policy before it fails, ms (0: forever) [default: 5000].
    #[arg(long, env = "TANDEM_ACK_TIMEOUT_MS")]
    ack_timeout_ms: Option<u64>,
    /// Shared secret of the cluster: peers prove they hold it in a
    /// challenge-response handshake before anything else is read (visible
    /// in `ps`: prefer --cluster-secret-file). Without one, a node with
    /// --members warns: anyone who reaches the peer port can join.
    #[arg(long, env = "TANDEM_CLUSTER_SECRET", hide_env_values = true, conflicts_with = "cluster_secret_file")]
    cluster_secret: Option<String>,
    /// File holding the cluster secret (first line; trailing whitespace
    /// ignored). `tandem up` writes one into its data directory.
    #[arg(long, env = "TANDEM_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// TEST KNOB: followers wait this long before applying each received
    /// batch, to make replication lag visible on purpose [default: 0].
    #[arg(long, env = "TANDEM_APPLY_DELAY_MS")]
    apply_delay_ms: Option<u64>,
    /// Automatic failover: how long a follower's lease grant binds it, ms
    /// (the leader holds its lease a drift margin less) [default: 400].
    #[arg(long, env = "TANDEM_LEASE_MS")]
    lease_ms: Option<u64>,
    /// Automatic failover: bound on any clock's rate error, percent; lease
    /// safety relies on it [default: 10].
    #[arg(long, env = "TANDEM_CLOCK_DRIFT_PERCENT")]
    clock_drift_percent: Option<u64>,
    /// Automatic failover: replace a leader a majority has not heard from
    /// for this long, ms (at least --lease-ms) [default: 400].
    #[arg(long, env = "TANDEM_FAILOVER_TIMEOUT_MS")]
    failover_timeout_ms: Option<u64>,
    /// Automatic failover: how often the control plane probes members, ms [default: 50].
    #[arg(long, env = "TANDEM_PROBE_INTERVAL_MS")]
    probe_interval_ms: Option<u64>,
    /// Threads serving client connections (1: one event loop, like Redis;
    /// more: a work-stealing pool) [default: 1].
    #[arg(long, env = "TANDEM_IO_THREADS")]
    io_threads: Option<usize>,
    /// Backup repository (a directory; local or a mounted remote filesystem)
    /// this node ships its log to continuously; see docs/backup.md.
    #[arg(long, env = "TANDEM_BACKUP_REPO")]
    backup_repo: Option<PathBuf>,
    /// Ship the open log to the backup repository at least this often, ms [default: 1000].
    #[arg(long, env = "TANDEM_ARCHIVE_INTERVAL_MS")]
    archive_interval_ms: Option<u64>,
    /// Size at which an archive file is sealed and the next one starts,
    /// bytes [default: 67108864].
    #[arg(long, env = "TANDEM_ARCHIVE_FILE_BYTES_MAX")]
    archive_file_bytes_max: Option<u64>,
    /// Loss budget, ms: while the archive lag exceeds it, writes are refused
    /// with -RPOBUDGET (0: off; needs --backup-repo; must exceed
    /// --archive-interval-ms) [default: 0].
    #[arg(long, env = "TANDEM_RPO_MAX_MS")]
    rpo_max_ms: Option<u64>,
    /// Leaderless keyspaces: compare Merkle trees with each other replica
    /// this often, ms [default: 10000].
    #[arg(long, env = "TANDEM_ANTI_ENTROPY_INTERVAL_MS")]
    anti_entropy_interval_ms: Option<u64>,
    /// Service name for Sentinel-aware clients (`SENTINEL
    /// get-master-addr-by-name NAME`, `+switch-master`) [default: tandem].
    #[arg(long, env = "TANDEM_SENTINEL_NAME")]
    sentinel_name: Option<String>,
    /// Print one JSON line {"client_addr":..,"admin_addr":..} on stdout when
    /// ready (for scripts and tests that use port 0).
    #[arg(long)]
    print_ready: bool,
}

impl ServerArgs {
    fn into_config(self) -> Result<(Config, bool), String> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                Config::from_toml(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident).+ <- $value:expr) => {
                if let Some(v) = $value {
                    c.$($field).+ = v;
                }
            };
        }
        set!(node_id <- self.node_id);
        set!(data_dir <- self.data_dir);
        set!(client_addr <- self.client_addr);
        set!(admin_addr <- self.admin_addr);
        set!(peer_addr <- self.peer_addr);
        set!(fsync <- self.fsync);
        set!(snapshot_entries <- self.snapshot_entries);
        set!(io_threads <- self.io_threads);
        set!(segment_bytes_max <- self.segment_bytes_max);
        if let Some(m) = &self.members {
            c.members = tandem_node::config::parse_members(m).map_err(|e| format!("--members: {e}"))?;
        }
        if self.leader.is_some() {
            c.leader = self.leader;
        }
        c.join |= self.join;
        set!(control_heartbeat_ms <- self.control_heartbeat_ms);
        set!(control_election_timeout_min_ms <- self.control_election_timeout_min_ms);
        set!(control_election_timeout_max_ms <- self.control_election_timeout_max_ms);
        set!(ack <- self.ack);
        set!(ack_level <- self.ack_level);
        set!(ack_timeout_ms <- self.ack_timeout_ms);
        set!(apply_delay_ms <- self.apply_delay_ms);
        set!(lease_ms <- self.lease_ms);
        set!(clock_drift_percent <- self.clock_drift_percent);
        set!(failover_timeout_ms <- self.failover_timeout_ms);
        set!(probe_interval_ms <- self.probe_interval_ms);
        if self.backup_repo.is_some() {
            c.backup_repo = self.backup_repo;
        }
        set!(archive_interval_ms <- self.archive_interval_ms);
        set!(rpo_max_ms <- self.rpo_max_ms);
        set!(anti_entropy_interval_ms <- self.anti_entropy_interval_ms);
        if let Some(name) = self.sentinel_name {
            c.sentinel_name = name;
        }
        set!(archive_file_bytes_max <- self.archive_file_bytes_max);
        if self.cluster_secret.is_some() {
            c.cluster_secret = self.cluster_secret;
        }
        if let Some(path) = &self.cluster_secret_file {
            c.cluster_secret = Some(read_secret_file(path, "--cluster-secret-file")?);
        }
        if self.admin_token.is_some() {
            c.admin_token = self.admin_token;
        }
        if let Some(path) = &self.admin_token_file {
            c.admin_token = Some(read_secret_file(path, "--admin-token-file")?);
        }
        c.fault_injection |= self.fault_injection;
        set!(limits.clients_max <- self.clients_max);
        set!(limits.bulk_bytes_max <- self.bulk_bytes_max);
        set!(limits.array_len_max <- self.array_len_max);
        set!(limits.inline_bytes_max <- self.inline_bytes_max);
        set!(limits.query_buffer_bytes_max <- self.query_buffer_bytes_max);
        set!(limits.reply_buffer_bytes_max <- self.reply_buffer_bytes_max);
        set!(limits.entry_bytes_max <- self.entry_bytes_max);
        if let Some(m) = &self.maxmemory {
            c.maxmemory = tandem_node::maxmemory::parse_bytes(m).map_err(|e| format!("--maxmemory: {e}"))?;
        }
        if let Some(p) = &self.maxmemory_policy {
            c.maxmemory_policy = p.parse().map_err(|e| format!("--maxmemory-policy: {e}"))?;
        }
        set!(maxmemory_samples <- self.maxmemory_samples);
        set!(lua_time_limit_ms <- self.lua_time_limit_ms);
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key;
        }
        if self.tls_ca.is_some() {
            c.tls_ca = self.tls_ca;
        }
        if self.requirepass.is_some() {
            c.requirepass = self.requirepass;
        }
        if let Some(path) = &self.requirepass_file {
            c.requirepass = Some(read_secret_file(path, "--requirepass-file")?);
        }
        c.validate()?;
        Ok((c, self.print_ready))
    }
}

/// Reads a secret from a file: its first line, trailing whitespace removed
/// (so `echo secret > file` works). An empty secret is an error.
pub fn read_secret_file(path: &std::path::Path, flag: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim_end().to_string();
    if secret.is_empty() {
        return Err(format!("{flag}: {} holds no secret (its first line is empty)", path.display()));
    }
    Ok(secret)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term.recv() => tracing::info!("received SIGTERM"),
    }
}

/// Runs `tandem server`.
pub fn run(args: ServerArgs) -> ExitCode {
    let (config, print_ready) = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = tandem_backup::restore::refuse_half_restored(&config.data_dir) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match config.io_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
    .expect("tokio runtime");
    let result = runtime.block_on(tandem_node::run(config, shutdown_signal(), |c| {
        if print_ready {
            println!(
                "{}",
                serde_json::json!({ "client_addr": c.client_addr, "admin_addr": c.admin_addr, "peer_addr": c.peer_addr })
            );
        }
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
