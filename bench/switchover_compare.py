#!/usr/bin/env python3
"""bench/switchover_compare.py: planned and unplanned switchover of two (or
more) builds, measured side by side in one run.

Usage: bench/switchover_compare.py SOURCE:BUILD SOURCE:BUILD... [--trials 6]
                                   [--kinds planned,unplanned] [--json OUT]

SOURCE is a checkout of understudy and BUILD its build directory (say
`.:build` for this tree and `/tmp/before:/tmp/before/build` for a worktree of
an older commit).  Each trial is one failover on fresh namespaces, run by the
SOURCE's own tests/e2e/netns.py `failover_trial` against its own BUILD in a
child process (so each build is driven by the harness it was written with).
The builds take turns trial by trial, in an order that rotates from round to
round, so load on the machine falls on all of them alike: the drift between
two separate runs of bench/failover_bench.py does not enter the comparison.

Printed per build and kind: median, min and max switchover (event -> first
reply from the new primary), and acked / survived / lost summed over the
trials.  Exit status: 0 every trial lost nothing, 1 a write was lost or a
trial failed, 2 the bench could not run (needs root).  Every trial is bounded
by the harness's own deadlines and by a 300 s timeout here.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

TRIAL_TIMEOUT_S = 300

# Runs in the child: one trial with the SOURCE tree's harness.
CHILD = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "e2e"))
import harness, netns
t = netns.failover_trial(sys.argv[2], at=float(sys.argv[3]), count=int(sys.argv[4]))
rep = t.get("report") or {}
print("RESULT " + json.dumps({"switchover_ms": 1000 * t["switchover_s"], "line": t["line"],
                              "acked": rep.get("acked"), "lost": rep.get("lost")}))
"""


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("builds", nargs="+", metavar="SOURCE:BUILD")
    ap.add_argument("--trials", type=int, default=6, help="trials per build and kind (default 6)")
    ap.add_argument("--kinds", default="planned,unplanned")
    ap.add_argument("--count", type=int, default=4000, help="writes per trial (default 4000)")
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    pairs = []
    for b in a.builds:
        src, sep, build = b.partition(":")
        if not sep or not os.path.isdir(src) or not os.path.isdir(build):
            ap.error("%s: want SOURCE:BUILD, two existing directories" % b)
        pairs.append((os.path.abspath(src), os.path.abspath(build)))
    a.pairs = pairs
    # A build run by two harnesses (SOURCE trees) is named SOURCE:BUILD, so
    # the rows of a harness x build matrix stay apart.
    builds = [b for _, b in pairs]
    a.labels = [b if builds.count(b) == 1 else "%s:%s" % (s, b) for s, b in pairs]
    a.kinds = [k for k in a.kinds.split(",") if k]
    for k in a.kinds:
        if k not in ("planned", "unplanned"):
            ap.error("--kinds: %s is neither planned nor unplanned" % k)
    return a


def one_trial(src, build, kind, at, count):
    env = dict(os.environ, UNDERSTUDY_BUILD=build)
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, src, kind, str(at), str(count)],
                           env=env, capture_output=True, timeout=TRIAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %d s" % TRIAL_TIMEOUT_S}
    for line in p.stdout.decode(errors="replace").splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (p.stdout + p.stderr).decode(errors="replace")[-1500:]
    return {"error": "exit %d: %s" % (p.returncode, tail)}


def main():
    a = parse_args()
    if os.geteuid() != 0:
        print("switchover_compare: needs root (network namespaces)")
        return 2
    res = {k: [[] for _ in a.pairs] for k in a.kinds}
    failed = False
    for rnd in range(a.trials):
        at = (0.3, 0.5, 0.7)[rnd % 3]
        for kind in a.kinds:
            for j in range(len(a.pairs)):
                i = (j + rnd) % len(a.pairs)
                src, build = a.pairs[i]
                label = a.labels[i]
                t = one_trial(src, build, kind, at, a.count)
                res[kind][i].append(t)
                if "error" in t:
                    failed = True
                    print("round %d %s %s: FAILED %s" % (rnd + 1, kind, label, t["error"]),
                          flush=True)
                else:
                    failed = failed or bool(t["lost"])
                    print("round %d %-9s %s: %s; switchover %.1f ms" %
                          (rnd + 1, kind, label, t["line"], t["switchover_ms"]), flush=True)
    print()
    print("switchover (ms), %d trials per build and kind, builds alternating trial by trial; "
          "load average at the end %.1f" % (a.trials, os.getloadavg()[0]))
    summary = []
    for kind in a.kinds:
        for i, build in enumerate(a.labels):
            ok = [t for t in res[kind][i] if "error" not in t]
            ms = [t["switchover_ms"] for t in ok]
            row = {"kind": kind, "build": build, "trials": len(ms),
                   "failed": len(res[kind][i]) - len(ok),
                   "acked": sum(t["acked"] or 0 for t in ok),
                   "lost": sum(t["lost"] or 0 for t in ok)}
            if ms:
                row.update(median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms))
                print("  %-9s %-58s median %7.1f  min %7.1f  max %7.1f  acked %d lost %d%s" % (
                    kind, build, row["median_ms"], row["min_ms"], row["max_ms"], row["acked"],
                    row["lost"], "  (%d failed)" % row["failed"] if row["failed"] else ""))
            else:
                print("  %-9s %-58s no trial succeeded" % (kind, build))
            summary.append(row)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"rows": summary, "trials": res}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
