#!/usr/bin/env python3
"""A shadow that diverged at an event in the journal heals from a checkpoint
the backup asks for, instead of giving up on protection.

tests/e2e/mapped_kv.py (a RESP key-value server in python3) runs under
`understudy run --mode active-active` on node A.  It reads a byte of a file
it maps MAP_SHARED before each command and calls getppid() when the byte is
"1"; the journal holds the file as it was when it was mapped.  The test
writes "1" into the file and sends commands: the recorded program makes
getppid calls its replay does not, so B's shadow diverges, and diverges at
the same event after a restart from seq 1.  B must ask A for a checkpoint by
itself (its log: "checkpoint asked for (the shadow diverged at event N ...)
done"), restart the shadow from it (a mark past the divergence), and the
restored shadow must be running; then a planned failover to it under a
stream of writes must lose nothing (acked / survived / lost, lost = 0) and
B must hold the keys written before the divergence.
Needs: root, network namespaces, CRIU, understudyd + `understudy
run/status/failover`, python3, redis-cli."""
import json
import os
import sys
import time

import jepsen_client
import netns
from harness import expect, log, run_main

CRIU = "/opt/understudy/criu/bin/criu"
NEEDS = netns.CLUSTER + ["python3", "redis-cli", "understudy:checkpoint", CRIU]
SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mapped_kv.py")


def shadow_of(st):
    return (st or {}).get("status", st or {}).get("shadow", {})


def wait_log(cl, pattern, timeout):
    """The first line of B's log holding every string in `pattern`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(cl.log_path("understudyd"), "rb") as f:
            for l in f.read().decode(errors="replace").splitlines():
                if all(p in l for p in pattern):
                    return l
        time.sleep(0.2)
    return None


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        c = net.node("C")
        mapped = os.path.join(net.tmpdir("mapped"), "switch")
        with open(mapped, "wb") as f:
            f.write(b"0" * 4096)
        cl.start_backup()
        cl.start_primary([sys.executable, SERVER, "--port", netns.REDIS_PORT, "--map", mapped])
        deadline = time.monotonic() + 60
        sh = {}
        while time.monotonic() < deadline:
            _, st = cl.status(check=False)
            sh = shadow_of(st)
            if sh.get("state") == "running":
                break
            time.sleep(0.2)
        expect(sh.get("state") == "running", "B's shadow never ran: %s" % sh)

        for i in range(20):
            r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "SET",
                       "before:%d" % i, "v%d" % i], timeout=10)
            expect(r.rc == 0 and r.out.strip() == "OK", "SET before:%d failed" % i, r)
        # The input the journal does not hold.
        with open(mapped, "r+b") as f:
            f.write(b"1")
        for i in range(20):
            r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "SET",
                       "after:%d" % i, "w%d" % i], timeout=10)
            expect(r.rc == 0 and r.out.strip() == "OK", "SET after:%d failed" % i, r)

        diverged = wait_log(cl, ["DIVERGED"], 60)
        expect(diverged is not None, "B's shadow did not diverge on the mapped file's change")
        log("B: " + diverged.strip())
        asked = wait_log(cl, ["checkpoint asked for", "diverged at event", "done"], 120)
        expect(asked is not None, "B did not ask A for a checkpoint after the divergence")
        log("B: " + asked.strip())
        restored = wait_log(cl, ["restored", "from checkpoint"], 120)
        expect(restored is not None, "B's shadow was not restored from a checkpoint")
        log("B: " + restored.strip())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            _, st = cl.status(check=False)
            sh = shadow_of(st)
            if sh.get("state") == "running" and sh.get("healthy"):
                break
            time.sleep(0.2)
        log("B's shadow after the heal: %s" % sh)
        expect(sh.get("state") == "running" and sh.get("healthy"),
               "the healed shadow is not running: %s" % sh)
        expect(int(sh.get("divergences", 0)) >= 1, "status counts no divergence: %s" % sh)

        stream = jepsen_client.Stream(c, net.vip, count=3000, duration=60, io_timeout=1.0,
                                       rate=1000)
        expect(stream.wait_progress(1000), "the client stopped before 1000 acked writes")
        _, fo = cl.failover()
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        jl = jepsen_client.jepsen_line(rep)
        log("planned failover to the healed shadow: %s" % jl)
        log("failover: %s" % json.dumps((fo or {}).get("failover", fo)))
        expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
               (jl, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s" % jl)
        for k, v in (("before:0", "v0"), ("before:19", "v19"), ("after:19", "w19")):
            r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "GET", k], timeout=10)
            expect(r.rc == 0 and r.out.strip() == v,
                   "B's service answers GET %s with %r, not %r" % (k, r.out.strip(), v))


if __name__ == "__main__":
    run_main(main)
