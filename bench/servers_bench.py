#!/usr/bin/env python3
"""bench/servers_bench.py: the cost of recording real servers, side by side.

Usage: bench/servers_bench.py [BUILD_DIR ...] [--runs 3] [--clients 4]
                              [--mc-ops 1500] [--http-requests 1000]
                              [--only memcached|nginx] [--json OUT]

Two servers from Debian, each started natively and under `understudy
record` (one recorded server per BUILD_DIR) on free loopback ports, at the
same time:
  memcached -t 4     CLIENTS client processes, each one connection doing
                     MC_OPS sets then MC_OPS gets (tests/e2e/servers.py)
  nginx, 2 workers   CLIENTS client processes, each HTTP_REQUESTS/CLIENTS
                     GETs of static files on keep-alive connections
Every round measures each server once, in a rotating order, with the same
load; the table shows the median operations/s of each and recorded/native.
Each recording is then replayed: its outcome (must be clean) and replay wall
time.  The clients are python: on this 2-core machine they take CPU from the
servers, so the ratios are those of a server sharing its cores with its
clients (as every figure in docs/ from this machine).

Exit status: 0 measured and every replay clean, 1 a replay diverged or a
client saw a wrong answer, 2 the bench could not run.  Kills only the
servers it started (by pid); loopback only; every step has a timeout.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "..", "tests", "e2e")
sys.path.insert(0, E2E)
import harness  # noqa: E402  (bounded runs, cleanup by pid, free ports)
import servers  # noqa: E402  (the servers' argv and their checked clients)

SERVERS_PY = os.path.join(E2E, "servers.py")


class Server:
    """One memcached or nginx, native (understudy None) or recorded."""

    def __init__(self, kind, workdir, understudy=None):
        self.kind, self.understudy = kind, understudy
        self.port = harness.free_port()
        self.root = os.path.join(workdir, "%s-%d" % (kind, self.port))
        os.makedirs(self.root)
        self.journal = os.path.join(self.root, "journal")
        if kind == "memcached":
            argv = servers.memcached_argv(self.port, threads=4)
        else:
            servers.nginx_site(self.root)
            argv = servers.nginx_argv(self.root,
                                      servers.nginx_conf(self.root, self.port, workers=2))
        if understudy:
            argv = [understudy, "record", "-o", self.journal, "--"] + argv
        self.argv = argv
        self.t0 = time.monotonic()
        self.proc = harness.start(argv, stdout=open(os.devnull, "wb"),
                                  stderr=open(os.path.join(self.root, "server.err"), "wb"))
        if not harness.wait_port(self.port, timeout=30, proc=self.proc):
            raise RuntimeError("%s%s did not listen on %d (see %s)" %
                               (kind, " under record" if understudy else "", self.port,
                                os.path.join(self.root, "server.err")))
        if kind == "nginx" and not servers.nginx_workers_ready(self.root, 2, proc=self.proc):
            raise RuntimeError("nginx did not start its 2 workers (see %s/error.log)" % self.root)

    def label(self):
        return "native" if not self.understudy else "recorded (%s)" % self.understudy

    def load(self, args):
        """One load of CLIENTS processes at once; returns operations/s."""
        if self.kind == "memcached":
            argv = [sys.executable, SERVERS_PY, "memcached-load", self.port, 1, args.mc_ops]
        else:
            argv = [sys.executable, SERVERS_PY, "nginx-load", self.port, self.root,
                    args.http_requests // args.clients, 1]
        procs = [harness.start(argv) for _ in range(args.clients)]
        results = [harness.finish(p, [str(a) for a in argv], timeout=180) for p in procs]
        # The clients' own load time (each measures from its first request
        # to its last), not the interpreters' start-up: the slowest client's.
        wall = 0.0
        ops = 0
        for r in results:
            try:
                out = json.loads(r.out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise RuntimeError("%s client failed\n%s" % (self.kind, r.describe()))
            if r.rc != 0 or out["errors"]:
                raise RuntimeError("%s client saw wrong answers (%s): %s" %
                                   (self.kind, self.label(), out["errors"]))
            ops += out["ops"]
            wall = max(wall, out["seconds"])
        return ops / wall, ops

    def stop(self):
        """The server's own graceful end; returns its exit status."""
        if self.kind == "memcached":
            servers.memcached_shutdown(self.port)
        elif self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)  # the master, or the recorder (forwards)
        res = harness.finish(self.proc, self.argv, timeout=30, t0=self.t0)
        return -1 if res.timed_out else res.rc


