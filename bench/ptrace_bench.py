#!/usr/bin/env python3
"""bench/ptrace_bench.py: native vs preload vs ptrace backend, side by side.

Usage: bench/ptrace_bench.py [BUILD...] [--runs 3] [--requests 20000] [--clients 50] [--json OUT]

Starts three redis-servers on free loopback ports -- native, under
`understudy record --backend preload` and under `understudy record
--backend ptrace` -- and runs `redis-benchmark -c 50 -t set,get` against
each in turn (rotating the order each round) at -P 1 and -P 16.  Prints the
median requests/s and the ratio of each backend to native, all from this one
run.  Target (issue 14): ptrace >= 0.5x native at -P 1.  Given several build
directories (e.g. a "before" and an "after"), the ptrace column is measured
for each, side by side in the same run (preload: the last build's); the
target is judged on the last build.
Exit status: 0 target met, 1 missed, 2 could not run.  Kills only the
servers it started, by pid; loopback only; every step has a timeout.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import harness  # noqa: E402
from record_bench import bench_once  # noqa: E402

TARGET_PTRACE_P1 = 0.5


class Server:
    def __init__(self, column, workdir):
        label, backend, understudy = column
        self.port = harness.free_port()
        self.journal = os.path.join(workdir, "journal-%s-%d" % (backend, self.port))
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"]
        if backend != "native":
            argv = [understudy, "record", "--backend", backend, "-o", self.journal,
                    "--"] + argv
        self.argv = argv
        self.t0 = time.monotonic()
        self.proc = harness.start(argv, stdout=open(os.devnull, "wb"),
                                  stderr=open(os.path.join(workdir, "%s-%d.err" % (backend, self.port)),
                                              "wb"))
        if not harness.wait_port(self.port, timeout=30, proc=self.proc):
            raise RuntimeError("redis-server (%s) did not listen on %d" % (backend, self.port))

    def stop(self):
        harness.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "SHUTDOWN", "NOSAVE"],
                    timeout=15)
        return harness.finish(self.proc, self.argv, timeout=60, t0=self.t0).rc


def measure(pipeline, args, workdir, columns):
    servers = {}
    try:
        for c in columns:
            servers[c[0]] = Server(c, workdir)
        labels = [c[0] for c in columns]
        rps = {b: [] for b in labels}
        for b in labels:
            bench_once(servers[b].port, pipeline, 2000, args.clients)
        for run in range(args.runs):
            for k in range(len(labels)):
                b = labels[(k + run) % len(labels)]
                r = bench_once(servers[b].port, pipeline, args.requests, args.clients)
                rps[b].append((r["SET"] + r["GET"]) / 2)
    finally:
        for s in servers.values():
            s.stop()
    med = {b: statistics.median(v) for b, v in rps.items()}
    return {"pipeline": pipeline, "rps": med, "runs": rps,
            "ratio": {b: med[b] / med["native"] for b in labels}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="*", default=[],
                    help="build directories (default: the harness's); the ptrace column is "
                    "measured for each, side by side")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=str, default="20000")
    ap.add_argument("--clients", type=str, default="50")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if harness._which(tool) is None:
            print("ptrace_bench: needs %s" % tool, file=sys.stderr)
            return 2
    builds = [os.path.join(os.path.abspath(b), "bin", "understudy") for b in args.build] or \
        [harness.UNDERSTUDY]
    for b in builds:
        if not os.access(b, os.X_OK):
            print("ptrace_bench: missing %s" % b, file=sys.stderr)
            return 2
    # A build is named by its directory (BUILD/bin/understudy -> BUILD).
    names = [os.path.dirname(os.path.dirname(b)) for b in builds]
    ptrace_cols = ["ptrace" if len(builds) == 1 else "ptrace %s" % n for n in names]
    columns = [("native", "native", None), ("preload", "preload", builds[-1])] + \
        [(ptrace_cols[i], "ptrace", b) for i, b in enumerate(builds)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-bench-") as workdir:
        try:
            for p in ("1", "16"):
                rows.append(measure(p, args, workdir, columns))
        except RuntimeError as e:
            print("ptrace_bench: %s" % e, file=sys.stderr)
            return 2
        finally:
            harness._cleanup_children()
    print("redis-benchmark -c %s -n %s -t set,get, median of %d (req/s = mean of SET and GET)"
          % (args.clients, args.requests, args.runs))
    labels = [c[0] for c in columns]
    print("| -P | " + " | ".join("%s req/s" % b for b in labels) + " | " +
          " | ".join("%s/native" % b for b in labels[1:]) + " |")
    print("|---" * (1 + 2 * len(labels) - 1) + "|")
    for r in rows:
        print("| %s | " % r["pipeline"] + " | ".join("%.0f" % r["rps"][b] for b in labels) + " | " +
              " | ".join("%.2fx" % r["ratio"][b] for b in labels[1:]) + " |")
    ok = rows[0]["ratio"][ptrace_cols[-1]] >= TARGET_PTRACE_P1
    print("target ptrace >= %.2fx native at -P 1: %s" % (TARGET_PTRACE_P1, "met" if ok else "MISSED"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
