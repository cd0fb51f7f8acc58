#!/usr/bin/env python3
"""Unplanned failover (node A dies) loses no acknowledged write, 3 trials.

Each trial, on fresh namespaces: redis-server under `understudy run
--mode active-active` on node A, understudyd on node B (heartbeat 100 ms,
3 missed = dead), a client on node C streaming SET/INCR.  At 25 %, 50 % and
75 % of the stream node A dies: its link goes down and every process started
in it gets SIGKILL (the recorder and redis).  B must notice the missed
heartbeats, go live and take the service address; the client reconnects and
reads every key back: lost == 0 in every trial.  Prints each trial's
Jepsen-style line and the switchover time (kill -> first reply from B).
Needs: root, network namespaces, understudyd + `understudy run`,
redis-server, redis-cli."""
import statistics

import netns
from harness import log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]

POINTS = (0.25, 0.5, 0.75)


def main():
    times = []
    for at in POINTS:
        t = netns.failover_trial("unplanned", at=at, count=6000)
        times.append(t["switchover_s"])
        log("kill at %2d%%: %s; switchover %.1f ms (kill -> first reply from B)" %
            (100 * at, t["line"], 1000 * t["switchover_s"]))
    log("unplanned switchover: median %.1f ms, max %.1f ms over %d trials" %
        (1000 * statistics.median(times), 1000 * max(times), len(times)))


if __name__ == "__main__":
    run_main(main)
