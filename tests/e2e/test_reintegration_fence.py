#!/usr/bin/env python3
"""A re-integrated pair under a partition: one primary, always (issue 12
part 5).

Node A dies, B goes live; A's understudyd comes back and `understudy backup
add` (asked of B) makes it B's backup.  Then node B is cut off (its link
down, its processes alive): A stops hearing B, goes live itself (term 3).
When B's link comes back, B's daemon reconnects to A with term 2, is
answered FENCED, kills its live service, removes the service address and
goes idle.  Pass: lost == 0 for the client on C across it all, A alone
holds and serves the service address at the end, B answers nobody, and B's
history says it was fenced.
Needs: root, network namespaces, understudyd + understudy, redis."""
import os
import time

import harness
import jepsen_client
import netns
from harness import expect, log, run_main
from test_reintegration import Daemon

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:backup"]


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, b, c = net.node("A"), net.node("B"), net.node("C")
        cl.start_backup()
        db = Daemon(net, cl, "B", data=cl.data_dir)
        db.admin, db.log, db.proc = cl.admin, cl.log_path("understudyd"), cl.daemon
        da = Daemon(net, cl, "A")
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        stop = os.path.join(net.tmpdir("client"), "stop")
        stream = jepsen_client.Stream(c, net.vip, count=60000, duration=180, io_timeout=0.1,
                                      rate=400, extra=["--stop-file", stop])

        progress = stream.require_progress

        progress(300, "at the start")
        a.link(False)
        a.kill_all()
        for plen in (32, net.cidr):
            a.ip_cmd("addr", "del", "%s/%d" % (net.vip, plen), "dev", netns.NODE_DEV, check=False)
        db.wait("primary", lambda d: d.get("state") == "primary")
        progress(200, "after A died")
        a.link(True)
        da.start()
        da_doc = db.backup_add(da)
        log("A rejoined: %d seqs in %.0f ms" % (da_doc["caught_up_seq"], da_doc["catch_up_ms"]))
        da.wait("shadow caught up", lambda d: d.get("shadow", {}).get("state") == "running")
        progress(200, "with A as backup")

        # B is cut off, alive: A must take over, and B must not serve again.
        t_cut = time.monotonic()
        b.link(False)
        da.wait("primary (B cut off)", lambda d: d.get("state") == "primary")
        log("A took over %.0f ms after B was cut off" % (1000 * (time.monotonic() - t_cut)))
        b.link(True)
        st = db.wait("B fenced and idle", lambda d: d.get("state") == "idle", timeout=60)
        log("B: %s" % st.get("state_reason"))
        expect("fenced" in st.get("state_reason", ""), "B went idle without saying it was "
               "fenced: %s" % st.get("state_reason"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "B" in net.vip_holders():
            time.sleep(0.05)
        expect(net.vip_holders() == ["A"], "service address holders after the fence: %s "
               "(want A alone)" % net.vip_holders())
        old = netns.probe_redis(c, b.ip)
        expect(old != "+PONG", "B still answers clients after it was fenced: %s" % old)
        progress(200, "after the fence")

        with open(stop, "w"):
            pass
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("whole run: %s; switchover after the partition: %s" % (
            line, "%.1f ms" % (1000 * jepsen_client.switchover(rep, t_cut))
            if jepsen_client.switchover(rep, t_cut) is not None else "not seen"))
        expect(rep["lost"] == 0, "acknowledged writes were lost: %s; first lost: %s" %
               (line, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s, read-back: %s)" %
               (line, rep["stopped"], rep["readback_error"]))


if __name__ == "__main__":
    run_main(main)
