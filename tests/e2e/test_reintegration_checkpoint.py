#!/usr/bin/env python3
"""Re-integration from a checkpoint mark (issue 12 part 5), in active-active
and in active-passive, each followed by failovers to the rejoined node.

One client on node C writes all the time (paced) against the service
address while the service moves:

  leg 1  A -> B unplanned: node A dies; B goes live (active-passive: it
         restores from seq 1, there is no checkpoint yet).
  rejoin A (fresh --data): `understudy backup add A:7700` asked of B.  B
         takes a consistent checkpoint of its live service (mark M in its
         journal), ships the image to A, and streams the journal from M --
         not from seq 1.  A's replica must start at M; in active-active A's
         shadow is restored from the image and fed from M + 1, in
         active-passive A holds the image and the journal after it.
  leg 2  B -> A unplanned: node B dies; A takes over from that checkpoint.
  rejoin B (its old --data: its old replica is set aside): asked of A, again
         through a checkpoint mark.
  leg 3  A -> B planned: `understudy failover` asked of B.

Case revolving (active-passive, a checkpoint every 3 s, 1 MiB segments):
after A rejoins, the node that took over (B) answers A's scheduled
checkpoints as a primary under `understudy run` does: A's newest checkpoint
moves past the re-integration mark, A's replica and B's live journal are
pruned before it (the revolving journal keeps working after a failover),
and leg 2 takes over from that newer checkpoint.

Pass: lost == 0 over the whole run (acked / survived / lost), every
re-integration through a mark (the reply's from_seq == mark_seq > 1, the
new backup's replica starting at it), each takeover from that checkpoint.
Prints each leg's switchover and each re-integration's phases (mark seq,
pause, image MB, ship ms, catch-up ms).
Needs: root, network namespaces, CRIU, understudyd + understudy, redis."""
import os
import sys
import time

import harness
import jepsen_client
import netns
from harness import expect, fail, log, run_main
from reintegration_common import Daemon, crash_node, rejoin, replica_first_seq

CRIU = "/opt/understudy/criu/bin/criu"
NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:backup", CRIU]
CASES = ["active_active", "active_passive", "revolving"]


def check_through_mark(doc, backup, passive, name):
    """The re-integration went through a checkpoint mark: the reply says so
    and the new backup's replica starts there (not at seq 1)."""
    mark = int(doc.get("mark_seq", 0) or 0)
    expect(not doc.get("fallback"), "%s fell back to streaming from seq 1: %s" %
           (name, doc.get("fallback")))
    expect(mark > 1, "%s: the reply names no checkpoint mark (mark_seq %s, from_seq %s): the "
           "journal was streamed from seq %s" % (name, doc.get("mark_seq"), doc.get("from_seq"),
                                                 doc.get("from_seq")))
    expect(int(doc.get("from_seq", 0)) == mark,
           "%s: streamed from seq %s, not from the mark %d" % (name, doc.get("from_seq"), mark))
    first, rdir = replica_first_seq(backup)
    expect(first == mark, "%s: %s's replica %s starts at seq %d, not at the mark %d" %
           (name, backup.label, rdir, first, mark))
    cur = os.path.join(backup.data, "checkpoints", "current")
    expect(os.path.islink(cur), "%s: %s holds no current checkpoint (%s)" % (name, backup.label,
                                                                             cur))
    text = backup.tail(200000)
    if not passive:
        want = "from seq %d" % (mark + 1)
        expect(any("restored" in l and want in l for l in text.splitlines()),
               "%s: %s's shadow was not restored from the checkpoint and fed %s:\n%s" %
               (name, backup.label, want, text[-4000:]))
    log("%s: %s's replica starts at the mark %d (%s); checkpoint %s" %
        (name, backup.label, mark, rdir, os.readlink(cur)))
    return mark


def check_takeover_from(daemon, mark, name):
    """DAEMON took over from the checkpoint at MARK (its replica holds
    nothing before it): the failover replayed from MARK + 1."""
    _, st = daemon.status()
    lf = (st or {}).get("last_failover", "")
    log("%s: %s" % (name, lf))
    expect("from seq %d" % (mark + 1) in lf or "from seq %d" % (mark + 1) in daemon.tail(200000),
           "%s: %s did not take over from the checkpoint at %d: %s" % (name, daemon.label, mark, lf))


def newest_mark(daemon):
    """The mark of DAEMON's current checkpoint (its name ends with it), 0: none."""
    try:
        return int(os.readlink(os.path.join(daemon.data, "checkpoints", "current"))
                   .rsplit("-", 1)[-1])
    except (OSError, ValueError):
        return 0


