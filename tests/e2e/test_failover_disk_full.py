#!/usr/bin/env python3
"""Write errors at the backup: its replica disk fills up.

understudyd on node B keeps its --data on an 8 MiB tmpfs mounted by this test
(unmounted in cleanup, also on failure), filled up to about 1 MiB free;
redis-server under `understudy run` on node A, a client on node C writing.
The replica's writes soon fail with ENOSPC.

Checks, while the disk is full: an alarm on both nodes (B's status alarms and
replica.persist_error; A's run log); B's status says why the primary is
stalled (primary.stalled = "backup cannot persist: ...No space left...");
the stall policy holds (the client gets no acknowledgement meanwhile and
loses nothing); A's reconnects back off (at most 8 in 6 s, where a retry per
heartbeat would be 60), each backoff step logged once.  Then the space is
freed: the stream resumes and the client finishes with lost == 0."""
import os
import subprocess
import tempfile
import time

import jepsen_client
import netns
from harness import expect, fail, log, run, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "mount", "umount"]

WINDOW_S = 6.0
MAX_RECONNECTS = 8


def mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def main():
    mnt = tempfile.mkdtemp(prefix="understudy-diskfull-")
    try:
        r = run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mnt], timeout=15)
        expect(r.rc == 0, "cannot mount a tmpfs on %s" % mnt, r)
        data = os.path.join(mnt, "data")
        filler = os.path.join(mnt, "filler")
        with netns.Net() as net, netns.Cluster(net, data_dir=data) as cl:
            c = net.node("C")
            cl.start_backup()
            cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
            # Leave about 1 MiB: a few thousand requests' worth of journal.
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, free - (1 << 20)))
            log("tmpfs %s: %d KiB free after the filler" %
                (mnt, os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize >> 10))
            stream = jepsen_client.Stream(c, net.vip, count=8000, duration=90, io_timeout=30.0,
                                          max_outage=60.0, rate=2000)

            # The replica's disk fills up: alarms on B, a reason in status.
            deadline = time.monotonic() + 60
            doc = None
            while time.monotonic() < deadline:
                _, doc = cl.status(check=False)
                if doc and doc.get("primary", {}).get("stalled"):
                    break
                time.sleep(0.1)
            else:
                fail("status never said why the primary stalls (last: %s)" % doc)
            stalled = doc["primary"]["stalled"]
            log("B status: primary stalled: %s" % stalled)
            expect(stalled.startswith("backup cannot persist: ") and
                   "No space left" in stalled, "unexpected stall reason %r" % stalled)
            expect("No space left" in doc.get("replica", {}).get("persist_error", ""),
                   "replica.persist_error does not say why: %s" % doc.get("replica"))
            expect(any("cannot persist" in a for a in doc.get("alarms", [])),
                   "no alarm on B: %s" % doc.get("alarms"))

            # The primary backs off.
            acked0 = stream.progress
            r0 = int(doc["primary"].get("reconnects", 0))
            time.sleep(WINDOW_S)
            _, doc = cl.status()
            r1 = int(doc["primary"].get("reconnects", 0))
            log("A reconnected %d times in %.0f s while B could not persist" %
                (r1 - r0, WINDOW_S))
            expect(r1 - r0 <= MAX_RECONNECTS, "A reconnected %d times in %.0f s: no backoff" %
                   (r1 - r0, WINDOW_S))
            expect(stream.progress - acked0 <= 1, "writes were acknowledged (%d -> %d) while "
                   "the backup could not persist: the stall policy did not hold" %
                   (acked0, stream.progress))
            with open(cl.log_path("run"), "rb") as f:
                rlog = f.read().decode(errors="replace")
            alarm = [l for l in rlog.splitlines() if "ALARM" in l and "cannot persist" in l]
            expect(alarm, "A's run log has no alarm about the backup:\n" + rlog[-3000:])
            log("A: %s" % alarm[0].strip()[:240])
            steps = [l for l in rlog.splitlines() if "retrying in" in l]
            expect(steps and len(steps) == len(set(s.split("retrying in")[1] for s in steps)),
                   "backoff steps are not logged once each:\n%s" % "\n".join(steps))
            log("A's backoff steps: %s" %
                ", ".join(s.split("retrying in")[1].strip() for s in steps))

            # Space again: the stream resumes.
            os.unlink(filler)
            t_free = time.monotonic()
            rep, rc, err = stream.finish()
            expect(rep is not None, "the client printed no report (exit %s): %s" %
                   (rc, err.decode(errors="replace")[-2000:]))
            line = jepsen_client.jepsen_line(rep)
            log("disk full, then freed: %s (resumed and finished %.1f s after the space was "
                "freed)" % (line, time.monotonic() - t_free))
            expect(rep["lost"] == 0, "acknowledged writes lost: %s" % line)
            expect(rep["ok"], "the client did not finish: %s (stopped: %s)" %
                   (line, rep["stopped"]))
            _, doc = cl.status()
            expect(not doc["primary"].get("stalled") and
                   not doc.get("replica", {}).get("persist_error"),
                   "status still reports the persist error after recovery: %s" % doc["primary"])
    finally:
        if mounted(mnt):
            subprocess.run(["umount", "-l", mnt], timeout=15)
        os.rmdir(mnt)


if __name__ == "__main__":
    run_main(main)
