#!/usr/bin/env python3
"""Re-integration and role reversal, active-active (issue 12 part 5).

One client on node C writes all the time (SET/INCR, paced) against the
service address while the service moves:

  leg 1  A -> B unplanned: node A dies (link down, every process SIGKILLed,
         its service address gone as after a reboot); B goes live.
  rejoin A: understudyd started again on A (fresh --data);
         `understudy backup add A:7700 --from-start` asked of B: B streams
         its journal from seq 1 (the path without a checkpoint; the default,
         through a checkpoint, is test_reintegration_checkpoint.py's), A's
         shadow replays it and catches
         up, B's outputs wait for A's acks from then on.
  leg 2  B -> A planned: `understudy failover` asked of A.  B stops its live
         service, drains it, hands the address over and goes idle.
  rejoin B: `understudy backup add B:7700` asked of A, from seq 1 too;
         B's old copy of the journal is set aside.
  leg 3  A -> B unplanned: node A dies again (its daemon and live service).

Pass: lost == 0 over the whole run (Jepsen-style: acked / survived / lost),
each leg's service on the expected node, the old primaries fenced.  Prints
each leg's switchover (event -> first client reply) and each re-integration
(backup add -> output commit on, and -> the new shadow caught up).
Needs: root, network namespaces, understudyd + understudy, redis."""
import os
import time

import harness
import jepsen_client
import netns
from harness import expect, log, run_main
from reintegration_common import Daemon, crash_node

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:backup"]


def main():
    legs = []      # (name, t_event)
    reint = []     # (name, attach_ms, caught_up_ms)
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, c = net.node("A"), net.node("C")
        cl.start_backup()  # understudyd on B (cl.admin, cl.data_dir)
        db = Daemon(net, cl, "B", data=cl.data_dir)
        db.admin, db.log, db.proc = cl.admin, cl.log_path("understudyd"), cl.daemon
        da = Daemon(net, cl, "A")
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        stop = os.path.join(net.tmpdir("client"), "stop")
        # Bounded: at most 120 000 writes at 400/s (5 min), ended by the stop
        # file once every leg is done.
        stream = jepsen_client.Stream(c, net.vip, count=120000, duration=300, io_timeout=0.1,
                                      rate=400, extra=["--stop-file", stop])

        def diagnose():
            for label in ("A", "B"):
                n = net.node(label)
                log("%s: PING via VIP from C: %s; %s:6379 from C: %s; from itself: %s; addr: %s" % (
                    label, netns.probe_redis(c, net.vip), n.ip, netns.probe_redis(c, n.ip),
                    netns.probe_redis(n, "127.0.0.1"),
                    n.ip_cmd("-4", "-o", "addr", "show", check=False).stdout.decode().strip()))
            log("C neigh: %s" % c.ip_cmd("neigh", "show", check=False).stdout.decode().strip())

        def progress(more, what):
            def context():
                diagnose()
                return "status A: %s\nstatus B: %s" % (da.status()[1], db.status()[1])
            stream.require_progress(more, what, timeout=40, context=context)

        def crash_a():
            return crash_node(net, a)

        def rejoin(primary, backup, name, extra=()):
            t0 = time.monotonic()
            doc = primary.backup_add(backup, extra)
            if "--from-start" in extra:
                # The whole journal from seq 1, no checkpoint.
                expect(doc.get("from_seq") == 1 and not doc.get("mark_seq") and
                       "--from-start" in doc.get("fallback", ""),
                       "%s from seq 1: %s" % (name, doc))
            else:
                # Through a checkpoint of the live service.
                expect(int(doc.get("mark_seq", 0) or 0) > 1 and
                       doc.get("from_seq") == doc.get("mark_seq") and not doc.get("fallback"),
                       "%s did not go through a checkpoint mark: %s" % (name, doc))
            attach_ms = 1000 * (time.monotonic() - t0)
            backup.wait("shadow caught up",
                        lambda d: d.get("state") == "backup" and
                        d.get("shadow", {}).get("state") == "running", timeout=120)
            caught_ms = 1000 * (time.monotonic() - t0)
            st = primary.wait("backup protected",
                              lambda d: d.get("backup", {}).get("state") == "protected")
            b = st["backup"]
            log("%s: backup add -> output commit on %.0f ms (%d seqs, %.1f MiB, term %s); "
                "-> its shadow caught up %.0f ms; lag now %s events" %
                (name, attach_ms, doc["caught_up_seq"], doc["bytes"] / 2**20, doc["epoch"],
                 caught_ms, b.get("lag", {}).get("events")))
            reint.append((name, attach_ms, caught_ms))

        progress(400, "before leg 1")
        r = harness.run([harness.UNDERSTUDY, "backup", "add", "--help"], timeout=15)
        expect(r.rc == 0 and "NODE:PORT" in r.out, "backup add --help: %s %s" % (r.rc, r.err))
        a_addr = "%s:%d" % (a.ip, netns.PEER_PORT)
        # Asked of a backup, it names the state and whom to ask.
        db.backup_add_fails(a_addr, "serves no live service", "no live service here")
        # ---- leg 1: A -> B unplanned
        legs.append(("leg 1 A->B unplanned", crash_a()))
        db.wait("primary", lambda d: d.get("state") == "primary")
        progress(200, "after leg 1")
        # ---- A rejoins as B's backup
        a.link(True)
        db.backup_add_fails(a_addr, "not reachable", "nothing listens on A yet")
        other_key = cl.keygen(os.path.join(cl.dir, "other.key"))
        wrong = Daemon(net, cl, "A", data=os.path.join(cl.dir, "data-wrong"))
        wrong.cl = type("K", (), {"key": other_key, "heartbeat_ms": cl.heartbeat_ms,
                                  "missed": cl.missed, "_admin_json": cl._admin_json})()
        wrong.admin = os.path.join(cl.dir, "admin-wrong.sock")
        wrong.start()
        db.backup_add_fails(a_addr, "cluster key", "A's understudyd has another key")
        harness._kill_group(wrong.proc, __import__("signal").SIGKILL)
        wrong.proc.wait(timeout=10)
        da.start()
        rejoin(db, da, "A rejoins", ["--from-start"])
        db.backup_add_fails(a_addr, "already has backup", "one is attached")
        progress(200, "with A as backup")
        # ---- leg 2: B -> A planned
        t = time.monotonic()
        r, fo = cl._admin_json([harness.UNDERSTUDY, "failover", "--admin", da.admin, "--json"],
                               False, 90)
        expect(r.rc == 0, "planned failover B -> A failed (exit %s): %s\nA:\n%s\nB:\n%s" %
               (r.rc, r.err.strip(), da.tail(), db.tail()))
        legs.append(("leg 2 B->A planned", t))
        log("leg 2 breakdown: %s" % (fo and fo.get("timings")))
        db.wait("idle after handing over", lambda d: d.get("state") == "idle")
        expect("A" in net.vip_holders() and "B" not in net.vip_holders(),
               "after leg 2 the service address is on %s, not A alone" % net.vip_holders())
        old = netns.probe_redis(c, net.node("B").ip)
        expect(old != "+PONG", "B still answers clients after handing over: %s" % old)
        progress(200, "after leg 2")
        # ---- B rejoins as A's backup
        rejoin(da, db, "B rejoins", ["--from-start"])
        progress(200, "with B as backup")
        # ---- leg 3: A -> B unplanned
        legs.append(("leg 3 A->B unplanned", crash_a()))
        db.wait("primary again", lambda d: d.get("state") == "primary")
        progress(200, "after leg 3")

        with open(stop, "w"):
            pass
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("whole run: %s" % line)
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
    run_main(main)
