#!/usr/bin/env python3
"""The revolving journal (issue 12 part 6): a long but bounded run with
frequent checkpoints keeps the journal's disk use bounded on both nodes,
and the pruned journal still fails over with no acknowledged write lost.

redis-server runs under `understudy run --mode active-passive` on node A with
checkpoints every 4 s or every 4 MiB of journal (whichever first), 1 MiB
segments and its journal in a directory of the test.  A client on node C
writes all the time (RJ_RATE writes/s, default 1500) for RJ_RUN_S seconds (default 60);
once a second the test measures the segment files of A's journal and of
B's replica, and asserts that the maximum of each stays under RJ_BOUND_MB
(default 16 MiB) while the journal written in total grows past it, that
both heads were pruned, and that `understudy status --json` reports both
nodes' journal disk use.  Then node A dies (link down, SIGKILL of every
process in it): B restores the newest checkpoint, replays from its mark + 1
and serves; acked / survived / lost with lost = 0.  Finally `understudy
journal show` and `understudy replay` on A's pruned journal say that it
starts after seq 1 and needs the checkpoint.
Needs: root, network namespaces, CRIU, understudyd + `understudy run/status`,
redis-server, redis-cli."""
import glob
import json
import os
import time

import harness
import jepsen_client
import netns
from harness import expect, log, run_main

CRIU = "/opt/understudy/criu/bin/criu"
NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:checkpoint", CRIU]
RUN_S = float(os.environ.get("RJ_RUN_S", "60"))
RATE = int(os.environ.get("RJ_RATE", "1500"))
# What arrives between two checkpoints (4 MiB) -- twice on B, which keeps
# the journal from the previous checkpoint's mark as the fallback of a failed
# restore (docs/replication.md, "A fallback") -- the checkpoint's own time,
# the segment holding the mark and the one being written (1 MiB each), with
# room to spare on a loaded machine; the run writes well over it in total
# (41 MiB).  Measured: A 4.4-5.6 MiB, B 7.9-9.4 MiB.
BOUND_MB = float(os.environ.get("RJ_BOUND_MB", "16"))


def segment_bytes(d):
    """(bytes, segments, first base) of the segment files in journal dir D."""
    total, n, first = 0, 0, None
    for p in sorted(glob.glob(os.path.join(d, "*.seg"))):
        try:
            total += os.stat(p).st_size
        except FileNotFoundError:
            continue  # pruned between the listing and the stat
        n += 1
        base = int(os.path.basename(p).split(".")[0])
        first = base if first is None else min(first, base)
    return total, n, first or 0


