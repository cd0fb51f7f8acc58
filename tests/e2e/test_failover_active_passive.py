#!/usr/bin/env python3
"""Active-passive (issue 12 part 3): node B keeps no running copy of the
service, only the newest checkpoint (and the one before it, the fallback)
and the journal after it; when node A
dies, B restores the checkpoint with CRIU, replays the journal's tail with
outputs suppressed and goes live.  No acknowledged write may be lost.

redis-server runs under `understudy run --mode active-passive` on node A
(the scheduled interval is set long, so the one checkpoint is the one this
test asks for).  The client on node C loads data (DEBUG POPULATE,
AP_KEYS keys of 1000 bytes, default 90909: ~100 MB), `understudy
checkpoint` ships the image to B, then a client streams writes; while it
does, node A dies (link down, SIGKILL of every process in it).  B must
restore, replay the tail and serve: acked / survived / lost with lost = 0,
DBSIZE >= the loaded keys + the acked writes, and the failover's breakdown
(restore ms, tail events, drain ms) printed.
Needs: root, network namespaces, CRIU, understudyd + `understudy
run/checkpoint/status`, redis-server, redis-cli."""
import json
import os
import time

import harness
import jepsen_client
import netns
from harness import expect, log, run_main

CRIU = "/opt/understudy/criu/bin/criu"
NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:checkpoint", CRIU]
KEYS = int(os.environ.get("AP_KEYS", "90909"))


def shadow_of(st):
    return (st or {}).get("status", st or {}).get("shadow", {})


def scheduled_checkpoint(cl, timeout=240):
    """Waits for B's log to report a scheduled checkpoint; returns its doc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(cl.log_path("understudyd"), "rb") as f:
            text = f.read().decode(errors="replace")
        if "scheduled checkpoint" in text:
            expect("scheduled checkpoint failed" not in text, "a scheduled checkpoint failed")
            root = os.path.join(cl.data_dir, "checkpoints")
            ident = os.readlink(os.path.join(root, "current"))
            return {"image_id": ident, "mark_seq": int(ident.split("-")[-1]),
                    "image_bytes": 0, "pause_ms": 0, "ship_ms": 0}
        time.sleep(0.2)
    harness.fail("no scheduled checkpoint within %d s" % timeout)


def main(kind="unplanned"):
    """kind 'unplanned': `understudy checkpoint`, node A dies mid-stream.
    kind 'planned': the checkpoint comes from the schedule
    (--checkpoint-interval 5s), `understudy failover` mid-stream."""
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, c = net.node("A"), net.node("C")
        interval = "3600s" if kind == "unplanned" else "5s"
        cl.mode_args = ["--mode", "active-passive", "--checkpoint-interval", interval]
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")) +
                         ["--enable-debug-command", "yes"])
        r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "DEBUG", "POPULATE",
                   str(KEYS), "key", "1000"], timeout=300)
        expect(r.rc == 0 and r.out.strip() == "OK", "DEBUG POPULATE failed", r)
        _, st = cl.status()
        sh = shadow_of(st)
        expect(int(sh.get("pid", 0) or 0) == 0,
               "active-passive: B runs a shadow before any failover: %s" % sh)
        if kind == "unplanned":
            r, ck = cl.checkpoint()
            expect(ck is not None, "understudy checkpoint --json printed no JSON", r)
        else:
            ck = scheduled_checkpoint(cl)
        if kind == "unplanned":
            log("checkpoint: mark seq %s, image %.1f MB, pause %.0f ms, ship %.0f ms" %
                (ck["mark_seq"], int(ck["image_bytes"]) / 1e6, ck["pause_ms"], ck["ship_ms"]))
        else:
            log("scheduled checkpoint current on B: %s (mark seq %d)" %
                (ck["image_id"], ck["mark_seq"]))

        count = int(os.environ.get("AP_WRITES", "6000"))
        stream = jepsen_client.Stream(c, net.vip, count=count, duration=60, io_timeout=0.1,
                                       rate=2000)
        if not stream.wait_progress(count // 2):
            rep, rc, err = stream.finish()
            harness.fail("the client stopped before %d acked writes (rc %s): %s" %
                         (count // 2, rc, err.decode(errors="replace")[-2000:]))
        t_event = time.monotonic()
        fo = None
        if kind == "unplanned":
            a.link(False)
            a.kill_all()
        else:
            _, fo = cl.failover(timeout=120)
        if os.environ.get("AP_DEBUG"):
            time.sleep(8)
            b = net.node("B")
            for cmd in (["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "PING"],):
                r = c.run(["timeout", "5"] + cmd, timeout=10)
                log("C: %s -> rc %s %r %r" % (cmd, r.rc, r.out, r.err))
            r = b.run(["ss", "-ltnp"], timeout=10)
            log("B ss: %s" % r.out)
            r = b.run(["sh", "-c", "for p in $(pgrep -f redis-server); do echo PID $p; "
                       "cat /proc/$p/status | grep -E 'State|NSpid'; for t in /proc/$p/task/*; do "
                       "echo $t $(cat $t/wchan) $(cat $t/stat | cut -d' ' -f3); "
                       "cat $t/syscall; done; ls -l /proc/$p/fd; done"], timeout=10)
            log("B procs: %s" % r.out)
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        _, st = cl.status(check=False)
        status = (st or {}).get("status", st or {})
        log("active-passive %s failover: %s" % (kind, line))
        if fo is not None:
            log("understudy failover --json: %s" % json.dumps(fo)[:1500])
        log("failover: %s" % status.get("last_failover", ""))
        log("breakdown: %s" % json.dumps(status.get("last_failover_breakdown", {})))
        switch = jepsen_client.switchover(rep, t_event)
        if switch is not None:
            log("switchover (kill -> first reply from B): %.1f ms" % (1000 * switch))
        expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
               (line, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s, read-back: %s)" %
               (line, rep["stopped"], rep["readback_error"]))
        with open(cl.log_path("understudyd"), "rb") as f:
            dlog = f.read().decode(errors="replace")
        for l in dlog.splitlines():
            if "restore" in l:
                log("B: " + l.strip()[:600])
        expect("cannot restore" not in dlog and "from checkpoint %s" % ck["image_id"] in dlog,
               "B did not restore checkpoint %s (see the lines above)" % ck["image_id"])
        expect("from seq %d)" % (int(ck["mark_seq"]) + 1) in status.get("last_failover", ""),
               "the failover did not replay from the mark + 1 (%d): %s" %
               (int(ck["mark_seq"]) + 1, status.get("last_failover")))
        r = c.run(["redis-cli", "-h", net.vip, "-p", netns.REDIS_PORT, "DBSIZE"], timeout=30)
        expect(r.rc == 0 and int(r.out.strip()) >= KEYS + rep["acked"],
               "B's redis has %s keys after the failover, not >= %d" %
               (r.out.strip(), KEYS + rep["acked"]))
        holders = net.vip_holders()
        expect("B" in holders, "service address not on node B (holders: %s)" % holders)


if __name__ == "__main__":
    run_main(main)
