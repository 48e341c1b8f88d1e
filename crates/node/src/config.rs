//! Node configuration: every setting, its default and its documentation.
//!
//! The same struct is read from a TOML file (`--config`) and overridden by
//! command-line flags and `TANDEM_*` environment variables (the CLI does the
//! merging; flags win). Every size and count limit lives here with a named
//! default, so an operator can find and change each one.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tandem_storage::log::FsyncPolicy;

/// Default maximum number of client connections (Redis's `maxclients`).
pub const CLIENTS_MAX: usize = 10_000;
/// Default largest bulk string a client may send (Redis's `proto-max-bulk-len`).
pub const BULK_BYTES_MAX: usize = tandem_core::resp::BULK_BYTES_MAX;
/// Default largest number of elements in one command.
pub const ARRAY_LEN_MAX: usize = tandem_core::resp::ARRAY_LEN_MAX;
/// Default longest inline (non-RESP) command line.
pub const INLINE_BYTES_MAX: usize = tandem_core::resp::INLINE_BYTES_MAX;
/// Default bound on unparsed input buffered per connection (pipelined
/// requests plus one partial command; Redis's `client-query-buffer-limit`).
pub const QUERY_BUFFER_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Default bound on replies buffered per connection before the connection
/// is closed (a client that asks for more than this in one pipeline, e.g.
/// `KEYS *` on a huge keyspace, is disconnected instead of exhausting memory).
pub const REPLY_BUFFER_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Default log segment size before rolling to a new file.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Default for `archive_interval_ms`: how often the open log is shipped to
/// the backup repository.
pub const ARCHIVE_INTERVAL_MS: u64 = 1000;
/// Default number of log entries after which a snapshot is taken.
pub const SNAPSHOT_ENTRIES: u64 = 1_000_000;

