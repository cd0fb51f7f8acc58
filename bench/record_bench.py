#!/usr/bin/env python3
"""bench/record_bench.py: the cost of recording, measured side by side.

Usage: bench/record_bench.py [BUILD_DIR] [--runs 3] [--requests 50000]
                             [--clients 50] [--json OUT]

For each pipeline depth (-P 1 and -P 16) it starts a native redis-server and
a redis-server under `understudy record` on free loopback ports, runs
`redis-benchmark -c 50 -n 50000 -t set,get --csv` against each (alternating,
RUNS times), and prints the median requests/s of each, their ratio, and the
journal bytes per request.  Then it replays the -P 1 recording and compares
its wall time with the recording's.  A recording's wall time includes the
time the server sat idle waiting for clients, so events/s of the busy part
(the benchmark runs) is reported too.

Targets: recorded >= 0.97x native at -P 1; replay >= 5x faster than record.
Exit status: 0 targets met, 1 a target missed, 2 the bench could not run.
Kills only the servers it started (by pid); loopback only; every step has a
timeout.
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

    def __init__(self, recorded, workdir, audit=False):
        self.recorded = recorded
        self.port = harness.free_port()
        self.journal = os.path.join(workdir, "journal-%d" % self.port)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"]
        if recorded:
            argv = [harness.UNDERSTUDY, "record", "-o", self.journal] + \
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


def measure(pipeline, args, workdir):
    native, recorded = Server(False, workdir), Server(True, workdir)
    # The kmod escape audit's cost: the same recording with --audit, side by
    # side (-P 1 only; needs root and BPF, else the column says n/a).
    audited = Server(True, workdir, audit=True) if pipeline == 1 and args.audit else None
    n_rps, r_rps, a_rps, busy = [], [], [], 0.0
    try:
        for srv in filter(None, (native, recorded, audited)):
            bench_once(srv.port, pipeline, 2000, args.clients)  # warm up
        for _ in range(args.runs):
            n = bench_once(native.port, pipeline, args.requests, args.clients)
            t = time.monotonic()
            r = bench_once(recorded.port, pipeline, args.requests, args.clients)
            busy += time.monotonic() - t
            n_rps.append((n["SET"] + n["GET"]) / 2)
            r_rps.append((r["SET"] + r["GET"]) / 2)
            if audited:
                a = bench_once(audited.port, pipeline, args.requests, args.clients)
                a_rps.append((a["SET"] + a["GET"]) / 2)
    finally:
        native.stop()
        rec_wall, rec_rc = recorded.stop()
        if audited:
            audited.stop()
    total_requests = 2 * (args.runs * args.requests + 2000)
    jb = journal_bytes(recorded.journal)
    row = {
        "pipeline": pipeline,
        "native_rps": statistics.median(n_rps),
        "recorded_rps": statistics.median(r_rps),
        "native_runs": n_rps,
        "recorded_runs": r_rps,
        "journal_bytes": jb,
        "bytes_per_request": jb / total_requests,
        "record_wall_s": rec_wall,
        "record_busy_s": busy,
        "record_exit": rec_rc,
        "journal": recorded.journal,
        "audited_rps": statistics.median(a_rps) if a_rps else None,
    }
    row["ratio"] = row["recorded_rps"] / row["native_rps"]
    return row


def replay_row(row):
    r = harness.run([harness.UNDERSTUDY, "journal", "verify", row["journal"], "--json"],
                    timeout=120)
    events = json.loads(r.out.strip().splitlines()[-1])["events"] if r.rc == 0 else 0
    t = time.monotonic()
    rep = harness.run([harness.UNDERSTUDY, "replay", row["journal"], "--json"], timeout=600)
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
    ap.add_argument("build", nargs="?", default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the journals")
    ap.add_argument("--no-audit", dest="audit", action="store_false",
                    help="skip the record --audit column (it needs root and BPF)")
    args = ap.parse_args()
    if args.build:
        harness.UNDERSTUDY = os.path.join(os.path.abspath(args.build), "bin", "understudy")
    for b in (harness.UNDERSTUDY, shutil.which("redis-server"), shutil.which("redis-benchmark"),
              shutil.which("redis-cli")):
        if not b or not os.access(b, os.X_OK):
            print("record_bench: missing %s" % (b or "redis tools"), file=sys.stderr)
            return 2
    workdir = tempfile.mkdtemp(prefix="understudy-record-bench-")
    try:
        rows = [measure(p, args, workdir) for p in (1, 16)]
        rp = replay_row(rows[0])
    except RuntimeError as e:
        print("record_bench: %s" % e, file=sys.stderr)
        return 2
    finally:
        harness._cleanup_children()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print("redis-benchmark -c %d -n %d -t set,get, median of %d (rps = mean of SET and GET)"
          % (args.clients, args.requests, args.runs))
    print("| -P | native rps | recorded rps | recorded/native | journal B/request |"
          " recorded --audit rps | audit cost |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a = r["audited_rps"]
        print("| %d | %.0f | %.0f | %.3f | %.1f | %s | %s |" % (
            r["pipeline"], r["native_rps"], r["recorded_rps"], r["ratio"], r["bytes_per_request"],
            "%.0f" % a if a else "n/a",
            "%+.1f%%" % (100.0 * (a / r["recorded_rps"] - 1)) if a else "n/a"))
    print()
    print("replay of the -P 1 recording (%d events): replay %.2f s vs record %.2f s wall "
          "(%.1fx); record %.0f events/s while busy, replay %.0f events/s (%.1fx); "
          "replay exit %d (%s)" % (rp["events"], rp["replay_wall_s"], rp["record_wall_s"],
                                  rp["speedup_vs_record_wall"], rp["record_events_per_s_busy"],
                                  rp["replay_events_per_s"],
                                  rp["replay_events_per_s"] / rp["record_events_per_s_busy"],
                                  rp["replay_exit"], rp["replay_message"]))
    ok = rows[0]["ratio"] >= TARGET_RATIO_P1 and \
        rp["speedup_vs_record_wall"] >= TARGET_REPLAY_SPEEDUP
    print("targets: recorded >= %.2fx native at -P 1: %s; replay >= %.0fx faster: %s" %
          (TARGET_RATIO_P1, "met" if rows[0]["ratio"] >= TARGET_RATIO_P1 else "MISSED",
           TARGET_REPLAY_SPEEDUP,
           "met" if rp["speedup_vs_record_wall"] >= TARGET_REPLAY_SPEEDUP else "MISSED"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "replay": rp}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
