#!/usr/bin/env python3
"""bench/record_bench.py: the cost of recording, measured side by side.

Usage: bench/record_bench.py [BUILD_DIR ...] [--runs 3] [--requests 50000]
                             [--clients 50] [--json OUT]

For each pipeline depth (-P 1 and -P 16) it starts a native redis-server and
a redis-server under `understudy record` on free loopback ports, runs
`redis-benchmark -c 50 -n 50000 -t set,get --csv` against each (alternating,
RUNS times), and prints the median requests/s of each, their ratio, and the
journal bytes per request.  Then it replays the -P 1 recording and compares
its wall time with the recording's.  A recording's wall time includes the
time the server sat idle waiting for clients, so events/s of the busy part
(the benchmark runs) is reported too.

Several BUILD_DIRs (say a build of main and one of a branch) are measured in
the same run: one recorded server per build beside the one native server,
each round visiting the builds in a rotating order, and the tables get a
build column -- a before/after comparison without the drift between two runs.

Targets: recorded >= 0.97x native at -P 1; replay >= 5x faster than record.
Exit status: 0 targets met (by every build), 1 a target missed, 2 the bench
could not run.  Kills only the servers it started (by pid); loopback only;
every step has a timeout.
"""
import argparse
import csv
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import harness  # noqa: E402  (paths, bounded runs, cleanup by pid, free ports)

TARGET_RATIO_P1 = 0.97
TARGET_REPLAY_SPEEDUP = 5.0


def bench_once(port, pipeline, requests, clients):
    r = harness.run(["redis-benchmark", "-h", "127.0.0.1", "-p", port, "-c", clients,
                     "-n", requests, "-P", pipeline, "-t", "set,get", "--csv"], timeout=120)
    if r.rc != 0 or r.timed_out:
        raise RuntimeError("redis-benchmark failed\n" + r.describe())
    rps = {}
    for row in csv.reader(io.StringIO(r.out)):
        if len(row) >= 2 and row[0] in ("SET", "GET"):
            rps[row[0]] = float(row[1])
    if set(rps) != {"SET", "GET"}:
        raise RuntimeError("could not parse redis-benchmark output\n" + r.describe())
    return rps


class Server:
    """A redis-server, native or under `understudy record`, on a free port."""

    def __init__(self, recorded, workdir, audit=False, understudy=None):
        self.recorded = recorded
        self.port = harness.free_port()
        self.journal = os.path.join(workdir, "journal-%d" % self.port)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"]
        if recorded:
            argv = [understudy or harness.UNDERSTUDY, "record", "-o", self.journal] + \
                (["--audit"] if audit else []) + ["--"] + argv
        self.argv = argv
        self.t0 = time.monotonic()
        self.proc = harness.start(argv, stdout=open(os.devnull, "wb"),
                                  stderr=open(os.path.join(workdir, "server-%d.err" % self.port),
                                              "wb"))
        if not harness.wait_port(self.port, timeout=30, proc=self.proc):
            raise RuntimeError("redis-server%s did not listen on %d" %
                               (" under record" if recorded else "", self.port))

    def stop(self):
        """SHUTDOWN NOSAVE and wait (bounded); returns the wall time it ran."""
        harness.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "SHUTDOWN", "NOSAVE"],
                    timeout=15)
        res = harness.finish(self.proc, self.argv, timeout=60, t0=self.t0)
        return res.elapsed, res.rc


def journal_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def measure(pipeline, args, workdir, builds):
    """One row per build for this pipeline depth, against one native server."""
    native = Server(False, workdir)
    recorded = [Server(True, workdir, understudy=b) for b in builds]
    # The kmod escape audit's cost: the same recording with --audit, side by
    # side (-P 1 only; needs root and BPF, else the column says n/a).
    audited = [Server(True, workdir, audit=True, understudy=b) for b in builds] \
        if pipeline == 1 and args.audit else [None] * len(builds)
    n_rps = []
    r_rps = [[] for _ in builds]
    a_rps = [[] for _ in builds]
    busy = [0.0 for _ in builds]
    try:
        for srv in [native] + recorded + [a for a in audited if a]:
            bench_once(srv.port, pipeline, 2000, args.clients)  # warm up
        for run in range(args.runs):
            n = bench_once(native.port, pipeline, args.requests, args.clients)
            n_rps.append((n["SET"] + n["GET"]) / 2)
            # Rotate the order of the builds from round to round, so none is
            # always measured right after the native server.
            for k in range(len(builds)):
                i = (k + run) % len(builds)
                t = time.monotonic()
                r = bench_once(recorded[i].port, pipeline, args.requests, args.clients)
                busy[i] += time.monotonic() - t
                r_rps[i].append((r["SET"] + r["GET"]) / 2)
                if audited[i]:
                    a = bench_once(audited[i].port, pipeline, args.requests, args.clients)
                    a_rps[i].append((a["SET"] + a["GET"]) / 2)
    finally:
        native.stop()
        stopped = [srv.stop() for srv in recorded]
        for a in audited:
            if a:
                a.stop()
    total_requests = 2 * (args.runs * args.requests + 2000)
    rows = []
    for i, build in enumerate(builds):
        jb = journal_bytes(recorded[i].journal)
        row = {
            "build": build,
            "pipeline": pipeline,
            "native_rps": statistics.median(n_rps),
            "recorded_rps": statistics.median(r_rps[i]),
            "native_runs": n_rps,
            "recorded_runs": r_rps[i],
            "journal_bytes": jb,
            "bytes_per_request": jb / total_requests,
            "record_wall_s": stopped[i][0],
            "record_busy_s": busy[i],
            "record_exit": stopped[i][1],
            "journal": recorded[i].journal,
            "audited_rps": statistics.median(a_rps[i]) if a_rps[i] else None,
        }
        row["ratio"] = row["recorded_rps"] / row["native_rps"]
        rows.append(row)
    return rows


