#!/usr/bin/env python3
"""bench/failover_bench.py: the cost of replication and the time to fail over.

Usage: bench/failover_bench.py [BUILD_DIR] [--runs 3] [--requests 100000]
                               [--clients 50] [--trials 3] [--json OUT]
                               [--compare-link-cipher] [--cpu]

On private network namespaces (node A = server, B = backup, C = client; see
tests/e2e/netns.py) it runs, in one go and side by side:
  native      redis-server on node A
  recorded    redis-server under `understudy record` (journal on A's disk)
  replicated  redis-server under `understudy run --mode active-active`,
              journal streamed to understudyd on B over the veth link, every
              reply held until B acknowledged it (output commit); the link
              sealed with AES-256-GCM (docs/formats/link.md)
  replicated-none  (--compare-link-cipher) the same on a second daemon and
              primary whose link is not sealed (--link-cipher none, a
              benchmark-only switch: UNDERSTUDY_BENCH=1): what sealing costs,
              measured side by side with `replicated` in the same run
`redis-benchmark -c 50 -n N -t set,get -P 1 --csv` from node C against each,
alternating, RUNS times; the median of each figure is kept.  Then TRIALS
planned (`understudy failover`) and TRIALS unplanned (node A dies) failovers
with the Jepsen-style client, each on fresh namespaces: switchover = event ->
first reply from B; every trial must lose 0 acknowledged writes.

Targets: replicated >= 0.90x native (SET and GET), <= 100 us added p50,
planned switchover <= 50 ms, unplanned <= 300 ms (heartbeat 100 ms x 2).
Exit status: 0 targets met, 1 a target missed (or a write lost), 2 the bench
could not run.  Without understudyd / `understudy run` it measures native and
recorded and says the rest is not built.  Root only (namespaces); kills only
what it started; every step is bounded.
"""
import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "..", "tests", "e2e")
sys.path.insert(0, E2E)

TARGET_RATIO = 0.90
TARGET_ADDED_P50_US = 100
TARGET_PLANNED_MS = 50
TARGET_UNPLANNED_MS = 300
PORTS = {"native": 6379, "recorded": 6380, "replicated": 6381, "replicated-none": 6382}
VARIANTS = ("native", "recorded", "replicated", "replicated-none")
NONE_PEER_PORT = 7701


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--no-shadow", action="store_true",
                    help="replicated variant without the shadow (the protocol cost alone)")
    ap.add_argument("--skip-switchover", action="store_true", help="throughput only")
    ap.add_argument("--cpu", action="store_true",
                    help="also print CPU time per request, per process, for each variant")
    ap.add_argument("--compare-link-cipher", action="store_true",
                    help="also run replicated-none: a second cluster whose link is not sealed "
                         "(--link-cipher none), to measure what sealing costs")
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    if a.build:
        os.environ["UNDERSTUDY_BUILD"] = os.path.abspath(a.build)
    return a


ARGS = parse_args()
import harness  # noqa: E402  (after UNDERSTUDY_BUILD is set)
import netns  # noqa: E402


def cluster_built():
    if not os.access(netns.UNDERSTUDYD, os.X_OK):
        return "%s is not built" % netns.UNDERSTUDYD
    missing = [e.split(":", 1)[1] for e in netns.CLUSTER
               if e.startswith("understudy:") and harness.unmet(e)]
    return "'understudy %s' is not built" % "/".join(missing) if missing else None


def bench_once(client, host, port, clients=None, requests=None):
    r = client.run(["redis-benchmark", "-h", host, "-p", port, "-c", clients or ARGS.clients,
                    "-n", requests or ARGS.requests, "-P", 1, "-t", "set,get", "--csv"],
                   timeout=180)
    if r.rc != 0 or r.timed_out:
        raise RuntimeError("redis-benchmark failed\n" + r.describe())
    out = {}
    for row in csv.DictReader(io.StringIO(r.out)):
        if row.get("test") in ("SET", "GET"):
            out[row["test"]] = {"rps": float(row["rps"]), "p50_us": 1000 * float(row["p50_latency_ms"]),
                                "p99_us": 1000 * float(row["p99_latency_ms"])}
    if set(out) != {"SET", "GET"}:
        raise RuntimeError("could not parse redis-benchmark --csv\n" + r.describe())
    return out


# Roots of the replicated-none processes (its understudyd and `understudy
# run`): their trees are counted apart ("understudyd[none]"), so the two
# replicated variants' CPU figures do not mix.
NONE_ROOTS = set()


def _stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return None
    return st[st.index("(") + 1:st.rindex(")")], st[st.rindex(")") + 2:].split()


