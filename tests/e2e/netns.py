"""Several "nodes" on one machine: network namespaces joined by a bridge.

    from netns import Net

    with Net() as net:                     # usA, usB, usC + a bridge namespace
        a, b, c = net.node("A"), net.node("B"), net.node("C")
        p = a.start(["redis-server", "--bind", "0.0.0.0", ...])
        r = c.run(["redis-cli", "-h", a.ip, "PING"])
        net.move_vip("A", "B")             # by hand (validating the harness)
        net.crash("A")                     # SIGKILL all of A's pids, cut its link

Layout (one test run; PID = this process's pid, so concurrent runs never
share a name; every name fits IFNAMSIZ):

    usbr-PID  (namespace)   br0 --+-- vA  <veth>  eth0 in usA-PID  10.77.X.1/24
                                  +-- vB  <veth>  eth0 in usB-PID  10.77.X.2/24
                                  +-- vC  <veth>  eth0 in usC-PID  10.77.X.3/24
    service address (VIP)   10.77.X.100/24, on whichever node is primary

X = 1 + PID % 250.  The bridge lives in its own namespace, so the root
namespace's routes, addresses and firewall are never touched, and traffic
between nodes never leaves the namespaces created here.

Contract:
  - everything created here is removed by close() -- on the `with` exit, at
    interpreter exit (atexit) and on SIGTERM/SIGINT via the harness handlers;
  - processes: the harness starts each in its own session and kills those
    process groups by pid; close() and crash() then SIGKILL whatever pid is
    still inside one of *our* namespaces (`ip netns pids`): only processes we
    started (or their children) can be in a namespace named after our pid;
  - temp dirs come from tmpdir() and are removed by close() unless keep() was
    called (a failing test keeps them and prints where they are);
  - stale namespaces of an earlier run that died hard (SIGKILL of the test)
    are removed by reap_stale(): only names of this exact pattern whose pid
    is no longer alive.
"""

import atexit
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import harness

PREFIX = "us"          # usA-PID, usB-PID, usC-PID, usbr-PID
NODE_DEV = "eth0"      # the node's interface, inside its namespace
VIP_HOST = 100         # 10.77.X.100 is the service address
_NAME_RE = re.compile(r"^us(A|B|C|D|br)-(\d+)$")


def _ip(*args, check=True, timeout=15):
    """Run `ip ARGS` (bounded); raise with its stderr when CHECK fails."""
    r = subprocess.run(["ip"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(map(str, args)),
                                          r.stderr.decode(errors="replace").strip()))
    return r


