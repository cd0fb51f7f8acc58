#!/usr/bin/env python3
"""The new primary writes a journal again (issue 12 part 4; understudyd's
default, `--no-record-after-golive` turns it off).

redis-server under `understudy run` on node A, understudyd on node B, a client
on C.  Node A dies; B goes live and its
interposer switches from replay to record: the daemon drains the live
process's ring into the replica journal, continued at the go-live seq.  More
writes from C after the failover must make that journal grow past the go-live
seq, and `understudy journal verify` must find it whole (seqs contiguous
across the switch).  Then the journal -- old primary's events and the new
primary's -- is replayed from seq 1 (`understudy replay`, outputs
suppressed) and must reach past the go-live seq without diverging.

lost == 0 for the client's writes across the failover."""
import glob
import json
import os
import time

import harness
import jepsen_client
import netns
from harness import expect, fail, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]


def verify(dirpath):
    r = harness.run([harness.UNDERSTUDY, "journal", "verify", dirpath, "--json"], timeout=60)
    doc = None
    try:
        doc = json.loads(r.out)
    except ValueError:
        pass
    return r, doc


def main():
    with netns.Net() as net, \
            netns.Cluster(net) as cl:
        c = net.node("C")
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        stream = jepsen_client.Stream(c, net.vip, count=3000, duration=40, io_timeout=0.5,
                                      rate=300)
        if not stream.wait_progress(500):
            rep, rc, err = stream.finish()
            fail("the client stopped early (rc %s): %s" % (rc, err.decode(errors="replace")[-2000:]))
        net.crash("A")
        deadline = time.monotonic() + 30
        doc = None
        while time.monotonic() < deadline:
            _, doc = cl.status(check=False)
            if doc and doc.get("state") == "primary":
                break
            time.sleep(0.05)
        expect(doc and doc.get("state") == "primary", "B did not take over: %s" %
               (doc and doc.get("state")))
        # The line about recording follows the state change: wait for it.
        rec, deadline = [], time.monotonic() + 15
        while not rec and time.monotonic() < deadline:
            with open(cl.log_path("understudyd"), "rb") as f:
                dlog = f.read().decode(errors="replace")
            rec = [l for l in dlog.splitlines() if "records again" in l or "cannot record" in l or
                   "does not record" in l]
            if not rec:
                time.sleep(0.05)
        expect(rec and "records again" in rec[-1], "the live service does not record: %s" % rec)
        log("B: %s" % rec[-1].split(": ", 1)[-1])
        golive_seq = int(rec[-1].rsplit("seq ", 1)[-1]) - 1

        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("failover with recording after go-live: %s" % line)
        expect(rep["lost"] == 0, "acknowledged writes lost: %s" % line)

        dirs = glob.glob(os.path.join(cl.data_dir, "journals", "*"))
        expect(len(dirs) == 1, "replica journals: %s" % dirs)
        jdir = dirs[0]
        # The live process's events reach the journal (the drain flushes
        # every few ms; poll).
        deadline = time.monotonic() + 30
        last = 0
        while time.monotonic() < deadline:
            r, v = verify(jdir)
            last = int(v.get("last_seq", 0)) if v else 0
            if last > golive_seq + 1000:
                break
            time.sleep(0.2)
        expect(last > golive_seq, "the journal did not grow past the go-live seq %d (last %d): %s"
               % (golive_seq, last, r.describe()))
        log("journal %s: go-live at seq %d, now at seq %d (%d events recorded by the new primary)"
            % (jdir, golive_seq, last, last - golive_seq))
        expect(r.rc == 0 or (v and v.get("ok", True)), "journal verify failed", r)

        r = harness.run([harness.UNDERSTUDY, "replay", jdir, "--json"], timeout=300)
        summary = None
        for l in r.out.splitlines():
            if l.startswith("{"):
                try:
                    summary = json.loads(l)
                except ValueError:
                    pass
        log("replay of the continued journal: rc %s, %s" % (r.rc, summary or r.err[-400:]))
        expect(summary is not None, "understudy replay printed no summary", r)
        diverged = summary.get("diverged") or summary.get("divergence")
        expect(not diverged, "replay of the continued journal diverged: %s" % summary)
        replayed = int(summary.get("events", summary.get("events_replayed", 0)))
        expect(replayed > golive_seq, "replay stopped at %d events, before the go-live seq %d: %s"
               % (replayed, golive_seq, summary))


if __name__ == "__main__":
    run_main(main)