def _cpu_ticks(pids):
    """{comm: clock ticks (user+system, all threads)} for PIDS."""
    stats = {pid: _stat(pid) for pid in pids}
    stats = {pid: st for pid, st in stats.items() if st is not None}
    parent = {pid: int(st[1][1]) for pid, st in stats.items()}

    def in_none(pid):
        while pid > 1:
            if pid in NONE_ROOTS:
                return True
            pid = parent.get(pid, 0)
        return False

    out = {}
    for pid, (comm, fields) in stats.items():
        if NONE_ROOTS and in_none(pid):
            comm += "[none]"
        out[comm] = out.get(comm, 0) + int(fields[11]) + int(fields[12])
    return out


def cpu_snapshot(net):
    return {label: _cpu_ticks(net.node(label).pids()) for label in ("A", "B", "C")}


def start_unsealed(net, cl, work):
    """replicated-none: a second understudyd on B (port NONE_PEER_PORT, no
    service address) and `understudy run` of another redis on A, both with
    --link-cipher none.  Returns (host, primary Popen)."""
    a, b = net.node("A"), net.node("B")
    env = dict(os.environ, UNDERSTUDY_BENCH="1")
    d = os.path.join(work, "none")
    os.makedirs(d, exist_ok=True)
    argv = [netns.UNDERSTUDYD, "--listen", "%s:%d" % (b.ip, NONE_PEER_PORT),
            "--data", os.path.join(d, "backup-data"), "--key", cl.key,
            "--admin-socket", os.path.join(d, "admin.sock"), "--heartbeat-ms", 100,
            "--missed-heartbeats", 2, "--node-name", "nodeB-none", "--link-cipher", "none"]
    if ARGS.no_shadow:
        argv.append("--no-shadow")
    daemon = b.start(argv, env=env, stdout=open(os.path.join(d, "understudyd.log"), "ab"),
                     stderr=subprocess.STDOUT)
    NONE_ROOTS.add(daemon.pid)
    deadline = time.monotonic() + 20
    while not os.path.exists(os.path.join(d, "admin.sock")):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the unsealed understudyd did not start: see %s" % d)
        time.sleep(0.05)
    run = [harness.UNDERSTUDY, "run", "--backup", "%s:%d" % (b.ip, NONE_PEER_PORT),
           "--key", cl.key, "--journal", os.path.join(d, "journal"), "--link-cipher", "none",
           "--mode", "active-active", "--"] + netns.redis_argv(d, PORTS["replicated-none"])
    primary = a.start(run, env=env, stdout=open(os.path.join(d, "run.log"), "ab"),
                      stderr=subprocess.STDOUT)
    NONE_ROOTS.add(primary.pid)
    return a.ip, primary