def _netns_add(name):
    """`ip netns add NAME`, one at a time on this machine.  The first add
    after boot turns /run/netns into a shared mount point (bind-mounted onto
    itself); two tests doing that at once stack two such mounts, and a
    namespace bound under the lower one looks like an empty file from then
    on ("ip netns exec" fails).  Later adds are quick, so the lock costs
    nothing."""
    lockdir = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    with open(os.path.join(lockdir, "understudy-netns-add.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ip("netns", "add", name)


def _pids_in(ns):
    r = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in r.stdout.split() if x.strip().isdigit()]


def _kill_ns_pids(ns, sig=signal.SIGKILL):
    """SIGKILL every process inside namespace NS (one of ours); returns them."""
    pids = _pids_in(ns)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def reap_stale():
    """Remove namespaces left by a run of this library that died hard."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.decode().splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME_RE.match(name)
        if m and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))):
            _kill_ns_pids(name)
            _ip("netns", "del", name, check=False)


class Node:
    """One network namespace with one interface on the test subnet."""

    def __init__(self, net, label, host):
        self.net, self.label = net, label
        self.ns = "%s%s-%d" % (PREFIX, label, net.pid)
        self.port = "v" + label                  # its veth end in the bridge namespace
        self.ip = "%s.%d" % (net.prefix, host)
        self.procs = []                          # Popen objects started here, in order

    def argv(self, argv):
        """ARGV run inside this node's namespace."""
        return ["ip", "netns", "exec", self.ns] + [str(a) for a in argv]

    def start(self, argv, **kw):
        """Start ARGV in this node (own session, killed at exit); returns Popen."""
        p = harness.start(self.argv(argv), **kw)
        self.procs.append(p)
        return p

    def run(self, argv, timeout=harness.DEFAULT_TIMEOUT, input=None):
        """Run ARGV in this node to completion (bounded); returns a harness.Result."""
        return harness.run(self.argv(argv), timeout=timeout, input=input)

    def ip_cmd(self, *args, check=True):
        return _ip("-n", self.ns, *args, check=check)

    def has_addr(self, addr):
        # check=True: an `ip` that cannot enter the namespace is an error
        # naming why, never a silent "the address is not here".
        r = self.ip_cmd("-4", "-o", "addr", "show", "dev", NODE_DEV)
        return (" %s/" % addr) in r.stdout.decode()

    def pids(self):
        return _pids_in(self.ns)

    def kill_all(self):
        """SIGKILL every process we started here (groups first, then any pid
        still in the namespace); returns the pids found in the namespace."""
        for p in self.procs:
            harness._kill_group(p, signal.SIGKILL)
        pids = _kill_ns_pids(self.ns)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return pids

    def link(self, up):
        """Bring this node's link up or down (both veth ends)."""
        state = "up" if up else "down"
        _ip("-n", self.net.bridge_ns, "link", "set", self.port, state, check=False)
        self.ip_cmd("link", "set", NODE_DEV, state, check=False)


class Net:
    """A private subnet of nodes A (primary), B (backup), C (client)."""

    def __init__(self, labels=("A", "B", "C"), keep_on_failure=True):
        harness_need_root()
        reap_stale()
        self.pid = os.getpid()
        self.x = 1 + self.pid % 250
        self.prefix = "10.77.%d" % self.x
        self.vip = "%s.%d" % (self.prefix, VIP_HOST)
        self.cidr = 24
        self.bridge_ns = "%sbr-%d" % (PREFIX, self.pid)
        self.nodes = {}
        self.tmpdirs = []
        self.kept = False
        self.keep_on_failure = keep_on_failure
        self._closed = False
        atexit.register(self.close)
        try:
            self._build(labels)
        except Exception:
            self.close()
            raise

    # -- construction

    def _build(self, labels):
        _netns_add(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        # br0 stands for the switch between machines, and a switch runs no
        # firewall: with br_netfilter built in, every bridged frame would
        # otherwise go through iptables hooks (per-namespace sysctls, so this
        # touches only our bridge's namespace).
        for fam in ("iptables", "ip6tables", "arptables"):
            _ip("netns", "exec", self.bridge_ns, "sysctl", "-q", "-w",
                "net.bridge.bridge-nf-call-%s=0" % fam, check=False)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, label in enumerate(labels):
            node = Node(self, label, i + 1)
            _netns_add(node.ns)
            self.nodes[label] = node
            node.ip_cmd("link", "set", "lo", "up")
            _ip("-n", self.bridge_ns, "link", "add", node.port, "type", "veth", "peer", "name",
                NODE_DEV, "netns", node.ns)
            _ip("-n", self.bridge_ns, "link", "set", node.port, "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", node.port, "up")
            node.ip_cmd("addr", "add", "%s/%d" % (node.ip, self.cidr), "dev", NODE_DEV)
            node.ip_cmd("link", "set", NODE_DEV, "up")
        # The bridge forwards at once (no STP); wait until every node reaches
        # the first one (a refused TCP connect proves the path: no ping here).
        first = self.nodes[labels[0]].ip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(reachable(n, first) for n in self.nodes.values()):
                return
            time.sleep(0.1)
        raise RuntimeError("nodes of %s could not reach %s" % (self.bridge_ns, first))

    def node(self, label):
        return self.nodes[label]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.keep_on_failure:
            self.keep()
        self.close()
        return False

    # -- temp dirs

    def tmpdir(self, name):
        d = tempfile.mkdtemp(prefix="understudy-netns-%s-" % name)
        self.tmpdirs.append(d)
        return d

    def keep(self):
        self.kept = True

    # -- the service address, moved by hand (to validate the harness without
    #    the daemon's go-live) and inspected

    def vip_holders(self):
        return [l for l, n in self.nodes.items() if n.has_addr(self.vip)]

    def add_vip(self, label):
        n = self.nodes[label]
        n.ip_cmd("addr", "replace", "%s/%d" % (self.vip, self.cidr), "dev", NODE_DEV)
        garp(n, self.vip)

    def del_vip(self, label):
        self.nodes[label].ip_cmd("addr", "del", "%s/%d" % (self.vip, self.cidr), "dev",
                                 NODE_DEV, check=False)

    def move_vip(self, src, dst):
        self.del_vip(src)
        self.add_vip(dst)

    # -- failure injection

    def crash(self, label):
        """The whole node dies: SIGKILL every process in it, cut its link."""
        node = self.nodes[label]
        pids = node.kill_all()
        node.link(False)
        return pids

    # -- teardown

    def close(self):
        if self._closed:
            return
        self._closed = True
        for n in self.nodes.values():
            n.kill_all()
        harness._cleanup_children()
        for n in self.nodes.values():
            _kill_ns_pids(n.ns)
            _ip("netns", "del", n.ns, check=False)
        _ip("netns", "del", self.bridge_ns, check=False)
        if self.kept:
            for d in self.tmpdirs:
                harness.log("kept: %s" % d)
        else:
            for d in self.tmpdirs:
                shutil.rmtree(d, ignore_errors=True)


_REACH = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=1).close()
except ConnectionRefusedError:
    pass
"""


def reachable(node, addr):
    """True when ADDR answers (accepts or refuses a TCP connect) from NODE."""
    return node.run(["python3", "-c", _REACH, addr], timeout=10).rc == 0


def harness_need_root():
    if os.geteuid() != 0:
        raise RuntimeError("network namespaces need root")


# A gratuitous ARP (who-has VIP tell VIP, broadcast) from NODE's eth0, so the
# other nodes' neighbour caches learn the VIP's new MAC at once.  Sent by a
# tiny python program inside the namespace: no arping on a stock Debian 12.
_GARP = r"""
import socket, struct, sys
dev, ip = sys.argv[1], socket.inet_aton(sys.argv[2])
mac = bytes.fromhex(open('/sys/class/net/%s/address' % dev).read().strip().replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, mac, ip, b'\0' * 6, ip)
for _ in range(2):
    s.send(b'\xff' * 6 + mac + b'\x08\x06' + arp)
"""


def garp(node, addr):
    r = node.run(["python3", "-c", _GARP, NODE_DEV, addr], timeout=10)
    if r.rc != 0:
        raise RuntimeError("gratuitous ARP for %s from %s failed\n%s" % (addr, node.ns,
                                                                          r.describe()))


# ---------------------------------------------------------------------------
# Cluster: understudyd on node B, `understudy run` on node A, clients on C.
# Every flag of the CLI contract is spelled here and only here, so a change of
# the daemon's or the CLI's flags is one edit.

UNDERSTUDYD = harness.UNDERSTUDYD
PEER_PORT = 7700
REDIS_PORT = 6379      # inside the namespaces: no developer's redis can be there

# What a Cluster needs besides the app it protects (a test's NEEDS starts
# with it): root and network namespaces, the daemon and the cluster verbs of
# the CLI; arping, because go-live announces the moved service address with
# `arping -U` (without it clients wait out their ARP cache and the switchover
# times measure that instead); python3 in PATH, which reachable(), garp() and
# probe_redis() run inside the namespaces.
CLUSTER = ["root", "netns", UNDERSTUDYD, "understudy:keygen", "understudy:run",
           "understudy:status", "understudy:failover", "arping", "python3"]


def redis_argv(workdir, port=REDIS_PORT):
    """redis-server listening on every address of its node (so on the VIP)."""
    return ["redis-server", "--port", port, "--bind", "0.0.0.0", "--protected-mode", "no",
            "--save", "", "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"]


class Cluster:
    """A protected service: backup daemon on B, primary under `understudy run`
    on A, service address VIP.  Logs go to files in a temp dir (kept and
    printed when the `with` block fails)."""

    def __init__(self, net, heartbeat_ms=100, missed_heartbeats=2, primary="A", backup="B",
                 daemon_extra=(), daemon_env=None, data_dir=None):
        self.net = net
        self.daemon_extra = list(daemon_extra)
        self.daemon_env = daemon_env      # environment of understudyd (None: ours)
        self.a, self.b = net.node(primary), net.node(backup)
        self.dir = net.tmpdir("cluster")
        self.key = os.path.join(self.dir, "cluster.key")
        self.admin = os.path.join(self.dir, "admin.sock")
        self.data_dir = data_dir or os.path.join(self.dir, "backup-data")
        self.heartbeat_ms, self.missed = heartbeat_ms, missed_heartbeats
        self.daemon = self.primary = None
        self.primary_argv = None
        # `understudy run --mode` and what follows it (active-passive adds
        # --checkpoint-interval).
        self.mode_args = ["--mode", "active-active"]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.net.keep()
            self.dump_logs()
        return False

    def log_path(self, name):
        return os.path.join(self.dir, name + ".log")

    def dump_logs(self, limit=4000):
        for name in ("understudyd", "run"):
            p = self.log_path(name)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    data = f.read().decode(errors="replace")
                harness.log("--- %s (%s)\n%s" % (name, p, data[-limit:]))

    def keygen(self, path=None):
        path = path or self.key
        r = harness.run([harness.UNDERSTUDY, "keygen"], timeout=15)
        harness.expect(r.rc == 0 and r.stdout, "understudy keygen failed", r)
        with open(path, "wb") as f:
            f.write(r.stdout)
        os.chmod(path, 0o600)
        return path

    def daemon_argv(self, key=None):
        return [UNDERSTUDYD, "--listen", "%s:%d" % (self.b.ip, PEER_PORT),
                "--data", self.data_dir, "--key", key or self.key,
                "--admin-socket", self.admin,
                "--service-address", "%s/%d" % (self.net.vip, self.net.cidr),
                "--service-dev", NODE_DEV, "--heartbeat-ms", self.heartbeat_ms,
                "--missed-heartbeats", self.missed, "--node-name", "nodeB"] + self.daemon_extra

    def start_backup(self, timeout=20):
        if not os.path.exists(self.key):
            self.keygen()
        log = open(self.log_path("understudyd"), "ab")
        self.daemon = self.b.start(self.daemon_argv(), stdout=log, stderr=log, env=self.daemon_env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                self.dump_logs()
                harness.fail("understudyd exited (%s) at start" % self.daemon.returncode)
            if os.path.exists(self.admin) and self.status(check=False)[0].rc == 0:
                return self.daemon
            time.sleep(0.05)
        self.dump_logs()
        harness.fail("understudyd did not answer 'understudy status --admin %s' within %d s" %
                     (self.admin, timeout))

    def run_argv(self, app_argv, key=None):
        return [harness.UNDERSTUDY, "run", "--backup", "%s:%d" % (self.b.ip, PEER_PORT),
                "--key", key or self.key, "--service-address", self.net.vip,
                "--service-dev", NODE_DEV] + self.mode_args + [
                # the same failure detection as the daemon (checked at the handshake)
                "--heartbeat-ms", self.heartbeat_ms, "--missed-heartbeats", self.missed, "--"] + \
               [str(x) for x in app_argv]

    def start_primary(self, app_argv, timeout=30, port=REDIS_PORT):
        """`understudy run` the app on A; wait until it answers on the VIP."""
        log = open(self.log_path("run"), "ab")
        self.primary_argv = self.run_argv(app_argv)
        self.primary = self.a.start(self.primary_argv, stdout=log, stderr=log)
        if not self.wait_service(port, timeout):
            self.dump_logs()
            harness.fail("the service never answered PING on %s:%s from node C (run exit %s)" %
                         (self.net.vip, port, self.primary.poll()))
        return self.primary

    def wait_service(self, port=REDIS_PORT, timeout=30, node="C"):
        """Wait until redis answers PING on the VIP from NODE."""
        c = self.net.node(node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.primary is not None and self.primary.poll() is not None:
                return False
            r = c.run(["redis-cli", "-h", self.net.vip, "-p", port, "PING"], timeout=5)
            if r.rc == 0 and r.out.strip() == "PONG":
                return True
            time.sleep(0.1)
        return False

    def _admin_json(self, argv, check, timeout):
        r = harness.run(argv, timeout=timeout)
        doc = None
        try:
            doc = json.loads(r.out)
        except ValueError:
            lines = [l for l in r.out.splitlines() if l.startswith("{")]
            if lines:
                try:
                    doc = json.loads(lines[-1])
                except ValueError:
                    pass
        if check:
            harness.expect(r.rc == 0, "%s failed" % " ".join(argv[1:3]), r)
        return r, doc

    def checkpoint(self, timeout=300):
        """`understudy checkpoint --json` (must succeed).  One retry when CRIU
        aborted the dump on a thread's "task interruption": a known race of
        the park with CRIU's parasite (docs/checkpoint.md, "Not done"), seen
        once in a CI run right after start-up; the aborted --leave-running
        dump changed nothing, as an operator's retry would find."""
        argv = [harness.UNDERSTUDY, "checkpoint", "--admin", self.admin, "--json"]
        r, doc = self._admin_json(argv, False, timeout)
        if r.rc != 0 and "task interruption" in (r.out + r.err):
            harness.log("checkpoint aborted by CRIU (task interruption); retrying once")
            time.sleep(0.5)
            r, doc = self._admin_json(argv, False, timeout)
        harness.expect(r.rc == 0, "checkpoint --admin failed", r)
        return r, doc

    def status(self, check=True, timeout=15):
        return self._admin_json([harness.UNDERSTUDY, "status", "--admin", self.admin, "--json"],
                                check, timeout)

    def failover(self, to=None, check=True, timeout=60):
        argv = [harness.UNDERSTUDY, "failover", "--admin", self.admin, "--json"]
        if to:
            argv += ["--to", to]
        return self._admin_json(argv, check, timeout)



_PROBE = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
    s.settimeout(1)
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    d = s.recv(64)
    print(d.decode(errors="replace").strip() or "closed")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("timeout" if isinstance(e, socket.timeout) else "error: %s" % e)
"""


def probe_redis(node, host, port=REDIS_PORT):
    """What a PING to HOST:PORT from NODE gets: '+PONG', 'refused', 'timeout',
    'closed', '-ERR ...' or 'error: ...' (1 s bounds)."""
    return node.run(["python3", "-c", _PROBE, host, port], timeout=10).out.strip()


def failover_trial(kind, at=0.5, count=6000, rate=2000, heartbeat_ms=100, missed=2,
                   io_timeout=None):
    """One failover on fresh namespaces; returns a dict of what happened.

    The client writes COUNT SETs at RATE per second (so the stream outlasts
    the failover).  KIND 'planned': `understudy failover` when AT x COUNT
    writes are acked.
    KIND 'unplanned': node A dies then (its link goes down first, so nothing
    it sends after can escape, then every process we started in it gets
    SIGKILL); B must notice the missed heartbeats and go live.
    Fails (harness.TestFailure) when a write was lost, the client could not
    finish, or the service address did not end on B."""
    import jepsen_client
    if io_timeout is None:
        # A client of a node that died without a word learns it from its own
        # reply timeout; 100 ms is what a latency-sensitive client would use.
        io_timeout = 1.0 if kind == "planned" else 0.1
    with Net() as net, Cluster(net, heartbeat_ms=heartbeat_ms, missed_heartbeats=missed) as cl:
        a, c = net.node("A"), net.node("C")
        cl.start_backup()
        cl.start_primary(redis_argv(net.tmpdir("redis")))
        _, before = cl.status()
        stream = jepsen_client.Stream(c, net.vip, count=count, duration=60, io_timeout=io_timeout,
                                       rate=rate)
        if not stream.wait_progress(int(count * at)):
            rep, rc, err = stream.finish()
            harness.fail("the client stopped before %d acked writes (rc %s): %s\n%s" %
                         (int(count * at), rc, rep and jepsen_client.jepsen_line(rep),
                          err.decode(errors="replace")[-2000:]))
        _, during = cl.status(check=False)  # mid-stream: replication and audit state
        doc = None
        t_event = time.monotonic()
        if kind == "planned":
            r, doc = cl.failover()
            command_s = time.monotonic() - t_event
        else:
            a.link(False)
            a.kill_all()
            command_s = None
        rep, rc, err = stream.finish()
        harness.expect(rep is not None, "the client printed no report (exit %s): %s" %
                       (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        harness.expect(rep["lost"] == 0, "%s failover lost acknowledged writes: %s; first lost: %s"
                       % (kind, line, rep["lost_keys"]))
        harness.expect(rep["ok"], "%s failover: the client did not finish cleanly: %s "
                       "(stopped: %s, read-back: %s)" %
                       (kind, line, rep["stopped"], rep["readback_error"]))
        switch = jepsen_client.switchover(rep, t_event)
        harness.expect(switch is not None, "%s failover: no client reply after the event" % kind)
        holders = net.vip_holders()
        harness.expect("B" in holders, "service address %s not on node B after the failover "
                       "(holders: %s)" % (net.vip, holders))
        old = probe_redis(c, a.ip) if kind == "planned" else "node down"
        harness.expect(old != "+PONG", "old primary on %s still answers clients after the "
                       "failover (not fenced)" % a.ip)
        _, after = cl.status(check=False)
        return {"kind": kind, "at": at, "report": rep, "line": line, "switchover_s": switch,
                "status_during": during,
                "command_s": command_s, "failover": doc, "status_before": before,
                "status_after": after, "old_primary": old, "vip_holders": holders}