def replay_row(row):
    understudy = row["build"]
    r = harness.run([understudy, "journal", "verify", row["journal"], "--json"],
                    timeout=120)
    events = json.loads(r.out.strip().splitlines()[-1])["events"] if r.rc == 0 else 0
    t = time.monotonic()
    rep = harness.run([understudy, "replay", row["journal"], "--json"], timeout=600)
    wall = time.monotonic() - t
    outcome = "?"
    try:
        outcome = json.loads(rep.out.strip().splitlines()[-1]).get("outcome", "?")
    except (ValueError, IndexError):
        pass
    return {
        "events": events,
        "replay_wall_s": wall,
        "replay_exit": rep.rc,
        "replay_outcome": outcome,
        "replay_message": (rep.err.strip().splitlines() or [""])[-1],
        "record_wall_s": row["record_wall_s"],
        "speedup_vs_record_wall": row["record_wall_s"] / wall,
        "record_events_per_s_busy": events / row["record_busy_s"],
        "replay_events_per_s": events / wall,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="*", default=[],
                    help="build directories (default: the harness's); several are measured "
                    "side by side")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the journals")
    ap.add_argument("--no-audit", dest="audit", action="store_false",
                    help="skip the record --audit column (it needs root and BPF)")
    args = ap.parse_args()
    builds = [os.path.join(os.path.abspath(b), "bin", "understudy") for b in args.build] or \
        [harness.UNDERSTUDY]
    for b in builds + [shutil.which("redis-server"), shutil.which("redis-benchmark"),
                       shutil.which("redis-cli")]:
        if not b or not os.access(b, os.X_OK):
            print("record_bench: missing %s" % (b or "redis tools"), file=sys.stderr)
            return 2
    workdir = tempfile.mkdtemp(prefix="understudy-record-bench-")
    try:
        by_depth = [measure(p, args, workdir, builds) for p in (1, 16)]
        replays = [replay_row(row) for row in by_depth[0]]
    except RuntimeError as e:
        print("record_bench: %s" % e, file=sys.stderr)
        return 2
    finally:
        harness._cleanup_children()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    many = len(builds) > 1
    # A build is named by its directory (BUILD/bin/understudy -> BUILD).
    name = [os.path.dirname(os.path.dirname(b)) for b in builds]
    print("redis-benchmark -c %d -n %d -t set,get, median of %d (rps = mean of SET and GET)"
          % (args.clients, args.requests, args.runs))
    print(("| build " if many else "") + "| -P | native rps | recorded rps | recorded/native |"
          " journal B/request | recorded --audit rps | audit cost |")
    print(("|---" if many else "") + "|---:|---:|---:|---:|---:|---:|---:|")
    for rows in by_depth:
        for i, r in enumerate(rows):
            a = r["audited_rps"]
            print(("| %s " % name[i] if many else "") + "| %d | %.0f | %.0f | %.3f | %.1f | %s | %s |" % (
                r["pipeline"], r["native_rps"], r["recorded_rps"], r["ratio"],
                r["bytes_per_request"], "%.0f" % a if a else "n/a",
                "%+.1f%%" % (100.0 * (a / r["recorded_rps"] - 1)) if a else "n/a"))
    print()
    ok = True
    for i, rp in enumerate(replays):
        print("%sreplay of the -P 1 recording (%d events): replay %.2f s vs record %.2f s wall "
              "(%.1fx); record %.0f events/s while busy, replay %.0f events/s (%.1fx); "
              "replay exit %d (%s)" % ("%s: " % name[i] if many else "",
                                      rp["events"], rp["replay_wall_s"], rp["record_wall_s"],
                                      rp["speedup_vs_record_wall"], rp["record_events_per_s_busy"],
                                      rp["replay_events_per_s"],
                                      rp["replay_events_per_s"] / rp["record_events_per_s_busy"],
                                      rp["replay_exit"], rp["replay_message"]))
    for i, rp in enumerate(replays):
        ratio = by_depth[0][i]["ratio"]
        met_ratio = ratio >= TARGET_RATIO_P1
        met_replay = rp["speedup_vs_record_wall"] >= TARGET_REPLAY_SPEEDUP
        ok = ok and met_ratio and met_replay
        print("%stargets: recorded >= %.2fx native at -P 1: %s; replay >= %.0fx faster: %s" %
              ("%s: " % name[i] if many else "", TARGET_RATIO_P1,
               "met" if met_ratio else "MISSED", TARGET_REPLAY_SPEEDUP,
               "met" if met_replay else "MISSED"))
    if args.json:
        with open(args.json, "w") as f:
            if many:
                json.dump({"builds": [{"build": name[i], "rows": [d[i] for d in by_depth],
                                       "replay": replays[i]} for i in range(len(builds))]},
                          f, indent=2)
            else:
                json.dump({"rows": [d[0] for d in by_depth], "replay": replays[0]}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
