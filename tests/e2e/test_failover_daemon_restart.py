#!/usr/bin/env python3
"""The new primary outlives its daemon; the daemon remembers (issue 12 parts 4
and 8, issue 15 part 5).

redis-server under `understudy run` on node A, understudyd on node B with a
--notify hook, a client on node C writing through the service address.  Node
A dies (SIGKILL of all its processes, link cut): B takes over.  Then B's
understudyd gets SIGTERM and is started again on the same --data -- while a
bounded probe loop from C keeps asking the service address for PING.

Checks: the service answers every probe through the daemon's stop and start
(the live redis is not the daemon's to kill); the restarted daemon finds it
again (state primary, shadow live with the same pid, its interposer's control
block reopened through /proc: mode live, the replayed-event count of before); status
shows the same last failover and the alarms of before the restart;
`understudy events --json` lists the failover (with its seq and breakdown)
and the alarm; the notify hook ran with state backup, then primary with the
go-live seq; after the restart a reconnecting old primary would be fenced
(state primary: nothing is admitted).  The client's writes across the
failover and the restart: lost == 0."""
import glob
import json
import os
import signal
import time

import harness
import jepsen_client
import netns
from harness import expect, fail, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:events"]

HOOK = """#!/bin/sh
# understudy notify hook (test): one file per run, in order.
f=%(dir)s/$(date +%%s%%N)-$1.env
env | grep '^UNDERSTUDY_' | sort > "$f.tmp" && mv "$f.tmp" "$f"
exit 0
"""


def write_hook(dirpath):
    os.makedirs(dirpath, exist_ok=True)
    path = os.path.join(dirpath, "hook.sh")
    with open(path, "w") as f:
        f.write(HOOK % {"dir": dirpath})
    os.chmod(path, 0o755)
    return path


def hook_runs(dirpath):
    """[(state, {VAR: value})] in the order the hook ran."""
    out = []
    for p in sorted(glob.glob(os.path.join(dirpath, "*.env"))):
        env = {}
        with open(p) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                env[k] = v
        out.append((env.get("UNDERSTUDY_STATE"), env))
    return out


