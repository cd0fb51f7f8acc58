#!/usr/bin/env python3
"""Re-integration and role reversal, active-active (issue 12 part 5).

One client on node C writes all the time (SET/INCR, paced) against the
service address while the service moves:

  leg 1  A -> B unplanned: node A dies (link down, every process SIGKILLed,
         its service address gone as after a reboot); B goes live.
  rejoin A: understudyd started again on A (fresh --data);
         `understudy backup add A:7700` asked of B: B streams its journal
         from seq 1, A's shadow replays it and catches up, B's outputs wait
         for A's acks from then on.
  leg 2  B -> A planned: `understudy failover` asked of A.  B stops its live
         service, drains it, hands the address over and goes idle.
  rejoin B: `understudy backup add B:7700` asked of A; B's old copy of the
         journal is set aside and taken again from seq 1.
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
from harness import expect, fail, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:backup"]


class Daemon:
    """understudyd on one node, with its own --data, admin socket and logs."""

    def __init__(self, net, cl, label, data=None):
        self.net, self.cl, self.label = net, cl, label
        self.node = net.node(label)
        self.name = "node" + label
        self.admin = os.path.join(cl.dir, "admin-%s.sock" % label)
        self.data = data or os.path.join(cl.dir, "data-%s" % label)
        self.log = os.path.join(cl.dir, "understudyd-%s.log" % label)
        self.proc = None

    def start(self, timeout=30):
        argv = [netns.UNDERSTUDYD, "--listen", "%s:%d" % (self.node.ip, netns.PEER_PORT),
                "--data", self.data, "--key", self.cl.key, "--admin-socket", self.admin,
                "--service-address", "%s/%d" % (self.net.vip, self.net.cidr),
                "--service-dev", netns.NODE_DEV, "--heartbeat-ms", self.cl.heartbeat_ms,
                "--missed-heartbeats", self.cl.missed, "--node-name", self.name]
        out = open(self.log, "ab")
        self.proc = self.node.start(argv, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail("understudyd on %s exited (%s) at start:\n%s" %
                     (self.label, self.proc.returncode, self.tail()))
            if os.path.exists(self.admin) and self.status()[1] is not None:
                return
            time.sleep(0.05)
        fail("understudyd on %s did not answer within %d s:\n%s" % (self.label, timeout,
                                                                     self.tail()))

    def tail(self, n=5000):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def status(self):
        return self.cl._admin_json([harness.UNDERSTUDY, "status", "--admin", self.admin, "--json"],
                                   False, 15)

    def wait(self, what, pred, timeout=60):
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            _, doc = self.status()
            if doc is not None and pred(doc):
                return doc
            time.sleep(0.02)
        fail("%s: %s not reached within %d s; last status: %s\nlog:\n%s" %
             (self.label, what, timeout, doc and {k: doc.get(k) for k in
                                                  ("state", "state_reason", "shadow", "backup")},
              self.tail()))

    def backup_add_fails(self, target_addr, want, why):
        """`backup add TARGET_ADDR` asked of this daemon must fail, saying WANT."""
        r = harness.run([harness.UNDERSTUDY, "backup", "add", target_addr, "--admin", self.admin,
                         "--timeout-ms", "5000"], timeout=60)
        expect(r.rc == 1 and want in r.err,
               "backup add %s asked of %s (%s): wanted exit 1 saying %r, got %s: %s%s" %
               (target_addr, self.label, why, want, r.rc, r.out, r.err))
        log("error (%s): %s" % (why, r.err.strip()))

    def backup_add(self, target):
        r, doc = self.cl._admin_json([harness.UNDERSTUDY, "backup", "add", "%s:%d" % (
            target.node.ip, netns.PEER_PORT), "--admin", self.admin, "--json",
            "--timeout-ms", "90000"], False, 150)
        expect(r.rc == 0 and doc is not None,
               "backup add %s asked of %s failed (exit %s): %s\n%s log:\n%s\n%s log:\n%s" %
               (target.label, self.label, r.rc, r.err.strip(), self.label, self.tail(),
                target.label, target.tail()))
        return doc


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
            want = stream.progress + more
            if not stream.wait_progress(want, timeout=40):
                diagnose()
                rep, rc, err = stream.finish()
                fail("the client did not make progress %s (wanted %d acked, rc %s): %s\n%s\n"
                     "status A: %s\nstatus B: %s" %
                     (what, want, rc, rep and jepsen_client.jepsen_line(rep),
                      err.decode(errors="replace")[-2000:], da.status()[1], db.status()[1]))

        def crash_a():
            t = time.monotonic()
            a.link(False)
            a.kill_all()
            # The machine restarts without the service address (`understudy
            # run` added it as /32, a go-live as /CIDR).
            for plen in (32, net.cidr):
                a.ip_cmd("addr", "del", "%s/%d" % (net.vip, plen), "dev", netns.NODE_DEV,
                         check=False)
            expect(not a.has_addr(net.vip), "could not remove %s from node A" % net.vip)
            return t

        def rejoin(primary, backup, name):
            t0 = time.monotonic()
            doc = primary.backup_add(backup)
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
        rejoin(db, da, "A rejoins")
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
        rejoin(da, db, "B rejoins")
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