/// Everything a node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id in the cluster.
    pub node_id: u64,
    /// Where the log, snapshots and metadata live.
    pub data_dir: PathBuf,
    /// RESP listener for clients.
    pub client_addr: SocketAddr,
    /// HTTP listener for `/healthz`, `/status`, `/metrics`.
    pub admin_addr: SocketAddr,
    /// Listener for replication between nodes (reserved; used by replication).
    pub peer_addr: SocketAddr,
    /// When a write counts as durable: `always`, `batch`, `everysec`, `never`.
    #[serde(with = "fsync_serde")]
    pub fsync: FsyncPolicy,
    /// Password clients must give with `AUTH` / `HELLO .. AUTH` (none: no auth).
    pub requirepass: Option<String>,
    /// PEM certificate chain of this node: with `tls_key`, the client port
    /// speaks only TLS and the admin port only HTTPS (docs/security.md).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign the members' certificates.
    pub tls_ca: Option<PathBuf>,
    /// Size and count limits.
    pub limits: LimitsConfig,
    /// Most bytes the keys and values may take (the store's running
    /// estimate, `INFO memory` `used_memory`); 0: no limit. A number of
    /// bytes or Redis's syntax (`"100mb"`, `"1gb"`).
    #[serde(with = "crate::maxmemory::bytes_serde")]
    pub maxmemory: u64,
    /// What the leader does at `maxmemory`: `noeviction` (writes that may
    /// grow memory get -OOM), `allkeys-lru`, `allkeys-random`,
    /// `volatile-lru`, `volatile-ttl`.
    #[serde(with = "crate::maxmemory::policy_serde")]
    pub maxmemory_policy: tandem_core::evict::Policy,
    /// Keys sampled per eviction (Redis's `maxmemory-samples`).
    pub maxmemory_samples: usize,
    /// A Lua script (`EVAL`) running longer than this is aborted and its
    /// writes are undone (`CONFIG GET lua-time-limit`).
    pub lua_time_limit_ms: u64,
    /// Take a snapshot (and truncate the log behind it) after this many log
    /// entries; 0 disables automatic snapshots.
    pub snapshot_entries: u64,
    /// Log segment size before rolling.
    pub segment_bytes_max: u64,
    /// Cluster members and their peer addresses (`1=127.0.0.1:7381,...`).
    /// Empty: a standalone node that leads itself.
    #[serde(with = "members_serde")]
    pub members: Vec<(u64, SocketAddr)>,
    /// Which member leads, fixed (static roles; change with `REPLICAOF`).
    /// `None` with members configured: automatic failover — the control
    /// plane elects and replaces the leader. Without members: itself.
    pub leader: Option<u64>,
    /// Automatic failover: how long a follower's lease grant binds it (its
    /// clock). The leader holds its lease for
    /// `lease_ms · (100 − clock_drift_percent) / (100 + clock_drift_percent)`
    /// after the grant's stamp; see docs/failover.md.
    pub lease_ms: u64,
    /// Automatic failover: the bound on how far any node's clock rate may
    /// differ from real time, in percent. Lease safety relies on it.
    pub clock_drift_percent: u64,
    /// Automatic failover: a leader not heard from by a majority for this
    /// long is replaced (at least `lease_ms`).
    pub failover_timeout_ms: u64,
    /// Automatic failover: how often the control plane's leader probes
    /// every member.
    pub probe_interval_ms: u64,
    /// Start the control plane without initializing it: this node waits to
    /// be added by `POST /cluster/members` (or `tandem cluster add`) on a
    /// running cluster. Only meaningful with members and no leader.
    pub join: bool,
    /// Control plane (Raft) heartbeat interval, ms.
    pub control_heartbeat_ms: u64,
    /// Control plane election timeout, lower bound, ms.
    pub control_election_timeout_min_ms: u64,
    /// Control plane election timeout, upper bound, ms.
    pub control_election_timeout_max_ms: u64,
    /// The keyspace's default ack policy: `async`, `any k`,
    /// `first k (a,b,..)`, `all`.
    pub ack: String,
    /// What a follower must have done for its ack to count: `flush` (on its
    /// disk) or `apply` (on disk and visible to reads).
    pub ack_level: String,
    /// How long a write waits for its policy before it fails (0: forever).
    pub ack_timeout_ms: u64,
    /// Shared secret of the cluster: every peer connection opens with a
    /// mutual challenge-response under it (`peer_auth`); a peer that does
    /// not prove it is refused before any message is read. `None`: the
    /// empty secret, which anyone can use (the node warns at start).
    pub cluster_secret: Option<String>,
    /// Bearer token for the admin port: when set, every route but
    /// `/healthz` needs `Authorization: Bearer <token>`. Required when the
    /// admin port listens on a non-loopback address.
    pub admin_token: Option<String>,
    /// Serve `POST /faults` (link-fault injection, for tests and drills).
    /// Off by default: the route does not exist.
    pub fault_injection: bool,
    /// Test knob: a follower waits this long before applying each batch it
    /// receives (to make replication lag visible on purpose). Never set it
    /// in production.
    pub apply_delay_ms: u64,
    /// Threads serving client connections: 1 runs every connection on one
    /// event-loop thread (like Redis; the best choice on small machines),
    /// more spreads them over a work-stealing pool. The log writer always
    /// has a thread of its own.
    pub io_threads: usize,
    /// Backup repository (a directory, local or a mounted remote filesystem)
    /// that this node ships its log to continuously (none: no archiving).
    pub backup_repo: Option<PathBuf>,
    /// The log is shipped to the backup repository at least this often.
    pub archive_interval_ms: u64,
    /// An archive file is sealed and the next one started at this size.
    pub archive_file_bytes_max: u64,
    /// Declared loss budget: while the archive lag exceeds it, writes are
    /// refused (`-RPOBUDGET`). 0: off.
    pub rpo_max_ms: u64,
    /// Leaderless keyspaces compare Merkle trees with each other replica
    /// this often (anti-entropy).
    pub anti_entropy_interval_ms: u64,
    /// Keyspaces (`[[keyspace]]` tables). Without a control plane these are
    /// the node's keyspaces; with one, they are added to the cluster map if
    /// it lacks them (the map then rules, and changes at run time).
    pub keyspace: Vec<KeyspaceConfig>,
    /// The service name this node answers Sentinel commands for
    /// (`SENTINEL get-master-addr-by-name NAME`) and puts in
    /// `+switch-master` messages.
    pub sentinel_name: String,
}

