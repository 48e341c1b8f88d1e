//! `tandem up`: a local cluster of N `tandem server` processes for trying
//! Tandem out. Node i (from 1) listens on base+10(i-1) (RESP), +1 (admin)
//! and +2 (peer), keeps its data in DATA_DIR/node-i. The nodes elect their
//! leader and fail over automatically (`--static-leader`: node 1 leads,
//! fixed). Every node's log lines are printed with a `[node i]` prefix; a
//! node that dies is reported and the others keep running (kill the leader
//! to watch a failover); Ctrl-C (or SIGTERM) stops them all gracefully.
//! The nodes share a random cluster secret kept in DATA_DIR/cluster-secret
//! (created on first use, owner-only), so nothing else can join them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Args;

/// Flags of `tandem up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Client port of node 1; node i uses base+10(i-1), admin +1, peer +2.
    #[arg(long, default_value_t = 7379)]
    base_port: u16,
    /// Parent of the nodes' data directories (node-1, node-2, ...).
    #[arg(long, default_value = "tandem-data")]
    data_dir: PathBuf,
    /// Node 1 leads, fixed (static roles, no leases, no automatic failover).
    #[arg(long)]
    static_leader: bool,
    /// Start only node N again (after it was killed) with exactly the flags
    /// `tandem up` gave it, in the foreground, while the others run; pass
    /// the same --nodes/--base-port/--data-dir/--static-leader as `up`.
    #[arg(long, value_name = "N")]
    restart: Option<u64>,
    /// Extra flags for every `tandem server`, e.g. `-- --ack "any 1" --fsync always`.
    #[arg(last = true)]
    server_args: Vec<String>,
}

/// Largest cluster `tandem up` starts (ports and processes on one machine).
const NODES_MAX: u64 = 9;
/// How long a node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct Node {
    id: u64,
    child: Child,
    client: u16,
    admin: u16,
}

