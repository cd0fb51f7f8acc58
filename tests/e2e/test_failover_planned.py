#!/usr/bin/env python3
"""Planned switchover loses no acknowledged write.

redis-server runs under `understudy run --mode active-active` on node A with
the service address; understudyd on node B replays it live.  A client on node
C streams SET/INCR over raw RESP; when half its writes are acknowledged,
`understudy failover` runs.  The client reconnects to the service address,
now on B, and reads every key back: lost must be 0.  Prints the Jepsen-style
line and the switchover time (failover command -> first reply from B).
Needs: root, network namespaces, understudyd + `understudy run/failover`,
redis-server, redis-cli."""
import json

import netns
from harness import expect, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]


def main():
    t = netns.failover_trial("planned", at=0.5, count=6000)
    log("planned failover: %s" % t["line"])
    log("switchover %.1f ms (failover command -> first reply from B); command took %.1f ms" %
        (1000 * t["switchover_s"], 1000 * t["command_s"]))
    log("failover breakdown: %s" % json.dumps(t["failover"]))
    log("old primary now answers a PING with: %s" % t["old_primary"])
    # Each phase as it completed (what `understudy failover` on a terminal
    # prints while it waits): in status, in the order they ran.
    fp = (t["status_after"] or {}).get("failover_progress", {})
    names = [p["name"] for p in fp.get("phases", [])]
    expect(fp.get("serial") == 1 and fp.get("kind") == "planned" and not fp.get("running") and
           names[:1] == ["fence"] and names[-2:] == ["drain", "go-live"] and fp.get("error") == "",
           "status after the failover does not show its phases: %s" % fp)
    log("failover phases in status: %s" % ", ".join("%s %.1f ms" % (p["name"], p["ms"])
                                                    for p in fp["phases"]))
    expect(t["report"]["acked"] > 0, "no write was acknowledged")
    # The kmod escape audit runs on the primary and reaches status on B.
    primary = (t["status_during"] or {}).get("status", t["status_during"] or {}).get("primary", {})
    escapes = int(primary.get("auditEscapes", primary.get("audit_escapes", 0)))
    log("status during the stream: audit %r, %d escapes" % (primary.get("audit"), escapes))
    expect(primary.get("audit") == "on", "status does not show the primary's escape audit on: %s"
           % primary)
    expect(escapes == 0, "redis under 'understudy run' had unrecorded calls: %s" % primary)
    # Output commit as the primary measures it reaches status too: a client
    # was writing, so frames were acked, each in more than 0 us and in far
    # less than the 200 ms silence budget.
    frames = int(primary.get("commitFrames", primary.get("commit_frames", 0)))
    p50 = int(primary.get("commitP50Us", primary.get("commit_p50_us", 0)))
    p99 = int(primary.get("commitP99Us", primary.get("commit_p99_us", 0)))
    log("status during the stream: commit round trip p50 %d us, p99 %d us over %d frames" %
        (p50, p99, frames))
    expect(frames > 0 and 0 < p50 <= p99 < 200000,
           "status does not show plausible commit round trips: %s" % primary)


if __name__ == "__main__":
    run_main(main)