/// One `[[keyspace]]` table of the config file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceConfig {
    /// The keyspace's name.
    pub name: String,
    /// Keys with this prefix belong to it (the longest matching prefix wins).
    pub prefix: String,
    /// Replication mode: `single-leader`, `multi-leader` or `leaderless`.
    #[serde(default = "default_keyspace_mode")]
    pub mode: String,
    /// Single-leader: ack policy (`async`, `any k`, `first k (a,b)`, `all`);
    /// none: `ack`.
    pub ack: Option<String>,
    /// Single-leader: `flush` or `apply`; none: `ack_level`.
    pub ack_level: Option<String>,
    /// Multi-leader and leaderless: `lww` (default), `siblings` or `crdt`.
    pub conflict: Option<String>,
    /// Leaderless: replicas per key (default 3).
    pub n: Option<u8>,
    /// Leaderless: write quorum (default a majority of `n`).
    pub w: Option<u8>,
    /// Leaderless: read quorum (default a majority of `n`).
    pub r: Option<u8>,
    /// Leaderless: sloppy quorum with hinted handoff.
    #[serde(default)]
    pub sloppy: bool,
}

fn default_keyspace_mode() -> String {
    "single-leader".into()
}

/// Size and count limits; past one, the client gets an error (or, where the
/// byte stream cannot be trusted any more, its connection is closed) and the
/// node keeps serving everyone else.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum simultaneous client connections.
    pub clients_max: usize,
    /// Largest bulk string in a request.
    pub bulk_bytes_max: usize,
    /// Most elements in one request.
    pub array_len_max: usize,
    /// Longest inline command line.
    pub inline_bytes_max: usize,
    /// Most unparsed request bytes buffered per connection.
    pub query_buffer_bytes_max: usize,
    /// Most reply bytes buffered per connection.
    pub reply_buffer_bytes_max: usize,
    /// Most bytes one write's effects may take in the log (one entry); a
    /// write over it is refused whole. At most
    /// `tandem_core::write::ENTRY_PAYLOAD_BYTES_MAX` (the default).
    pub entry_bytes_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            clients_max: CLIENTS_MAX,
            bulk_bytes_max: BULK_BYTES_MAX,
            array_len_max: ARRAY_LEN_MAX,
            inline_bytes_max: INLINE_BYTES_MAX,
            query_buffer_bytes_max: QUERY_BUFFER_BYTES_MAX,
            reply_buffer_bytes_max: REPLY_BUFFER_BYTES_MAX,
            entry_bytes_max: tandem_core::write::ENTRY_PAYLOAD_BYTES_MAX,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("tandem-data"),
            client_addr: "127.0.0.1:7379".parse().expect("valid address"),
            admin_addr: "127.0.0.1:7380".parse().expect("valid address"),
            peer_addr: "127.0.0.1:7381".parse().expect("valid address"),
            fsync: FsyncPolicy::Batch,
            requirepass: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            limits: LimitsConfig::default(),
            maxmemory: 0,
            maxmemory_policy: tandem_core::evict::Policy::NoEviction,
            maxmemory_samples: tandem_core::evict::SAMPLES_DEFAULT,
            lua_time_limit_ms: crate::scripting::LUA_TIME_LIMIT_MS_DEFAULT,
            snapshot_entries: SNAPSHOT_ENTRIES,
            segment_bytes_max: SEGMENT_BYTES_MAX,
            io_threads: 1,
            members: Vec::new(),
            leader: None,
            join: false,
            control_heartbeat_ms: crate::control::HEARTBEAT_MS_DEFAULT,
            control_election_timeout_min_ms: crate::control::ELECTION_TIMEOUT_MIN_MS_DEFAULT,
            control_election_timeout_max_ms: crate::control::ELECTION_TIMEOUT_MAX_MS_DEFAULT,
            ack: "async".into(),
            ack_level: "flush".into(),
            ack_timeout_ms: 5_000,
            cluster_secret: None,
            admin_token: None,
            fault_injection: false,
            apply_delay_ms: 0,
            lease_ms: 400,
            clock_drift_percent: 10,
            failover_timeout_ms: 400,
            probe_interval_ms: 50,
            backup_repo: None,
            archive_interval_ms: ARCHIVE_INTERVAL_MS,
            archive_file_bytes_max: tandem_backup::archive::ARCHIVE_FILE_BYTES_MAX,
            rpo_max_ms: 0,
            anti_entropy_interval_ms: 10_000,
            sentinel_name: "tandem".into(),
            keyspace: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a TOML configuration file's text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks settings that depend on each other. Returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.lease_config().validate().map_err(|e| format!("lease: {e}"))?;
        if self.failover_timeout_ms < self.lease_ms {
            return Err(format!(
                "failover_timeout_ms ({}) must be at least lease_ms ({}): a follower cannot help replace a leader \
                 while its lease grant still binds it",
                self.failover_timeout_ms, self.lease_ms
            ));
        }
        if !self.admin_addr.ip().is_loopback() && self.admin_token.is_none() {
            return Err(format!(
                "the admin port listens on {}, which is not a loopback address, and no admin token is set: anyone \
                 who reaches it could read every value (/backup) and change the cluster; set --admin-token-file \
                 (or --admin-token / TANDEM_ADMIN_TOKEN), or listen on 127.0.0.1",
                self.admin_addr
            ));
        }
        if self.admin_token.as_deref() == Some("") {
            return Err("the admin token is empty".into());
        }
        let entry_max = tandem_core::write::ENTRY_PAYLOAD_BYTES_MAX;
        if self.limits.entry_bytes_max == 0 || self.limits.entry_bytes_max > entry_max {
            return Err(format!(
                "entry_bytes_max ({}) must be between 1 and {entry_max}, the most one log record, peer frame and \
                 snapshot chunk carry",
                self.limits.entry_bytes_max
            ));
        }
        crate::tls::validate(self)?;
        if self.lua_time_limit_ms == 0 {
            return Err("lua_time_limit_ms must be at least 1".into());
        }
        if self.maxmemory_samples == 0 || self.maxmemory_samples > 1024 {
            return Err(format!("maxmemory_samples ({}) must be between 1 and 1024", self.maxmemory_samples));
        }
        if self.probe_interval_ms == 0 {
            return Err("probe_interval_ms must be positive".into());
        }
        if self.anti_entropy_interval_ms == 0 {
            return Err("anti_entropy_interval_ms must be positive".into());
        }
        if !self.members.is_empty() && !self.members.iter().any(|(id, _)| *id == self.node_id) {
            return Err(format!("node_id {} is not among members", self.node_id));
        }
        if let Some(leader) = self.leader {
            if !self.members.is_empty() && !self.members.iter().any(|(id, _)| *id == leader) {
                return Err(format!("leader {leader} is not among members"));
            }
        }
        if self.control_heartbeat_ms == 0
            || self.control_election_timeout_min_ms <= self.control_heartbeat_ms
            || self.control_election_timeout_max_ms <= self.control_election_timeout_min_ms
        {
            return Err(format!(
                "control plane timing must satisfy 0 < heartbeat ({}) < election timeout min ({}) < max ({}) (ms)",
                self.control_heartbeat_ms, self.control_election_timeout_min_ms, self.control_election_timeout_max_ms
            ));
        }
        if self.join && (self.members.is_empty() || self.leader.is_some()) {
            return Err("--join needs --members and no --leader (it joins a control-plane cluster)".into());
        }
        self.durability()?;
        self.keyspace_defs()?;
        if self.backup_repo.is_some() && self.archive_interval_ms == 0 {
            return Err("archive_interval_ms must be at least 1".into());
        }
        if self.rpo_max_ms > 0 {
            if self.backup_repo.is_none() {
                return Err("rpo_max_ms needs backup_repo: the budget is measured against the log archive".into());
            }
            if self.rpo_max_ms <= self.archive_interval_ms {
                return Err(format!(
                    "rpo_max_ms {} must exceed archive_interval_ms {}: the archive lag reaches the interval between passes even when healthy",
                    self.rpo_max_ms, self.archive_interval_ms
                ));
            }
        }
        Ok(())
    }

    /// The default durability requirement of the keyspace.
    pub fn durability(&self) -> Result<tandem_core::repl::policy::Durability, String> {
        Ok(tandem_core::repl::policy::Durability {
            policy: self.ack.parse().map_err(|e: tandem_core::repl::policy::PolicyParseError| e.to_string())?,
            level: self.ack_level.parse().map_err(|e: tandem_core::repl::policy::PolicyParseError| e.to_string())?,
            timeout_ms: self.ack_timeout_ms,
        })
    }

    /// The `[[keyspace]]` tables as validated definitions.
    pub fn keyspace_defs(&self) -> Result<Vec<tandem_core::keyspace::KeyspaceDef>, String> {
        let defs = self
            .keyspace
            .iter()
            .map(|k| {
                crate::keyspaces::definition(&crate::keyspaces::CreateRequest {
                    name: k.name.clone(),
                    prefix: k.prefix.clone(),
                    mode: k.mode.clone(),
                    ack: k.ack.clone(),
                    ack_level: k.ack_level.clone(),
                    conflict: k.conflict.clone(),
                    n: k.n,
                    w: k.w,
                    r: k.r,
                    sloppy: k.sloppy,
                })
                .map_err(|e| format!("[[keyspace]] {:?}: {e}", k.name))
            })
            .collect::<Result<Vec<_>, String>>()?;
        tandem_core::keyspace::Keyspaces::new(defs.clone()).map_err(|e| format!("[[keyspace]]: {e}"))?;
        Ok(defs)
    }

    /// Members configured and no fixed leader: the control plane elects and
    /// replaces the leader.
    pub fn automatic_failover(&self) -> bool {
        !self.members.is_empty() && self.leader.is_none()
    }

    /// Lease timing for automatic failover.
    pub fn lease_config(&self) -> tandem_core::failover::LeaseConfig {
        tandem_core::failover::LeaseConfig { lease_ms: self.lease_ms, clock_drift_percent: self.clock_drift_percent }
    }

    pub fn member_addr(&self, id: u64) -> Option<SocketAddr> {
        self.members.iter().find(|(i, _)| *i == id).map(|(_, a)| *a)
    }

    /// The RESP codec limits derived from this configuration.
    pub fn resp_limits(&self) -> tandem_core::resp::Limits {
        tandem_core::resp::Limits {
            bulk_bytes_max: self.limits.bulk_bytes_max,
            array_len_max: self.limits.array_len_max,
            inline_bytes_max: self.limits.inline_bytes_max,
        }
    }
}

