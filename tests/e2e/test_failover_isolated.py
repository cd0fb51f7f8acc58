#!/usr/bin/env python3
"""An isolated backup does not take over.

redis-server under `understudy run` on node A, understudyd on node B with a
witness (`--witness C:9`, a TCP connect to node C: a refusal counts as an
answer), a client on node C writing through the service address.  Mid-stream
node B's own link goes down for 1 s.  B stops hearing the primary, but its
takeover check fails (its service interface is down, no carrier): it must
stay backup (state isolated) with an alarm saying why, and once its link is
back let A reconnect and resume.

Checks: B never leaves the backup role and reports state isolated with the
interface named while cut off; an alarm says it did not take over; A's
`understudy run` keeps running and reconnects; the service address stays on
A only; the client finishes with lost == 0."""
import time

import jepsen_client
import netns
from harness import expect, fail, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]

CUT_S = 1.0


def main():
    with netns.Net() as net:
        b, c = net.node("B"), net.node("C")
        with netns.Cluster(net, daemon_extra=["--witness", "%s:9" % c.ip]) as cl:
            cl.start_backup()
            cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
            _, before = cl.status()
            expect("eth0" in before.get("takeover_check", "") and c.ip in
                   before.get("takeover_check", ""),
                   "status does not describe the takeover check: %r" %
                   before.get("takeover_check"))
            stream = jepsen_client.Stream(c, net.vip, count=6000, duration=60, io_timeout=5.0,
                                          rate=2000)
            if not stream.wait_progress(2000):
                rep, rc, err = stream.finish()
                fail("the client stopped early (rc %s): %s" %
                     (rc, err.decode(errors="replace")[-2000:]))
            reconnects0 = int(cl.status()[1]["primary"].get("reconnects", 0))

            b.link(False)
            t_cut = time.monotonic()
            states, isolated = set(), None
            while time.monotonic() - t_cut < CUT_S:
                _, doc = cl.status(check=False)
                if doc:
                    states.add((doc.get("state"), doc.get("role")))
                    if doc.get("state") == "isolated" and isolated is None:
                        isolated = doc
                time.sleep(0.02)
            b.link(True)
            log("B cut off for %.1f s; states seen: %s" % (CUT_S, sorted(states)))
            expect(isolated is not None, "B never reported state isolated while its link was "
                   "down (states: %s)" % sorted(states))
            expect("eth0" in isolated.get("state_reason", ""),
                   "the isolated state does not name the interface: %r" %
                   isolated.get("state_reason"))
            log("B isolated: %s" % isolated.get("state_reason"))

            # A reconnects once B's link is back; B is backup again.
            deadline = time.monotonic() + 15
            doc = None
            while time.monotonic() < deadline:
                _, doc = cl.status(check=False)
                if (doc and doc.get("state") == "backup" and doc["primary"].get("connected") and
                        int(doc["primary"].get("reconnects", 0)) > reconnects0):
                    break
                time.sleep(0.05)
            else:
                fail("A did not reconnect to B after the cut (last status: %s)" % doc)

            rep, rc, err = stream.finish()
            expect(rep is not None, "the client printed no report (exit %s): %s" %
                   (rc, err.decode(errors="replace")[-2000:]))
            line = jepsen_client.jepsen_line(rep)
            log("isolated backup: %s" % line)
            expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
                   (line, rep["lost_keys"]))
            expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s)" %
                   (line, rep["stopped"]))

            _, after = cl.status()
            for state, role in states | {(after.get("state"), after.get("role"))}:
                expect(role == "backup" and state not in ("taking-over", "primary"),
                       "B left the backup role while cut off: state %s, role %s" % (state, role))
            expect(not after.get("last_failover"), "B failed over: %s" % after.get("last_failover"))
            alarms = [a for a in after.get("alarms", []) if "does not take over" in a]
            expect(alarms, "no alarm says B did not take over: %s" % after.get("alarms"))
            log("alarm: %s" % alarms[0])
            expect(cl.primary.poll() is None, "A's `understudy run` ended (exit %s)" %
                   cl.primary.returncode)
            holders = net.vip_holders()
            expect(holders == ["A"], "service address holders: %s (must stay on A)" % holders)
            log("the service stayed with A; B is %s again" % after.get("state"))


if __name__ == "__main__":
    run_main(main)
