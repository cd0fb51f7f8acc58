#!/usr/bin/env python3
"""bench/ptrace_bench.py: native vs preload vs ptrace backend, side by side.

Usage: bench/ptrace_bench.py [--runs 3] [--requests 20000] [--clients 50] [--json OUT]

Starts three redis-servers on free loopback ports -- native, under
`understudy record --backend preload` and under `understudy record
--backend ptrace` -- and runs `redis-benchmark -c 50 -t set,get` against
each in turn (rotating the order each round) at -P 1 and -P 16.  Prints the
median requests/s and the ratio of each backend to native, all from this one
run.  Target (issue 14): ptrace >= 0.5x native at -P 1.
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
BACKENDS = ("native", "preload", "ptrace")


class Server:
    def __init__(self, backend, workdir):
        self.port = harness.free_port()
        self.journal = os.path.join(workdir, "journal-%s-%d" % (backend, self.port))
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"]
        if backend != "native":
            argv = [harness.UNDERSTUDY, "record", "--backend", backend, "-o", self.journal,
                    "--"] + argv
        self.argv = argv
        self.t0 = time.monotonic()
        self.proc = harness.start(argv, stdout=open(os.devnull, "wb"),
                                  stderr=open(os.path.join(workdir, "%s.err" % backend), "wb"))
        if not harness.wait_port(self.port, timeout=30, proc=self.proc):
            raise RuntimeError("redis-server (%s) did not listen on %d" % (backend, self.port))

    def stop(self):
        harness.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "SHUTDOWN", "NOSAVE"],
                    timeout=15)
        return harness.finish(self.proc, self.argv, timeout=60, t0=self.t0).rc


def measure(pipeline, args, workdir):
    servers = {b: Server(b, workdir) for b in BACKENDS}
    rps = {b: [] for b in BACKENDS}
    try:
        for b in BACKENDS:
            bench_once(servers[b].port, pipeline, 2000, args.clients)
        for run in range(args.runs):
            for k in range(len(BACKENDS)):
                b = BACKENDS[(k + run) % len(BACKENDS)]
                r = bench_once(servers[b].port, pipeline, args.requests, args.clients)
                rps[b].append((r["SET"] + r["GET"]) / 2)
    finally:
        for s in servers.values():
            s.stop()
    med = {b: statistics.median(v) for b, v in rps.items()}
    return {"pipeline": pipeline, "rps": med, "runs": rps,
            "ratio": {b: med[b] / med["native"] for b in BACKENDS}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=str, default="20000")
    ap.add_argument("--clients", type=str, default="50")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if harness._which(tool) is None:
            print("ptrace_bench: needs %s" % tool, file=sys.stderr)
            return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-bench-") as workdir:
        try:
            for p in ("1", "16"):
                rows.append(measure(p, args, workdir))
        except RuntimeError as e:
            print("ptrace_bench: %s" % e, file=sys.stderr)
            return 2
        finally:
            harness._cleanup_children()
    print("| -P | native req/s | preload req/s | ptrace req/s | preload/native | ptrace/native |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %.0f | %.0f | %.0f | %.2fx | %.2fx |" % (
            r["pipeline"], r["rps"]["native"], r["rps"]["preload"], r["rps"]["ptrace"],
            r["ratio"]["preload"], r["ratio"]["ptrace"]))
    ok = rows[0]["ratio"]["ptrace"] >= TARGET_PTRACE_P1
    print("target ptrace >= %.2fx native at -P 1: %s" % (TARGET_PTRACE_P1, "met" if ok else "MISSED"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
