#!/usr/bin/env python3
"""bench/ptrace_bench.py: native vs preload vs ptrace backend, side by side.

Usage: bench/ptrace_bench.py [BUILD...] [--runs 3] [--requests 20000] [--clients 50] [--json OUT]

Starts three redis-servers on free loopback ports -- native, under
`understudy record --backend preload` and under `understudy record
--backend ptrace` -- and runs `redis-benchmark -c 50 -t set,get` against
each in turn (rotating the order each round) at -P 1 and -P 16.  Prints the
median requests/s and the ratio of each backend to native, all from this one
run.  Then the Go HTTP server of bench/go_http (built here, CGO_ENABLED=0,
as Debian's golang-go makes it) native and under `understudy record` (a Go
binary always gets the ptrace backend: the preload interposer would crash
it), under a bounded load from the same program's client mode (--go-conns
keep-alive connections, --go-requests requests, at most 20 s each run).
Target (issue 14): ptrace >= 0.5x native on redis at -P 1.  Given several build
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


GO_SRC = os.path.join(HERE, "go_http")


def build_go(workdir):
    exe = os.path.join(workdir, "go_http")
    env = dict(os.environ, GOCACHE=os.path.join(workdir, "gocache"),
               GOPATH=os.path.join(workdir, "gopath"), HOME=workdir, CGO_ENABLED="0",
               GOFLAGS="-mod=mod", GO111MODULE="off")
    import subprocess
    r = subprocess.run(["go", "build", "-o", exe, "main.go"], cwd=GO_SRC, env=env,
                       capture_output=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("go build of bench/go_http failed: %s" % r.stderr.decode(errors="replace"))
    return exe


def measure_go(exe, args, workdir, builds):
    """native vs ptrace (each build) on the Go HTTP server; median req/s."""
    columns = [("native", None)] + [
        ("ptrace" if len(builds) == 1 else "ptrace %s" % os.path.dirname(os.path.dirname(b)), b)
        for b in builds]
    rps = {c[0]: [] for c in columns}
    for run in range(args.runs):
        for k in range(len(columns)):
            label, understudy = columns[(k + run) % len(columns)]
            port = harness.free_port()
            argv = [exe, "serve", str(port)]
            if understudy is not None:
                argv = [understudy, "record", "-o",
                        os.path.join(workdir, "go-journal-%d" % port), "--"] + argv
            proc = harness.start(argv, stdout=open(os.devnull, "wb"),
                                 stderr=open(os.path.join(workdir, "go-%d.err" % port), "wb"))
            try:
                if not harness.wait_port(port, timeout=30, proc=proc):
                    raise RuntimeError("go_http (%s) did not listen on %d" % (label, port))
                r = harness.run([exe, "load", "http://127.0.0.1:%d/" % port, args.go_conns,
                                 args.go_requests, "20"], timeout=60)
                fields = r.out.split()
                if r.rc != 0 or "rps" not in fields:
                    raise RuntimeError("go_http load failed: %s" % r.describe())
                rps[label].append(float(fields[fields.index("rps") + 1]))
            finally:
                harness._kill_group(proc, 9)
                proc.wait(timeout=30)
    med = {b: statistics.median(v) for b, v in rps.items()}
    return {"rps": med, "runs": rps, "ratio": {b: med[b] / med["native"] for b in med}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="*", default=[],
                    help="build directories (default: the harness's); the ptrace column is "
                    "measured for each, side by side")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=str, default="20000")
    ap.add_argument("--clients", type=str, default="50")
    ap.add_argument("--json", default=None)
    ap.add_argument("--go-conns", type=str, default="20")
    ap.add_argument("--go-requests", type=str, default="5000")
    ap.add_argument("--no-go", action="store_true", help="skip the Go HTTP server")
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
    go = None
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-bench-") as workdir:
        try:
            for p in ("1", "16"):
                rows.append(measure(p, args, workdir, columns))
            if not args.no_go and harness._which("go") is not None:
                go = measure_go(build_go(workdir), args, workdir, builds)
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
    if go is not None:
        print()
        print("Go HTTP server (bench/go_http, CGO_ENABLED=0), %s keep-alive connections, %s "
              "requests per run, median of %d" % (args.go_conns, args.go_requests, args.runs))
        glabels = list(go["rps"])
        print("| " + " | ".join("%s req/s" % b for b in glabels) + " | " +
              " | ".join("%s/native" % b for b in glabels[1:]) + " |")
        print("|---" * (2 * len(glabels) - 1) + "|")
        print("| " + " | ".join("%.0f" % go["rps"][b] for b in glabels) + " | " +
              " | ".join("%.2fx" % go["ratio"][b] for b in glabels[1:]) + " |")
    ok = rows[0]["ratio"][ptrace_cols[-1]] >= TARGET_PTRACE_P1
    print("target ptrace >= %.2fx native at -P 1: %s" % (TARGET_PTRACE_P1, "met" if ok else "MISSED"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"redis": rows, "go_http": go}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
