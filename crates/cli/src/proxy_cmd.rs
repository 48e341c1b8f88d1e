//! `tandem proxy`: the RESP router with session guarantees (see
//! `docs/session-guarantees.md`). Parses flags into a
//! [`tandem_proxy::ProxyConfig`] and runs it until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tandem_core::session::{Balance, Ryw, SessionConfig};
use tandem_proxy::{ProxyConfig, POLL_INTERVAL_MS_DEFAULT};

/// Read-your-writes strategy (the default of every client connection).
#[derive(Clone, Copy, ValueEnum)]
pub enum RywArg {
    /// None.
    Off,
    /// Only nodes that applied the connection's last write (WAITLSN up to --ryw-wait-ms, then the leader).
    Token,
    /// The leader for --leader-window-ms after each write.
    LeaderWindow,
}

/// How reads are spread over eligible followers.
#[derive(Clone, Copy, ValueEnum)]
pub enum BalanceArg {
    /// The most caught-up follower.
    LeastLag,
    /// Each eligible follower in turn (per connection).
    RoundRobin,
}

/// Flags of `tandem proxy`.
#[derive(Args)]
pub struct ProxyArgs {
    /// RESP address clients connect to.
    #[arg(long, default_value = "127.0.0.1:7370", env = "TANDEM_PROXY_LISTEN")]
    listen: String,
    /// HTTP address serving `GET /metrics` (Prometheus text); none by default.
    #[arg(long, env = "TANDEM_PROXY_ADMIN_ADDR")]
    admin_addr: Option<String>,
    /// Client (RESP) addresses of the nodes, comma separated.
    #[arg(long, value_delimiter = ',', required = true, env = "TANDEM_PROXY_NODES")]
    nodes: Vec<String>,
    /// Read-your-writes default of each connection (SESSION SET RYW changes it).
    #[arg(long, value_enum, default_value = "off")]
    ryw: RywArg,
    /// With --ryw token: how long to wait on a follower before using the leader.
    #[arg(long, default_value_t = 100)]
    ryw_wait_ms: u64,
    /// With --ryw leader-window: how long after a write reads go to the leader.
    #[arg(long, default_value_t = 1000)]
    leader_window_ms: u64,
    /// Monotonic reads: never read from a node behind what the connection has seen.
    #[arg(long)]
    monotonic: bool,
    /// Bounded staleness: only followers at most this many ms behind.
    #[arg(long)]
    max_lag_ms: Option<u64>,
    /// Every read goes to the leader.
    #[arg(long)]
    strong: bool,
    /// How reads are spread over eligible followers.
    #[arg(long, value_enum, default_value = "least-lag")]
    balance: BalanceArg,
    /// How often every node's INFO replication is polled.
    #[arg(long, default_value_t = POLL_INTERVAL_MS_DEFAULT)]
    poll_interval_ms: u64,
}

impl ProxyArgs {
    fn into_config(self) -> ProxyConfig {
        let ryw = match self.ryw {
            RywArg::Off => Ryw::Off,
            RywArg::Token => Ryw::Token { wait_ms: self.ryw_wait_ms },
            RywArg::LeaderWindow => Ryw::LeaderWindow { ms: self.leader_window_ms },
        };
        let balance = match self.balance {
            BalanceArg::LeastLag => Balance::LeastLag,
            BalanceArg::RoundRobin => Balance::RoundRobin,
        };
        let session =
            SessionConfig { ryw, monotonic: self.monotonic, max_lag_ms: self.max_lag_ms, strong: self.strong, balance };
        ProxyConfig {
            listen: self.listen,
            nodes: self.nodes,
            session,
            poll_interval_ms: self.poll_interval_ms.max(1),
            admin_addr: self.admin_addr,
        }
    }
}

/// Runs the proxy; prints `{"proxy_addr":"HOST:PORT"}` on stdout once it
/// accepts clients.
pub fn run(args: ProxyArgs) -> ExitCode {
    let config = args.into_config();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            r = tandem_proxy::run(config, |addr| {
                use std::io::Write;
                tracing::info!("tandem proxy listening on {addr}");
                println!("{}", serde_json::json!({ "proxy_addr": addr.to_string() }));
                let _ = std::io::stdout().flush();
            }) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