def cpu_delta(before, after, requests):
    """{"A:redis-server": us per request, ...} from two snapshots."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for label, procs in after.items():
        for comm, t in procs.items():
            d = t - before.get(label, {}).get(comm, 0)
            if d > 0:
                out["%s:%s" % (label, comm)] = 1e6 * d / hz / requests
    return out


def wait_ping(node, host, port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if netns.probe_redis(node, host, port) == "+PONG":
            return True
        time.sleep(0.1)
    return False


def throughput(missing):
    """{variant: {SET/GET: {rps, p50_us, p99_us}}} (medians over RUNS)."""
    runs, cpu, one = {}, {}, {}
    with netns.Net() as net:
        a, c = net.node("A"), net.node("C")
        work = net.tmpdir("bench")
        servers = {}
        servers["native"] = (a.ip, a.start(netns.redis_argv(work, PORTS["native"]),
                                           stdout=open(os.devnull, "wb")))
        rec_argv = [harness.UNDERSTUDY, "record", "-o", os.path.join(work, "journal"), "--"] + \
            netns.redis_argv(work, PORTS["recorded"])
        servers["recorded"] = (a.ip, a.start(rec_argv, stdout=open(os.devnull, "wb"),
                                             stderr=open(os.path.join(work, "record.log"), "wb")))
        cl = None
        if not missing and ARGS.no_shadow:
            # The replication protocol alone: the backup stores and acks but
            # runs no shadow, so it does not compete for these two cores.
            cl = netns.Cluster(net, daemon_extra=["--no-shadow"])
            cl.start_backup()
            p = cl.start_primary(netns.redis_argv(work, PORTS["replicated"]),
                                 port=PORTS["replicated"])
            servers["replicated"] = (net.vip, p)
        elif not missing:
            cl = netns.Cluster(net)
            cl.start_backup()
            p = cl.start_primary(netns.redis_argv(work, PORTS["replicated"]),
                                 port=PORTS["replicated"])
            servers["replicated"] = (net.vip, p)
        if cl is not None and ARGS.compare_link_cipher:
            servers["replicated-none"] = start_unsealed(net, cl, work)
        for name, (host, proc) in servers.items():
            if not wait_ping(c, host, PORTS[name], proc):
                raise RuntimeError("%s redis-server never answered on %s:%d" %
                                   (name, host, PORTS[name]))
        for i in range(ARGS.runs):
            for name, (host, _) in servers.items():
                before = cpu_snapshot(net) if ARGS.cpu else None
                runs.setdefault(name, []).append(bench_once(c, host, PORTS[name]))
                if ARGS.cpu:
                    # Two tests (SET, GET) of REQUESTS each.
                    d = cpu_delta(before, cpu_snapshot(net), 2 * ARGS.requests)
                    cpu.setdefault(name, []).append(d)
                harness.log("run %d %-10s SET %8.0f/s GET %8.0f/s" %
                            (i + 1, name, runs[name][-1]["SET"]["rps"], runs[name][-1]["GET"]["rps"]))
        # The pipeline's own latency, without queueing behind 50 clients on
        # two shared cores: one client, one request at a time.
        for i in range(ARGS.runs):
            for name, (host, _) in servers.items():
                one.setdefault(name, []).append(bench_once(c, host, PORTS[name], clients=1,
                                                           requests=ARGS.requests // 10))
        floor = measure_floor(net)
    med = {"floor": floor} if floor else {}
    for name, rs in one.items():
        med.setdefault(name, {})["one_client_p50_us"] = statistics.median(
            max(r["SET"]["p50_us"], r["GET"]["p50_us"]) for r in rs)
    for name, rs in runs.items():
        med.setdefault(name, {}).update(
            {t: {k: statistics.median(r[t][k] for r in rs) for k in rs[0][t]}
             for t in ("SET", "GET")})
    for name, ds in cpu.items():
        keys = sorted(set().union(*ds))
        med[name]["cpu_us_per_req"] = {k: statistics.median(d.get(k, 0.0) for d in ds) for k in keys}
    return med


FLOOR = os.path.join(harness.BUILD, "bin", "floor_pingpong")
FLOOR_FRAME_BYTES = 8192  # about one frame of the replicated run (~20 requests)


def measure_floor(net):
    """What this machine charges without any understudy code: a TCP round
    trip between nodes A and B (a frame out, an ack back) and a thread
    wake-up round trip on one CPU and across two."""
    if not os.path.exists(FLOOR):
        harness.log("floor not measured: %s is not built" % FLOOR)
        return None
    a, b = net.node("A"), net.node("B")
    out = {}
    srv = b.start([FLOOR, "tcp-server", b.ip, 7799, FLOOR_FRAME_BYTES, 5000])
    cli = a.run([FLOOR, "tcp-client", b.ip, 7799, FLOOR_FRAME_BYTES, 5000], timeout=60)
    try:
        so, _ = srv.communicate(timeout=30)
    except Exception:
        so = b""
    if cli.rc == 0 and so:
        c, s = json.loads(cli.out), json.loads(so.decode())
        out["tcp_rtt_us"] = c["rtt_us"]
        out["tcp_cpu_us"] = c["cpu_us"] + s["cpu_us"]
    cpus = os.cpu_count() or 1
    for label, (x, y) in (("wake_same_cpu_us", (0, 0)), ("wake_cross_cpu_us", (0, min(1, cpus - 1)))):
        r = harness.run([FLOOR, "wake", x, y, 20000], timeout=60)
        if r.rc == 0:
            out[label] = json.loads(r.out)["rtt_us"]
    return out


def switchovers(kind):
    times, lines = [], []
    for i in range(ARGS.trials):
        t = netns.failover_trial(kind, at=(0.3, 0.5, 0.7)[i % 3], count=4000)
        times.append(1000 * t["switchover_s"])
        lines.append(t["line"])
        harness.log("%s trial %d: %s; switchover %.1f ms" % (kind, i + 1, t["line"], times[-1]))
    return times, lines


def main():
    if os.geteuid() != 0:
        print("failover_bench: needs root (network namespaces)")
        return 2
    missing = cluster_built()
    if missing:
        harness.log("replication not measurable: %s; measuring native and recorded only" % missing)
    res = {"requests": ARGS.requests, "clients": ARGS.clients, "runs": ARGS.runs}
    try:
        res["throughput"] = thr = throughput(missing)
        if not missing and not ARGS.skip_switchover:
            res["planned_ms"], _ = switchovers("planned")
            res["unplanned_ms"], _ = switchovers("unplanned")
    except (RuntimeError, harness.TestFailure) as e:
        print("failover_bench: %s" % e)
        return 2

    ok = True
    rows = [("", "SET req/s", "GET req/s", "x native", "SET p50/p99 us", "GET p50/p99 us",
             "added p50 us")]
    nat = thr["native"]
    for name in VARIANTS:
        if name == "replicated-none" and name not in thr:
            continue
        if name not in thr:
            rows.append((name, "not built", "", "", "", "", ""))
            continue
        v = thr[name]
        ratio = min(v["SET"]["rps"] / nat["SET"]["rps"], v["GET"]["rps"] / nat["GET"]["rps"])
        added = max(v["SET"]["p50_us"] - nat["SET"]["p50_us"], v["GET"]["p50_us"] - nat["GET"]["p50_us"])
        flag = ""
        if name == "replicated" and (ratio < TARGET_RATIO or added > TARGET_ADDED_P50_US):
            ok, flag = False, " MISS"
        rows.append((name, "%.0f" % v["SET"]["rps"], "%.0f" % v["GET"]["rps"], "%.2f%s" % (ratio, flag),
                     "%.0f / %.0f" % (v["SET"]["p50_us"], v["SET"]["p99_us"]),
                     "%.0f / %.0f" % (v["GET"]["p50_us"], v["GET"]["p99_us"]), "%+.0f" % added))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    print("redis-benchmark -c %d -n %d -t set,get -P 1, client on node C, medians of %d runs" %
          (ARGS.clients, ARGS.requests, ARGS.runs))
    for r in rows:
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))))
    print("  target: replicated >= %.2fx native, <= %d us added p50" %
          (TARGET_RATIO, TARGET_ADDED_P50_US))
    if "one_client_p50_us" in nat:
        print("  one client (-c 1, -n %d): p50 %s" % (ARGS.requests // 10, ", ".join(
            "%s %.0f us (%+.0f)" % (n, thr[n]["one_client_p50_us"],
                                    thr[n]["one_client_p50_us"] - nat["one_client_p50_us"])
            for n in VARIANTS if "one_client_p50_us" in thr.get(n, {}))))
    fl = thr.get("floor") or {}
    if "tcp_rtt_us" in fl:
        print("  floor, no understudy code: TCP round trip A<->B (%d B out, 16 B back) %.0f us, "
              "%.0f us CPU; thread wake-up round trip %.0f us on one CPU, %.0f us across two" % (
                  FLOOR_FRAME_BYTES, fl["tcp_rtt_us"], fl["tcp_cpu_us"],
                  fl.get("wake_same_cpu_us", float("nan")), fl.get("wake_cross_cpu_us", float("nan"))))
    if "replicated-none" in thr and "replicated" in thr:
        sealed, plain = thr["replicated"], thr["replicated-none"]
        line = "  link sealing (aes-256-gcm vs none): SET %.2fx, GET %.2fx throughput" % (
            sealed["SET"]["rps"] / plain["SET"]["rps"], sealed["GET"]["rps"] / plain["GET"]["rps"])
        if "cpu_us_per_req" in sealed and "cpu_us_per_req" in plain:
            line += ", CPU %+.1f us/request (%.1f vs %.1f)" % (
                sum(sealed["cpu_us_per_req"].values()) - sum(plain["cpu_us_per_req"].values()),
                sum(sealed["cpu_us_per_req"].values()), sum(plain["cpu_us_per_req"].values()))
        print(line)
    for name in VARIANTS:
        c = thr.get(name, {}).get("cpu_us_per_req")
        if c:
            # Only the processes of this variant changed much; show those.
            shown = {k: v for k, v in c.items() if v >= 0.05}
            print("  cpu us/request while %-10s total %5.1f: %s" % (
                name, sum(c.values()),
                ", ".join("%s %.1f" % kv for kv in sorted(shown.items(), key=lambda kv: -kv[1]))))
    for kind, target in (("planned", TARGET_PLANNED_MS), ("unplanned", TARGET_UNPLANNED_MS)):
        ts = res.get(kind + "_ms")
        if not ts:
            print("%s switchover: not measured (%s)" % (kind, missing))
            continue
        m = statistics.median(ts)
        miss = m > target
        ok = ok and not miss
        print("%s switchover: median %.1f ms (min %.1f, max %.1f, %d trials, 0 writes lost); "
              "target <= %d ms%s" % (kind, m, min(ts), max(ts), len(ts), target,
                                     " MISS" if miss else ""))
    if ARGS.json_out:
        with open(ARGS.json_out, "w") as f:
            json.dump(res, f, indent=1)
    if missing:
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