def replica_dirs(data_dir):
    return [d for d in glob.glob(os.path.join(data_dir, "journals", "*")) if os.path.isdir(d)
            and not d.endswith(".superseded")]


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, c = net.node("A"), net.node("C")
        jdir = os.path.join(net.tmpdir("primary-journal"), "j")
        cl.mode_args = ["--mode", "active-passive", "--checkpoint-interval", "4s",
                        "--checkpoint-every-bytes", "4M", "--journal-segment-size", "1M",
                        "--journal", jdir]
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        tail_s = 8
        count = int(RATE * (RUN_S + tail_s))
        stream = jepsen_client.Stream(c, net.vip, count=count, duration=RUN_S + 60,
                                       io_timeout=0.1, rate=RATE)
        t0 = time.monotonic()
        max_a = max_b = 0
        samples = 0
        last = None
        while time.monotonic() - t0 < RUN_S:
            time.sleep(1.0)
            if stream.proc.poll() is not None:
                rep, rc, err = stream.finish()
                harness.fail("the client ended during the bounded run (rc %s): %s" %
                             (rc, err.decode(errors="replace")[-2000:]))
            ab, an, af = segment_bytes(jdir)
            bb, bn, bf = 0, 0, 0
            for d in replica_dirs(cl.data_dir):
                x, n, f = segment_bytes(d)
                bb, bn, bf = bb + x, bn + n, f
            max_a, max_b = max(max_a, ab), max(max_b, bb)
            samples += 1
            last = (ab, an, af, bb, bn, bf)
            if samples % 10 == 0:
                log("t=%3.0f s: A journal %.1f MiB in %d segments from seq %d; B replica %.1f MiB "
                    "in %d segments from seq %d; client acked %d" %
                    (time.monotonic() - t0, ab / 2**20, an, af, bb / 2**20, bn, bf,
                     stream.progress))
        _, st = cl.status()
        status = (st or {}).get("status", st or {})
        rep_info, prim = status.get("replica", {}), status.get("primary", {})
        log("status replica: %s" % json.dumps({k: rep_info.get(k) for k in (
            "last_seq", "bytes", "disk_bytes", "disk_segments", "first_seq",
            "pruned_before_seq", "pruned_segments", "pruned_bytes")}))
        log("status primary: %s" % json.dumps({k: prim.get(k) for k in (
            "last_seq", "journal_disk_bytes", "journal_segments", "journal_first_seq")}))
        r = harness.run([harness.UNDERSTUDY, "status", "--admin", cl.admin], timeout=15)
        for l in r.out.splitlines():
            if l.startswith("disk") or "primary " in l and "segment" in l:
                log("status: " + l.strip())
        received = int(rep_info.get("bytes", 0))
        log("bounded run of %.0f s at %d writes/s: journal written %.1f MiB; max on disk: "
            "A %.1f MiB, B %.1f MiB (bound %.0f MiB, %d samples)" %
            (RUN_S, RATE, received / 2**20, max_a / 2**20, max_b / 2**20, BOUND_MB, samples))
        expect(max_a < BOUND_MB * 2**20, "A's journal reached %.1f MiB, over the bound of %.0f MiB"
               % (max_a / 2**20, BOUND_MB))
        expect(max_b < BOUND_MB * 2**20, "B's replica reached %.1f MiB, over the bound of %.0f MiB"
               % (max_b / 2**20, BOUND_MB))
        expect(received > BOUND_MB * 2**20,
               "the run wrote only %.1f MiB of journal, less than the bound: it shows nothing "
               "(raise RJ_RUN_S or RJ_RATE)" % (received / 2**20))
        expect(last is not None and last[2] > 1 and last[5] > 1,
               "a journal head was not pruned (A from seq %s, B from seq %s)" %
               (last and last[2], last and last[5]))
        expect(int(rep_info.get("disk_segments", 0)) > 0 and int(rep_info.get("first_seq", 0)) > 1
               and int(rep_info.get("pruned_segments", 0)) > 0,
               "status does not report the pruned replica: %s" % rep_info)
        expect(int(prim.get("journal_segments", 0)) > 0 and
               int(prim.get("journal_first_seq", 0)) > 1,
               "status does not report the primary's pruned journal: %s" % prim)

        # An unplanned failover with the pruned journal.
        t_event = time.monotonic()
        a.link(False)
        a.kill_all()
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        _, st = cl.status(check=False)
        status = (st or {}).get("status", st or {})
        log("revolving journal, unplanned failover: %s" % line)
        log("failover: %s" % status.get("last_failover", ""))
        switch = jepsen_client.switchover(rep, t_event)
        if switch is not None:
            log("switchover (kill -> first reply from B): %.1f ms" % (1000 * switch))
        expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
               (line, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s, read-back: %s)" %
               (line, rep["stopped"], rep["readback_error"]))
        with open(cl.log_path("understudyd"), "rb") as f:
            dlog = f.read().decode(errors="replace")
        expect("cannot restore" not in dlog and "from checkpoint" in dlog,
               "B did not restore from a checkpoint: %s" %
               [l for l in dlog.splitlines() if "restore" in l][-5:])
        holders = net.vip_holders()
        expect("B" in holders, "service address not on node B (holders: %s)" % holders)

        # The tools on the pruned journal A left behind.
        r = harness.run([harness.UNDERSTUDY, "journal", "show", jdir, "--limit", "3"], timeout=60)
        head = r.out.splitlines()[:2]
        log("journal show: %s" % head)
        expect(r.rc == 0 and any("pruned behind a checkpoint" in l for l in head),
               "'understudy journal show' on the pruned journal: rc %s, %s %s" %
               (r.rc, head, r.err[-500:]))
        r = harness.run([harness.UNDERSTUDY, "replay", jdir], timeout=60)
        log("replay: rc %s: %s" % (r.rc, r.err.strip()[-300:]))
        expect(r.rc != 0 and "pruned behind a checkpoint" in r.err,
               "'understudy replay' on the pruned journal did not refuse clearly: rc %s %s" %
               (r.rc, r.err[-500:]))


if __name__ == "__main__":
    run_main(main)