/// Parses `1=127.0.0.1:7381,2=127.0.0.1:7391` into (id, address) pairs.
pub fn parse_members(text: &str) -> Result<Vec<(u64, SocketAddr)>, String> {
    let mut out: Vec<(u64, SocketAddr)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("member {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("member id {id:?} is not a number"))?;
        let addr: SocketAddr = addr.trim().parse().map_err(|_| format!("member address {addr:?} is not HOST:PORT"))?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("member id {id} appears twice"));
        }
        out.push((id, addr));
    }
    Ok(out)
}

mod members_serde {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &[(u64, SocketAddr)], s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = m.iter().map(|(id, a)| format!("{id}={a}")).collect();
        s.serialize_str(&text.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, SocketAddr)>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_members(&s).map_err(serde::de::Error::custom)
    }
}

mod fsync_serde {
    use super::FsyncPolicy;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &FsyncPolicy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FsyncPolicy, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!("unknown fsync policy {s:?} (always, batch, everysec, never)"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = Config::from_toml("node_id = 3\nfsync = \"always\"\n[limits]\nclients_max = 5\n").unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.limits.clients_max, 5);
        assert_eq!(c.limits.bulk_bytes_max, BULK_BYTES_MAX);
        assert!(Config::from_toml("nodeid = 3").is_err());
        let c = Config::from_toml("maxmemory = \"100mb\"\nmaxmemory_policy = \"allkeys-lru\"\n").unwrap();
        assert_eq!((c.maxmemory, c.maxmemory_policy), (100 << 20, tandem_core::evict::Policy::AllkeysLru));
        assert_eq!(Config::from_toml("maxmemory = 4096").unwrap().maxmemory, 4096);
        assert!(Config::from_toml("maxmemory_policy = \"allkeys-lfu\"").is_err());
        assert!(Config::from_toml("fsync = \"sometimes\"").is_err());
    }

    #[test]
    fn rpo_max_ms_needs_a_repository_and_must_exceed_the_archive_interval() {
        let c = Config::from_toml("rpo_max_ms = 2000\n").unwrap();
        assert!(c.validate().unwrap_err().contains("needs backup_repo"));
        let c = Config::from_toml("backup_repo = \"/r\"\nrpo_max_ms = 1000\narchive_interval_ms = 1000\n").unwrap();
        assert!(c.validate().unwrap_err().contains("must exceed archive_interval_ms"));
        let c = Config::from_toml("backup_repo = \"/r\"\nrpo_max_ms = 1500\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.archive_interval_ms, ARCHIVE_INTERVAL_MS);
    }

    #[test]
    fn cluster_settings_parse_and_validate() {
        let text = "node_id = 2\nmembers = \"1=127.0.0.1:7381, 2=127.0.0.1:7391\"\nleader = 1\nack = \"any 1\"\nack_level = \"apply\"\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.member_addr(1), Some("127.0.0.1:7381".parse().unwrap()));
        c.validate().unwrap();
        let bad = Config { node_id: 9, ..c.clone() };
        assert!(bad.validate().unwrap_err().contains("not among members"));
        let bad = Config { ack: "most".into(), ..c };
        assert!(bad.validate().is_err());
        assert!(parse_members("1=a:b").is_err());
        assert!(parse_members("1=127.0.0.1:1,1=127.0.0.1:2").unwrap_err().contains("twice"));
    }

    #[test]
    fn keyspace_tables_parse_and_validate() {
        let text = "[[keyspace]]\nname = \"carts\"\nprefix = \"cart:\"\nack = \"any 1\"\nack_level = \"apply\"\n\n\
                    [[keyspace]]\nname = \"users\"\nprefix = \"u:\"\nmode = \"single-leader\"\n";
        let c = Config::from_toml(text).unwrap();
        let defs = c.keyspace_defs().unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[0].name, "carts");
        c.validate().unwrap();
        let dup = Config::from_toml(
            "[[keyspace]]\nname = \"a\"\nprefix = \"p\"\n[[keyspace]]\nname = \"b\"\nprefix = \"p\"\n",
        )
        .unwrap();
        assert!(dup.validate().unwrap_err().contains("prefix"));
        assert!(Config::from_toml("[[keyspace]]\nname = \"a\"\nprefix = \"p\"\ncolour = \"red\"\n").is_err());
        let bad = Config::from_toml("[[keyspace]]\nname = \"a\"\nprefix = \"p\"\nack = \"most\"\n").unwrap();
        assert!(bad.validate().unwrap_err().contains("[[keyspace]] \"a\""));
    }
}