fn terminate(children: &[Node]) {
    for n in children {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(n.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// The cluster secret file in `data_dir`, written with a fresh random
/// secret (readable by the owner only) if there is none yet. (Also used by
/// `tandem lab run --real`.)
pub(crate) fn cluster_secret_file(data_dir: &std::path::Path) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("cluster-secret");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create the cluster secret file {}: {e}", path.display()))?;
    writeln!(file, "{}", tandem_node::peer_auth::random_secret())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write the cluster secret file {}: {e}", path.display()))?;
    Ok(path)
}

/// Where one node of a local cluster listens (`HOST:PORT` each).
pub(crate) struct NodeAddrs {
    pub client: String,
    pub admin: String,
    pub peer: String,
}

/// The `tandem server` flags `tandem up` gives node `id` (shared with
/// `tandem lab run --real`, which starts its clusters the same way):
/// `members` is the `--members` list, `static_leader` makes node 1 lead
/// with fixed roles, `extra` is appended.
pub(crate) fn node_server_args(
    id: u64,
    data_dir: &std::path::Path,
    addrs: &NodeAddrs,
    members: &str,
    secret_file: &std::path::Path,
    static_leader: bool,
    extra: &[String],
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "server".into(),
        "--node-id".into(),
        id.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--client-addr".into(),
        addrs.client.clone(),
        "--admin-addr".into(),
        addrs.admin.clone(),
        "--peer-addr".into(),
        addrs.peer.clone(),
        "--members".into(),
        members.to_string(),
        "--cluster-secret-file".into(),
        secret_file.display().to_string(),
    ];
    if static_leader {
        v.extend(["--leader".into(), "1".into()]);
    }
    v.extend(extra.iter().cloned());
    v
}

/// Runs `tandem up`.
pub fn run(a: UpArgs) -> ExitCode {
    if a.nodes == 0 || a.nodes > NODES_MAX {
        eprintln!("error: --nodes must be between 1 and {NODES_MAX}");
        return ExitCode::from(2);
    }
    if u32::from(a.base_port) + 10 * a.nodes as u32 > u32::from(u16::MAX) {
        eprintln!("error: --base-port {} leaves no room for {} nodes", a.base_port, a.nodes);
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find the tandem binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = |i: u64, off: u16| a.base_port + 10 * (i as u16 - 1) + off;
    let members: Vec<String> = (1..=a.nodes).map(|i| format!("{i}=127.0.0.1:{}", port(i, 2))).collect();
    let members = members.join(",");
    let secret_file = match cluster_secret_file(&a.data_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The `tandem server` flags of node i (also printed as its restart command).
    let server_args = |i: u64| -> Vec<String> {
        let addrs = NodeAddrs {
            client: format!("127.0.0.1:{}", port(i, 0)),
            admin: format!("127.0.0.1:{}", port(i, 1)),
            peer: format!("127.0.0.1:{}", port(i, 2)),
        };
        node_server_args(
            i,
            &a.data_dir.join(format!("node-{i}")),
            &addrs,
            &members,
            &secret_file,
            a.static_leader,
            &a.server_args,
        )
    };
    if let Some(n) = a.restart {
        if n == 0 || n > a.nodes {
            eprintln!("error: --restart {n}: there are nodes 1..={} (pass the same --nodes as `tandem up`)", a.nodes);
            return ExitCode::from(2);
        }
        eprintln!("restarting node {n}: tandem {}", server_args(n).join(" "));
        // exec: this process becomes the node, so signals reach it directly.
        use std::os::unix::process::CommandExt;
        let e = Command::new(&exe).args(server_args(n)).exec();
        eprintln!("error: cannot start node {n}: {e}");
        return ExitCode::FAILURE;
    }
    let mut nodes: Vec<Node> = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<u64>();
    for i in 1..=a.nodes {
        let mut cmd = Command::new(&exe);
        cmd.args(server_args(i)).arg("--print-ready").stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: cannot start node {i}: {e}");
                terminate(&nodes);
                return ExitCode::FAILURE;
            }
        };
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[node {i}] {line}");
            }
        });
        let stdout = child.stdout.take().expect("piped");
        let tx = ready_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with('{') {
                    let _ = tx.send(i);
                } else {
                    outln!("[node {i}] {line}");
                }
            }
        });
        nodes.push(Node { id: i, child, client: port(i, 0), admin: port(i, 1) });
    }
    for _ in 0..a.nodes {
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            eprintln!("error: not every node became ready within {READY_TIMEOUT:?}; see the [node i] lines above");
            terminate(&nodes);
            return ExitCode::FAILURE;
        }
    }
    if a.static_leader {
        outln!("tandem up: {} nodes, node 1 leads (static; data in {})", a.nodes, a.data_dir.display());
    } else {
        outln!(
            "tandem up: {} nodes; they elect a leader and fail over automatically (data in {})",
            a.nodes,
            a.data_dir.display()
        );
    }
    outln!("{:<6} {:<8} {:<18} {:<18} {:<18}", "node", "pid", "client (RESP)", "admin (HTTP)", "peer");
    for n in &nodes {
        outln!(
            "{:<6} {:<8} 127.0.0.1:{:<8} 127.0.0.1:{:<8} 127.0.0.1:{:<8}",
            n.id,
            n.child.id(),
            n.client,
            n.admin,
            port(n.id, 2)
        );
    }
    let admins: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.admin)).collect();
    outln!("who leads: redis-cli -p {} ROLE (or INFO replication)", nodes[0].client);
    outln!("status:    tandem status --admin {}", admins.join(","));
    let same_flags = {
        let mut f = vec![format!("--nodes {}", a.nodes)];
        if a.base_port != 7379 {
            f.push(format!("--base-port {}", a.base_port));
        }
        if a.data_dir != std::path::Path::new("tandem-data") {
            f.push(format!("--data-dir {}", a.data_dir.display()));
        }
        if a.static_leader {
            f.push("--static-leader".into());
        }
        if !a.server_args.is_empty() {
            f.push(format!("-- {}", a.server_args.join(" ")));
        }
        f.join(" ")
    };
    outln!("restart a killed node N (while the others run): tandem up --restart N {same_flags}");
    for n in &nodes {
        outln!("  node {}: tandem {}", n.id, server_args(n.id).join(" "));
    }
    outln!("Ctrl-C stops the cluster.");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let exited = runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut reported: Vec<u64> = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return None,
                _ = term.recv() => return None,
                _ = tick.tick() => {
                    let mut alive = 0;
                    for n in nodes.iter_mut() {
                        match n.child.try_wait() {
                            Ok(Some(status)) if a.static_leader => return Some((n.id, status)),
                            Ok(Some(status)) => {
                                if !reported.contains(&n.id) {
                                    eprintln!("node {} exited ({status}); the others carry on (Ctrl-C stops them)", n.id);
                                    reported.push(n.id);
                                }
                            }
                            _ => alive += 1,
                        }
                    }
                    if alive == 0 {
                        return Some((nodes[0].id, nodes[0].child.wait().expect("exited")));
                    }
                }
            }
        }
    });
    if let Some((id, status)) = exited {
        eprintln!("node {id} exited ({status}); stopping the others");
    } else {
        eprintln!("stopping the cluster");
    }
    terminate(&nodes);
    let mut ok = exited.is_none();
    for n in nodes.iter_mut() {
        match n.child.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("node {} exited with {s}", n.id);
                ok = false;
            }
            Err(e) => eprintln!("node {}: {e}", n.id),
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