def replay(srv):
    t = time.monotonic()
    rep = harness.run([srv.understudy, "replay", srv.journal, "--json"], timeout=600)
    wall = time.monotonic() - t
    outcome = "?"
    try:
        outcome = json.loads(rep.out.strip().splitlines()[-1]).get("outcome", "?")
    except (ValueError, IndexError):
        pass
    return {"replay_exit": rep.rc, "replay_outcome": outcome, "replay_wall_s": wall,
            "replay_message": (rep.err.strip().splitlines() or [""])[-1]}


def measure(kind, args, workdir, builds):
    native = Server(kind, workdir)
    recorded = [Server(kind, workdir, understudy=b) for b in builds]
    every = [native] + recorded
    rates = [[] for _ in every]
    ops_total = [0 for _ in every]
    try:
        for run in range(args.runs):
            for k in range(len(every)):
                i = (k + run) % len(every)  # rotating order: none always first
                rate, ops = every[i].load(args)
                rates[i].append(rate)
                ops_total[i] += ops
    finally:
        exits = [s.stop() for s in every]
    rows = []
    for i, srv in enumerate(every):
        row = {"server": kind, "build": srv.understudy or "native",
               "ops_per_s": statistics.median(rates[i]), "runs": rates[i], "exit": exits[i]}
        if srv.understudy:
            row["ratio"] = row["ops_per_s"] / statistics.median(rates[0])
            jb = sum(os.path.getsize(os.path.join(srv.journal, f))
                     for f in os.listdir(srv.journal))
            row["journal_bytes_per_op"] = jb / max(1, ops_total[i])
            row.update(replay(srv))
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="*", default=[],
                    help="build directories (default: the harness's); several are measured "
                    "side by side")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4, help="client processes per load")
    ap.add_argument("--mc-ops", type=int, default=1500,
                    help="memcached sets (and as many gets) per client process")
    ap.add_argument("--http-requests", type=int, default=1000,
                    help="nginx GETs per load, shared by the client processes")
    ap.add_argument("--only", choices=["memcached", "nginx"], default=None)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    builds = [os.path.join(os.path.abspath(b), "bin", "understudy") for b in args.build] or \
        [harness.UNDERSTUDY]
    kinds = [args.only] if args.only else ["memcached", "nginx"]
    for b in builds + [shutil.which(k) for k in kinds]:
        if not b or not os.access(b, os.X_OK):
            print("servers_bench: missing %s (scripts/setup.sh installs the servers)" %
                  (b or "a server"), file=sys.stderr)
            return 2
    workdir = tempfile.mkdtemp(prefix="understudy-servers-bench-")
    try:
        rows = [r for k in kinds for r in measure(k, args, workdir, builds)]
    except RuntimeError as e:
        print("servers_bench: %s" % e, file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("%-10s %-44s %12s %8s %10s %-9s %9s" %
          ("server", "build", "ops/s", "ratio", "B/op", "replay", "replay s"))
    ok = True
    for r in rows:
        if "ratio" in r:
            ok = ok and r["replay_exit"] == 0 and r["exit"] == 0
            print("%-10s %-44s %12.0f %7.3fx %10.0f %-9s %9.2f" %
                  (r["server"], r["build"][-44:], r["ops_per_s"], r["ratio"],
                   r["journal_bytes_per_op"], r["replay_outcome"], r["replay_wall_s"]))
        else:
            print("%-10s %-44s %12.0f %8s" % (r["server"], "native", r["ops_per_s"], "1"))
    print("(%d runs of %d client processes; median ops/s; ratio = recorded / native)" %
          (args.runs, args.clients))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
