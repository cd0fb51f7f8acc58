#!/usr/bin/env python3
"""One primary, always: the old primary reconnecting during go-live is FENCED.

The race, driven deterministically: understudyd on node B runs with the test
hook UNDERSTUDY_TEST_GOLIVE_DELAY_MS (go-live pauses right after the takeover
decision).  redis-server under `understudy run` on node A, a client on node C
writing SET/INCR through the service address.  Mid-stream node A is cut off
(its link goes down; its processes keep running: a partition, not a crash).
B misses the heartbeats and decides -- status shows state taking-over -- and
while B is still inside go-live A's link comes back: A's recorder reconnects
and must be answered FENCED (its `understudy run` exits 3, its redis is
killed) before B goes live.  Then B serves.

Checks: A's run exits 3 while B is still taking over; B's log shows the
fence; lost == 0; afterwards only B holds the service address and answers,
A's redis answers nobody."""
import os
import time

import jepsen_client
import netns
from harness import expect, fail, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]

DELAY_MS = 4000


def wait_state(cl, want, timeout):
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        _, doc = cl.status(check=False)
        if doc and doc.get("state") == want:
            return doc
        time.sleep(0.02)
    fail("understudyd did not reach state %r within %.1f s (last status: %s)" %
         (want, timeout, doc and {k: doc.get(k) for k in ("state", "state_reason", "role")}))


def main():
    env = dict(os.environ, UNDERSTUDY_TEST_GOLIVE_DELAY_MS=str(DELAY_MS))
    with netns.Net() as net, netns.Cluster(net, daemon_env=env) as cl:
        a, c = net.node("A"), net.node("C")
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        stream = jepsen_client.Stream(c, net.vip, count=6000, duration=60, io_timeout=0.5,
                                      rate=2000)
        if not stream.wait_progress(2400):
            rep, rc, err = stream.finish()
            fail("the client stopped early (rc %s): %s" % (rc, err.decode(errors="replace")[-2000:]))

        a.link(False)  # a partition: A's processes keep running
        t_cut = time.monotonic()
        doc = wait_state(cl, "taking-over", timeout=DELAY_MS / 1000.0)
        t_decided = time.monotonic()
        log("B decided %.0f ms after A was cut off: %s" % (1000 * (t_decided - t_cut),
                                                           doc.get("state_reason")))
        a.link(True)

        # A's recorder reconnects inside B's go-live and is fenced.
        deadline = t_decided + DELAY_MS / 1000.0
        while time.monotonic() < deadline and cl.primary.poll() is None:
            time.sleep(0.02)
        t_fenced = time.monotonic()
        _, during = cl.status(check=False)
        expect(cl.primary.poll() is not None,
               "A's `understudy run` still runs %.0f ms after B decided: its reconnect was not "
               "fenced during go-live" % (1000 * (t_fenced - t_decided)))
        expect(cl.primary.returncode == 3, "A's `understudy run` exited %s, not 3 (FENCED)" %
               cl.primary.returncode)
        expect(during and during.get("state") == "taking-over",
               "B finished go-live before A's reconnect was fenced (state %s): the race was not "
               "exercised; raise DELAY_MS" % (during and during.get("state")))
        log("A's run exited 3 (FENCED) %.0f ms after B decided, B still taking over" %
            (1000 * (t_fenced - t_decided)))

        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("go-live race: %s" % line)
        expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
               (line, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s, read-back: %s)" %
               (line, rep["stopped"], rep["readback_error"]))

        with open(cl.log_path("understudyd"), "rb") as f:
            dlog = f.read().decode(errors="replace")
        fences = [l for l in dlog.splitlines() if "fencing recorder" in l and "taking over" in l]
        expect(fences, "understudyd did not log fencing the reconnect during the takeover")
        log("B: %s" % fences[0].split(": ", 1)[-1][:200])
        with open(cl.log_path("run"), "rb") as f:
            rlog = f.read().decode(errors="replace")
        expect("FENCED" in rlog, "A's run log does not say it was FENCED:\n" + rlog[-2000:])

        holders = net.vip_holders()
        expect(holders == ["B"], "service address holders after the takeover: %s" % holders)
        old = netns.probe_redis(c, a.ip)
        expect(old != "+PONG", "the old primary on %s still answers clients" % a.ip)
        expect(netns.probe_redis(c, net.vip) == "+PONG", "the service address does not answer")
        _, after = cl.status()
        expect(after.get("state") == "primary" and after.get("role") == "primary",
               "B is not primary after the takeover: %s" % after.get("state"))
        log("one primary: B on %s; A's redis answers %r" % (net.vip, old))


if __name__ == "__main__":
    run_main(main)
