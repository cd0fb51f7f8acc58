#!/usr/bin/env python3
"""A service restored by CRIU outlives the daemon that restored it (issue 12
part 4, active-passive).

redis-server under `understudy run --mode active-passive` on node A, with
AP_KEYS keys of 1000 bytes (default 20000); `understudy checkpoint` ships
the image to B; a client on C streams writes; node A dies: B restores the
checkpoint, replays the tail and goes live.  Then B's understudyd gets
SIGTERM and is started again on the same --data while the client keeps
writing and a bounded probe loop asks for PING.

Checks: every probe answers +PONG through the daemon's stop and start (the
restored redis's parent is its restore keeper, not understudyd); the
restarted daemon adopts it (state primary, shadow live with the same pid,
control block reattached); no alarm says the live service stays tied to
understudyd; acked / survived / lost with lost = 0."""
import os
import signal
import time

import harness
import jepsen_client
import netns
from harness import expect, fail, log, run_main

CRIU = "/opt/understudy/criu/bin/criu"
NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:checkpoint", CRIU]
KEYS = int(os.environ.get("AP_KEYS", "20000"))


def wait_status(cl, pred, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        _, doc = cl.status(check=False)
        doc = (doc or {}).get("status", doc)
        if doc and pred(doc):
            return doc
        time.sleep(0.05)
    fail("understudyd: %s not reached within %.0f s (last status: %s)" %
         (what, timeout, doc and {k: doc.get(k) for k in ("state", "state_reason", "role")}))


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, c = net.node("A"), net.node("C")
        cl.mode_args = ["--mode", "active-passive", "--checkpoint-interval", "3600s"]
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")) +
                         ["--enable-debug-command", "yes"])
        r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "DEBUG", "POPULATE",
                   str(KEYS), "key", "1000"], timeout=300)
        expect(r.rc == 0 and r.out.strip() == "OK", "DEBUG POPULATE failed", r)
        r, ck = cl.checkpoint()
        expect(ck is not None, "understudy checkpoint --json printed no JSON", r)

        stream = jepsen_client.Stream(c, net.vip, count=20000, duration=90, io_timeout=0.5,
                                      rate=300)
        if not stream.wait_progress(600):
            rep, rc, err = stream.finish()
            fail("the client stopped early (rc %s): %s" % (rc, err.decode(errors="replace")[-2000:]))
        a.link(False)
        a.kill_all()
        before = wait_status(cl, lambda d: d.get("state") == "primary", "state primary", 120)
        log("B live: %s" % before.get("last_failover"))
        live_pid = before["shadow"]["pid"]
        tied = [x for x in before.get("alarms", []) if "tied to understudyd" in x]
        expect(not tied, "an alarm still says the restored service is tied to understudyd: %s" %
               tied)
        expect(stream.wait_progress(stream.progress + 300, timeout=60),
               "the client made no progress after the failover")

        cl.daemon.send_signal(signal.SIGTERM)
        probes, bad = 0, []
        t0 = time.monotonic()
        while cl.daemon.poll() is None and time.monotonic() - t0 < 30:
            r = netns.probe_redis(c, net.vip)
            probes += 1
            if r != "+PONG":
                bad.append(r)
        expect(cl.daemon.poll() is not None, "understudyd did not exit within 30 s of SIGTERM")
        for _ in range(10):  # no daemon at all now
            r = netns.probe_redis(c, net.vip)
            probes += 1
            if r != "+PONG":
                bad.append(r)
        expect(not bad, "the restored service stopped answering with understudyd stopped: %s" %
               bad[:10])
        cl.start_backup()
        after = wait_status(cl, lambda d: d.get("state") == "primary",
                            "state primary after the restart")
        for _ in range(10):
            r = netns.probe_redis(c, net.vip)
            probes += 1
            if r != "+PONG":
                bad.append(r)
        expect(not bad, "%d of %d probes failed across the daemon restart: %s" %
               (len(bad), probes, bad[:10]))
        log("restored service answered %d/%d probes across SIGTERM and restart" % (probes, probes))
        expect(after["shadow"]["state"] == "live" and after["shadow"]["pid"] == live_pid,
               "the restarted daemon did not adopt the restored service (pid %s): %s" %
               (live_pid, after["shadow"]))
        expect("control block reattached" in after.get("restored", ""),
               "the restarted daemon did not reach the restored service's interposer: %s" %
               after.get("restored"))

        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("active-passive failover + daemon restart: %s" % line)
        expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
               (line, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s" % line)


if __name__ == "__main__":
    run_main(main)
