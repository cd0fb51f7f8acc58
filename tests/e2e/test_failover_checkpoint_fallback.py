#!/usr/bin/env python3
"""A newest checkpoint that cannot be restored is not the end of the
protection (issue 12 parts 3 and 6): the backup keeps the checkpoint before
it, with the journal from its mark, and a failover falls back to it.

redis-server runs under `understudy run --mode active-passive` on node A
(1 MiB segments; the scheduled interval is long, so the two checkpoints are
the ones this test asks for).  A client on node C writes all the time.
Checkpoint 1, more writes, checkpoint 2: B must keep checkpoint 1 as
`previous` and prune its replica only behind checkpoint 1's mark (so seq 1
is gone: the seq-1 fallback is no longer possible).  Then one byte of
checkpoint 2's page image is flipped on B's disk (a bad disk sector, a bug
in shipping), and node A dies.  B's restore of checkpoint 2 fails its
manifest check; B must restore checkpoint 1 instead, replay from its mark
+ 1 and serve: acked / survived / lost with lost = 0.
Needs: root, network namespaces, CRIU, understudyd + `understudy
run/checkpoint/status`, redis-server, redis-cli."""
import os
import time

import jepsen_client
import netns
from harness import expect, log, run_main

CRIU = "/opt/understudy/criu/bin/criu"
NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:checkpoint", CRIU]


def status_of(cl):
    _, st = cl.status(check=False)
    return (st or {}).get("status", st or {})


def corrupt_largest(dirpath):
    """Flips one byte in the middle of the largest file of DIRPATH."""
    files = [os.path.join(dirpath, n) for n in os.listdir(dirpath)]
    files = [f for f in files if os.path.isfile(f)]
    big = max(files, key=os.path.getsize)
    size = os.path.getsize(big)
    fd = os.open(big, os.O_RDWR)
    try:
        b = os.pread(fd, 1, size // 2)
        os.pwrite(fd, bytes([b[0] ^ 0xFF]), size // 2)
        os.fsync(fd)
    finally:
        os.close(fd)
    return big, size


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, c = net.node("A"), net.node("C")
        cl.mode_args = ["--mode", "active-passive", "--checkpoint-interval", "3600s",
                        "--journal-segment-size", "1M"]
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        stop = os.path.join(net.tmpdir("client"), "stop")
        # Bounded: at most 60 000 writes in 120 s, ended by the stop file.
        stream = jepsen_client.Stream(c, net.vip, count=60000, duration=120, io_timeout=0.1,
                                      rate=1500, extra=["--stop-file", stop])

        progress = stream.require_progress

        progress(4000, "before checkpoint 1")
        r, ck1 = cl.checkpoint()
        expect(ck1 is not None, "understudy checkpoint --json printed no JSON", r)
        progress(3000, "between the checkpoints")
        r, ck2 = cl.checkpoint()
        expect(ck2 is not None, "understudy checkpoint --json printed no JSON", r)
        m1, m2 = int(ck1["mark_seq"]), int(ck2["mark_seq"])
        log("checkpoint 1 %s at mark %d, checkpoint 2 %s at mark %d" %
            (ck1["image_id"], m1, ck2["image_id"], m2))
        root = os.path.join(cl.data_dir, "checkpoints")
        expect(os.readlink(os.path.join(root, "current")) == ck2["image_id"],
               "B's current checkpoint is not %s: %s" % (ck2["image_id"], os.listdir(root)))
        expect(os.path.islink(os.path.join(root, "previous")) and
               os.readlink(os.path.join(root, "previous")) == ck1["image_id"],
               "B does not keep %s as its previous checkpoint: %s" % (ck1["image_id"],
                                                                      os.listdir(root)))
        # The replica is pruned behind checkpoint 1, never past it.
        deadline = time.monotonic() + 30
        rep_info = {}
        while time.monotonic() < deadline:
            rep_info = status_of(cl).get("replica", {})
            if int(rep_info.get("first_seq", 0) or 0) > 1:
                break
            time.sleep(0.2)
        first = int(rep_info.get("first_seq", 0) or 0)
        log("B's replica: first seq %d, pruned before %s" % (first,
                                                           rep_info.get("pruned_before_seq")))
        expect(first > 1, "B's replica was not pruned behind checkpoint 1 (first seq %d): %s" %
               (first, rep_info))
        expect(first <= m1, "B's replica was pruned past the previous checkpoint's mark %d "
               "(first seq %d): the fallback would have no journal" % (m1, first))
        expect(int(rep_info.get("pruned_before_seq", 0) or 0) <= m1,
               "B pruned before %s, past checkpoint 1's mark %d" %
               (rep_info.get("pruned_before_seq"), m1))

        big, size = corrupt_largest(os.path.join(root, ck2["image_id"]))
        log("flipped one byte of %s (%d bytes)" % (big, size))
        progress(1000, "after the corruption")
        t_event = time.monotonic()
        a.link(False)
        a.kill_all()
        progress(500, "after node A died")
        with open(stop, "w"):
            pass
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("failover with the newest checkpoint corrupt: %s" % line)
        switch = jepsen_client.switchover(rep, t_event)
        if switch is not None:
            log("switchover (kill -> first reply from B): %.1f ms" % (1000 * switch))
        status = status_of(cl)
        log("failover: %s" % status.get("last_failover", ""))
        with open(cl.log_path("understudyd"), "rb") as f:
            dlog = f.read().decode(errors="replace")
        for l in dlog.splitlines():
            if "restor" in l:
                log("B: " + l.strip()[:500])
        expect(rep["lost"] == 0, "acknowledged writes lost: %s; first lost: %s" %
               (line, rep["lost_keys"]))
        expect(rep["ok"], "the client did not finish cleanly: %s (stopped: %s, read-back: %s)" %
               (line, rep["stopped"], rep["readback_error"]))
        expect("cannot restore the shadow from checkpoint" in dlog and
               "restoring the previous checkpoint %s" % ck1["image_id"] in dlog,
               "B did not say that checkpoint 2 failed and checkpoint 1 is next")
        expect("from checkpoint %s" % ck1["image_id"] in dlog,
               "B did not restore checkpoint 1 (%s)" % ck1["image_id"])
        expect("from seq %d)" % (m1 + 1) in status.get("last_failover", ""),
               "the failover did not replay from checkpoint 1's mark + 1 (%d): %s" %
               (m1 + 1, status.get("last_failover")))
        expect("B" in net.vip_holders(), "service address not on node B: %s" %
               net.vip_holders())


if __name__ == "__main__":
    run_main(main)
