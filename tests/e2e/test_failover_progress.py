#!/usr/bin/env python3
"""`understudy failover` on a terminal prints each phase as it completes
(issue 15 part 8): redis under `understudy run` on node A, understudyd on B
(namespaces, netns.Cluster); `understudy failover` runs with stderr on a
pseudo-terminal this test owns and must print one "understudy failover:
PHASE done N ms" line per phase (fence, address, drain, go-live: the phases
StatusReply.failover_progress reports, polled while the request waits),
then on stdout the summary.  (Piped, no watcher runs: the other failover
tests run it with --json and read stdout only.)
Needs: root, network namespaces, understudyd + `understudy run/failover`,
redis-server, redis-cli."""
import os
import pty
import re
import select
import subprocess
import time

import harness
import netns
from harness import expect, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]

PHASE = re.compile(r"understudy failover: (fence|address|drain|go-live) +done +([\d.]+) ms")


def failover_on_pty(admin, timeout=90.0):
    master, slave = pty.openpty()
    p = subprocess.Popen([harness.UNDERSTUDY, "failover", "--admin", admin],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                         start_new_session=True)
    os.close(slave)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        elif p.poll() is not None:
            break
    out = p.stdout.read().decode(errors="replace")
    rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    os.close(master)
    return rc, got.decode(errors="replace"), out


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        # The shadow must be healthy before a failover can use it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, st = cl.status(check=False)
            if st and st.get("shadow", {}).get("healthy"):
                break
            time.sleep(0.1)
        rc, tty, out = failover_on_pty(cl.admin)
        expect(rc == 0, "failover on a terminal exited %d: %s %s" % (rc, tty, out))
        phases = [(m.group(1), float(m.group(2))) for m in PHASE.finditer(tty)]
        names = [n for n, _ in phases]
        expect(names[:1] == ["fence"] and names[-2:] == ["drain", "go-live"] and
               len(names) == len(set(names)),
               "the phases on the terminal are not fence .. drain, go-live once each: %r" % tty)
        expect("is now primary" in out, "no summary on stdout: %r" % out)
        log("phases as printed: %s" % ", ".join("%s %.1f ms" % p for p in phases))
        live = [l for l in tty.splitlines() if PHASE.search(l) and "seen after the reply" not in l]
        log("%d of %d phase(s) printed while the request waited" % (len(live), len(phases)))


if __name__ == "__main__":
    run_main(main)
