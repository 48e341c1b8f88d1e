# Usage: python3 scripts/control_election_times.py target/release/tandem RUNS
#
# Measures: time from starting 3 `tandem server` processes (--members, no --leader)
# to all /cluster answers agreeing on one Raft leader; then kill -9 of that
# leader to the two survivors agreeing on a new one. Repeated N times.
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
BIN = sys.argv[1]; N = int(sys.argv[2])
def free_ports(n):
    ss = [socket.socket() for _ in range(n)]
    for s in ss: s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in ss]
    for s in ss: s.close()
    return ports
def cluster(admin):
    try:
        return json.load(urllib.request.urlopen(f"http://{admin}/cluster", timeout=1))
    except Exception:
        return None
def agreed(admins):
    ls = [ (cluster(a) or {}).get("status", {}).get("raft_leader") for a in admins ]
    return ls[0] if ls[0] is not None and all(l == ls[0] for l in ls) else None
elect, reelect = [], []
for run in range(N):
    ports = free_ports(3)
    members = ",".join(f"{i+1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    procs, admins, dirs = [], [], []
    t0 = time.monotonic()
    for i in range(3):
        d = tempfile.mkdtemp(prefix="tandem-measure-"); dirs.append(d)
        p = subprocess.Popen([BIN, "server", "--node-id", str(i+1), "--data-dir", d, "--client-addr", "127.0.0.1:0",
            "--admin-addr", "127.0.0.1:0", "--peer-addr", f"127.0.0.1:{ports[i]}", "--members", members, "--print-ready"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(p)
    for p in procs:
        admins.append(json.loads(p.stdout.readline())["admin_addr"])
    while (l := agreed(admins)) is None:
        time.sleep(0.005)
    elect.append(time.monotonic() - t0)
    t1 = time.monotonic()
    procs[l-1].send_signal(signal.SIGKILL); procs[l-1].wait()
    rest = [a for i, a in enumerate(admins) if i != l-1]
    while (n := agreed(rest)) in (None, l):
        time.sleep(0.005)
    reelect.append(time.monotonic() - t1)
    for p in procs:
        if p.poll() is None: p.send_signal(signal.SIGTERM); p.wait()
    for d in dirs: shutil.rmtree(d, ignore_errors=True)
def stats(xs):
    xs = sorted(x*1000 for x in xs)
    return f"min {xs[0]:.0f} ms, median {xs[len(xs)//2]:.0f} ms, max {xs[-1]:.0f} ms"
print(f"runs={N} first agreed raft leader after start (incl. process start): {stats(elect)}")
print(f"runs={N} new agreed raft leader after kill -9 of the raft leader: {stats(reelect)}")
