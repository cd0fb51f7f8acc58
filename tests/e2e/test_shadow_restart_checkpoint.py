#!/usr/bin/env python3
"""Issue 12 part 7: in active-active, a shadow that died restarts from the
newest checkpoint (fed from its mark + 1), not from seq 1 of the replica.

redis-server runs under `understudy run --mode active-active` on node A with
some data; `understudy checkpoint` ships an image to node B.  The test
SIGKILLs B's shadow (by the pid `understudy status` gives); B's supervisor
must restore the checkpoint (its log says "restored ... from checkpoint
<id> ... from seq <mark+1>"), the restored shadow must catch up and be
healthy, and a planned failover to it under a stream of writes must lose
nothing: acked / survived / lost with lost = 0.
Needs: root, network namespaces, CRIU, understudyd + `understudy
run/checkpoint/status/failover`, redis-server, redis-cli."""
import json
import os
import signal
import time

import harness
import jepsen_client
import netns
from harness import expect, log, run_main

CRIU = "/opt/understudy/criu/bin/criu"
NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:checkpoint", CRIU]


def shadow_of(st):
    return (st or {}).get("status", st or {}).get("shadow", {})


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        c = net.node("C")
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")) +
                         ["--enable-debug-command", "yes"])
        r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "DEBUG", "POPULATE",
                   "5000", "key", "1000"], timeout=300)
        expect(r.rc == 0 and r.out.strip() == "OK", "DEBUG POPULATE failed", r)
        r, ck = cl._admin_json([harness.UNDERSTUDY, "checkpoint", "--admin", cl.admin, "--json"],
                               True, 300)
        expect(ck is not None, "understudy checkpoint --json printed no JSON", r)
        mark = int(ck["mark_seq"])
        log("checkpoint %s at mark seq %d" % (ck["image_id"], mark))
        # The shadow to kill is a running one.  It may have healed itself
        # first: redis' jemalloc background thread is a race the recording
        # does not order, and a shadow that meets it restarts from the
        # newest checkpoint (docs/replication.md) -- then it is killed after.
        want = "from checkpoint %s" % ck["image_id"]

        def restored_lines():
            with open(cl.log_path("understudyd"), "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            for l in lines:
                expect("cannot restore" not in l, "B could not restore: %s" % l)
            return [l for l in lines if want in l and "restored" in l]

        deadline = time.monotonic() + 120
        while True:
            _, st = cl.status(check=False)
            sh = shadow_of(st)
            old = int(sh.get("pid", 0) or 0)
            if sh.get("state") == "running" and old > 0:
                break
            expect(time.monotonic() < deadline, "no running shadow within 120 s: %s" % sh)
            time.sleep(0.2)
        if sh.get("restarts"):
            log("the shadow healed itself before the kill (%s restart(s); last divergence: %s)"
                % (sh.get("restarts"), sh.get("last_divergence")))
        before = len(restored_lines())
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 120
        line = None
        while time.monotonic() < deadline and line is None:
            lines = restored_lines()
            if len(lines) > before:
                line = lines[-1]
            time.sleep(0.2)
        expect(line is not None, "the shadow was not restored from %s within 120 s" %
               ck["image_id"])
        log("B: " + line.strip())
        expect("from seq %d" % (mark + 1) in line, "the restored shadow is not fed from mark + 1")
        deadline = time.monotonic() + 120
        sh = {}
        while time.monotonic() < deadline:
            _, st = cl.status(check=False)
            sh = shadow_of(st)
            if sh.get("state") == "running" and int(sh.get("pid", 0) or 0) not in (0, old):
                break
            time.sleep(0.2)
        expect(sh.get("state") == "running", "the restored shadow never caught up: %s" % sh)
        stream = jepsen_client.Stream(c, net.vip, count=4000, duration=60, io_timeout=1.0,
                                       rate=2000)
        expect(stream.wait_progress(2000), "the client stopped before 2000 acked writes")
        _, fo = cl.failover()
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        jl = jepsen_client.jepsen_line(rep)
        log("planned failover to the restored shadow: %s" % jl)
        log("failover: %s" % json.dumps((fo or {}).get("failover", fo)))
        expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
               (jl, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s" % jl)
        r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "DBSIZE"], timeout=30)
        expect(r.rc == 0 and int(r.out.strip()) >= 5000 + rep["acked"],
               "B's redis has %s keys after the failover" % r.out.strip())


if __name__ == "__main__":
    run_main(main)