def wait_revolving(primary, backup, after, name, timeout=60):
    """PRIMARY (a node that took over) answers BACKUP's scheduled
    checkpoints: BACKUP's newest checkpoint moves past AFTER, its replica is
    pruned before it, and PRIMARY's live journal too.  Returns the mark."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        mark = newest_mark(backup)
        _, st = backup.status()
        r = (st or {}).get("replica") or {}
        pruned = int(r.get("pruned_before_seq", 0) or 0)
        first = int(r.get("first_seq", 0) or 0)
        # The heartbeats carry the live journal's disk use, as under run.
        pfirst = int(((st or {}).get("primary") or {}).get("journal_first_seq", 0) or 0)
        live = [l for l in primary.tail(400000).splitlines()
                if "of the live journal" in l and "revolving journal: removed" in l]
        seen = ("newest checkpoint mark %d, replica pruned before %d (first seq %d), %d prune(s) "
                "of %s's live journal (its first seq %d)" % (mark, pruned, first, len(live),
                                                            primary.label, pfirst))
        if mark > after and pruned > after and first > after and live and pfirst > after:
            log("%s: %s; %s" % (name, seen, live[-1].strip()))
            return mark
        time.sleep(0.5)
    fail("%s: %s did not answer %s's scheduled checkpoints past the mark %d within %d s: %s\n"
         "%s log:\n%s\n%s log:\n%s" % (name, primary.label, backup.label, after, timeout, seen,
                                       primary.label, primary.tail(), backup.label, backup.tail()))


def main(case):
    passive = case in ("active_passive", "revolving")
    legs = []
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, b, c = net.node("A"), net.node("B"), net.node("C")
        if case == "revolving":
            cl.mode_args = ["--mode", "active-passive", "--checkpoint-interval", "3s",
                            "--journal-segment-size", "1M"]
        elif passive:
            cl.mode_args = ["--mode", "active-passive", "--checkpoint-interval", "3600s"]
        cl.start_backup()
        db = Daemon(net, cl, "B", data=cl.data_dir)
        db.admin, db.log, db.proc = cl.admin, cl.log_path("understudyd"), cl.daemon
        da = Daemon(net, cl, "A")
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        stop = os.path.join(net.tmpdir("client"), "stop")
        # Bounded: at most 120 000 writes at 400/s (5 min), ended by the stop
        # file once every leg is done.
        stream = jepsen_client.Stream(c, net.vip, count=120000, duration=300, io_timeout=0.1,
                                      rate=400, extra=["--stop-file", stop])

        def progress(more, what):
            stream.require_progress(more, what, timeout=40, context=lambda: (
                "status A: %s\nstatus B: %s\nA log:\n%s\nB log:\n%s" %
                (da.status()[1], db.status()[1], da.tail(), db.tail())))

        if passive:
            ready = lambda d: d.get("state") == "backup"
        else:
            ready = lambda d: (d.get("state") == "backup" and
                               d.get("shadow", {}).get("state") == "running")

        progress(400, "before leg 1")
        # ---- leg 1: A -> B unplanned
        legs.append(("leg 1 A->B unplanned", crash_node(net, a)))
        db.wait("primary", lambda d: d.get("state") == "primary")
        progress(200, "after leg 1")
        # ---- A rejoins (fresh --data), through a checkpoint of B's service
        a.link(True)
        da.start()
        doc = rejoin(db, da, "A rejoins", ready)
        mark_a = check_through_mark(doc, da, passive, "A rejoins")
        progress(200, "with A as backup")
        if case == "revolving":
            wait_revolving(db, da, mark_a, "B answers A's schedule")
        # ---- leg 2: B -> A unplanned: A takes over from that checkpoint
        legs.append(("leg 2 B->A unplanned", crash_node(net, b)))
        if case == "revolving":
            mark_a = newest_mark(da)  # no checkpoint arrives once B is dead
        da.wait("primary", lambda d: d.get("state") == "primary")
        check_takeover_from(da, mark_a, "leg 2")
        progress(200, "after leg 2")
        # ---- B rejoins with its old --data (its old replica is set aside)
        b.link(True)
        db.start()
        doc = rejoin(da, db, "B rejoins", ready)
        check_through_mark(doc, db, passive, "B rejoins")
        expect("superseded" in db.tail(200000) or "set aside" in db.tail(200000),
               "B's old replica was not set aside:\n%s" % db.tail())
        progress(200, "with B as backup")
        # ---- leg 3: A -> B planned
        t = time.monotonic()
        r, fo = cl._admin_json([harness.UNDERSTUDY, "failover", "--admin", db.admin, "--json"],
                               False, 90)
        expect(r.rc == 0, "planned failover A -> B failed (exit %s): %s\nA:\n%s\nB:\n%s" %
               (r.rc, r.err.strip(), da.tail(), db.tail()))
        legs.append(("leg 3 A->B planned", t))
        da.wait("idle after handing over", lambda d: d.get("state") == "idle")
        progress(200, "after leg 3")

        with open(stop, "w"):
            pass
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("whole run (%s): %s" % (case, line))
        for name, t_event in legs:
            s = jepsen_client.switchover(rep, t_event)
            log("%s: switchover %s" % (name, "%.1f ms" % (1000 * s) if s is not None else
                                       "not seen by the client"))
        expect(rep["lost"] == 0, "acknowledged writes were lost: %s; first lost: %s" %
               (line, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s, read-back: %s)" %
               (line, rep["stopped"], rep["readback_error"]))
        expect("B" in net.vip_holders(), "service address not on B at the end: %s" %
               net.vip_holders())


if __name__ == "__main__":
    case = sys.argv[1] if len(sys.argv) > 1 else CASES[0]
    if case not in CASES:
        raise SystemExit("case %r: one of %s" % (case, ", ".join(CASES)))
    run_main(lambda: main(case))