def wait_hook(dirpath, state, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [env for s, env in hook_runs(dirpath) if s == state]
        if runs:
            return runs[-1]
        time.sleep(0.05)
    fail("the notify hook did not run with state %r within %.0f s (runs: %s)" %
         (state, timeout, [s for s, _ in hook_runs(dirpath)]))


def wait_status(cl, pred, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        _, doc = cl.status(check=False)
        if doc and pred(doc):
            return doc
        time.sleep(0.05)
    fail("understudyd: %s not reached within %.0f s (last status: %s)" %
         (what, timeout, doc and {k: doc.get(k) for k in ("state", "state_reason", "role")}))


def events(cl):
    r = harness.run([harness.UNDERSTUDY, "events", "--admin", cl.admin, "--json"], timeout=20)
    expect(r.rc == 0, "understudy events --json failed", r)
    out = []
    for line in r.out.splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def main():
    with netns.Net() as net:
        hooks = net.tmpdir("hooks")
        hook = write_hook(hooks)
        with netns.Cluster(net, daemon_extra=["--notify", hook, "--notify-timeout-ms", "5000"]) \
                as cl:
            b, c = net.node("B"), net.node("C")
            cl.start_backup()
            cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
            env = wait_hook(hooks, "backup")
            expect(env.get("UNDERSTUDY_ROLE") == "backup" and
                   env.get("UNDERSTUDY_NODE") == "nodeB",
                   "hook environment for backup: %s" % env)

            stream = jepsen_client.Stream(c, net.vip, count=8000, duration=60, io_timeout=0.5,
                                          rate=400)
            if not stream.wait_progress(800):
                rep, rc, err = stream.finish()
                fail("the client stopped early (rc %s): %s" %
                     (rc, err.decode(errors="replace")[-2000:]))
            net.crash("A")
            t_crash = time.monotonic()
            before = wait_status(cl, lambda d: d.get("state") == "primary", "state primary")
            log("B primary %.0f ms after A died: %s" % (1000 * (time.monotonic() - t_crash),
                                                         before.get("last_failover")))
            env = wait_hook(hooks, "primary")
            expect(env.get("UNDERSTUDY_ROLE") == "primary", "hook role: %s" % env)
            seq = int(env.get("UNDERSTUDY_SEQ", "0"))
            expect(seq > 0 and ("seq %d" % seq) in before.get("last_failover", ""),
                   "hook UNDERSTUDY_SEQ %s is not the go-live seq of %r" %
                   (seq, before.get("last_failover")))
            expect(env.get("UNDERSTUDY_REASON"), "hook without a reason: %s" % env)
            live_pid = before["shadow"]["pid"]
            alarms_before = before.get("alarms", [])
            expect(any("lost" in a for a in alarms_before),
                   "no alarm about the lost primary: %s" % alarms_before)

            # SIGTERM the daemon that took over, probing the service all along.
            cl.daemon.send_signal(signal.SIGTERM)
            probes, bad = 0, []
            t0 = time.monotonic()
            while cl.daemon.poll() is None and time.monotonic() - t0 < 30:
                r = netns.probe_redis(c, net.vip)
                probes += 1
                if r != "+PONG":
                    bad.append(r)
            expect(cl.daemon.poll() is not None, "understudyd did not exit within 30 s of SIGTERM")
            expect(cl.daemon.returncode == 0, "understudyd exited %s after SIGTERM" %
                   cl.daemon.returncode)
            down = []
            for _ in range(10):  # no daemon at all now
                r = netns.probe_redis(c, net.vip)
                probes += 1
                down.append(r)
            expect(all(r == "+PONG" for r in down),
                   "the service stopped answering with understudyd stopped: %s" % down)
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
            log("service answered %d/%d probes across SIGTERM and restart of understudyd" %
                (probes, probes))

            expect(after.get("role") == "primary", "role after restart: %s" % after.get("role"))
            expect(after["shadow"]["state"] == "live" and after["shadow"]["pid"] == live_pid,
                   "the restarted daemon did not adopt the live service (pid %s): shadow %s" %
                   (live_pid, after["shadow"]))
            expect("control block reattached (interposer mode live)" in after.get("restored", ""),
                   "the restarted daemon did not reach the live service's interposer: %s" %
                   after.get("restored"))
            expect(after["shadow"]["events_done"] == before["shadow"]["events_done"] and
                   int(after["shadow"]["events_done"]) > 0,
                   "events replayed by the live service: %s before, %s after the restart" %
                   (before["shadow"]["events_done"], after["shadow"]["events_done"]))
            expect(after.get("last_failover") == before.get("last_failover"),
                   "last failover after restart %r != before %r" %
                   (after.get("last_failover"), before.get("last_failover")))
            missing = [a for a in alarms_before if a not in after.get("alarms", [])]
            expect(not missing, "alarms lost in the restart: %s" % missing)
            log("after restart: %s" % after.get("restored"))

            evs = events(cl)
            kinds = [e.get("kind") for e in evs]
            fo = [e for e in evs if e.get("kind") == "failover"]
            expect(fo, "understudy events lists no failover: kinds %s" % kinds)
            expect(int(fo[-1].get("seq", 0)) == seq and fo[-1].get("total_ms", 0) > 0 and
                   fo[-1].get("failover_kind") == "unplanned",
                   "failover event: %s (go-live seq %d)" % (fo[-1], seq))
            expect("alarm" in kinds and "daemon" in kinds, "event kinds: %s" % kinds)
            expect(all(e.get("time") and e.get("cause") for e in evs),
                   "an event without time or cause: %s" % [e for e in evs if not e.get("time")])
            log("events: %d (%s); failover: %s" % (len(evs), sorted(set(kinds)),
                                                  fo[-1].get("cause")))
            r = harness.run([harness.UNDERSTUDY, "events", "--data", cl.data_dir], timeout=20)
            expect(r.rc == 0 and "failover" in r.out, "understudy events --data failed", r)

            rep, rc, err = stream.finish()
            expect(rep is not None, "the client printed no report (exit %s): %s" %
                   (rc, err.decode(errors="replace")[-2000:]))
            line = jepsen_client.jepsen_line(rep)
            log("failover + daemon restart: %s" % line)
            expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
                   (line, rep["lost_keys"]))
            expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s, read-back: %s)"
                   % (line, rep["stopped"], rep["readback_error"]))


if __name__ == "__main__":
    run_main(main)
