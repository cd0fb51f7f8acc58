#!/usr/bin/env python3
"""nginx from Debian, a master and its workers serving a directory of static
files, recorded under a bounded load (200 GETs from four threads, each
checked byte for byte, and one 404), then a graceful quit: SIGQUIT to the
recorder, which forwards it to the master as `nginx -s quit` would send it.
The master passes each new worker's channel to the older ones over a Unix
socket (SCM_RIGHTS), so the replay holds those descriptors at the recorded
numbers or diverges.  Each round: every answer right, the shutdown ends in
bounded time with exit 0 (never a hang), the replay ends with no
divergence.
Needs: the understudy CLI, nginx (scripts/setup.sh installs it).

    test_record_replay_nginx.py CASE [ROUNDS]
      workers2   master + 2 workers, 20 rounds
      workers1   master + 1 worker (the signal's sender, si_pid, is replayed
                 as recorded: nginx logs it), 20 rounds
      sendfile   master + 2 workers with `sendfile on` (file to socket in the
                 kernel: journaled as a file read and an output), 20 rounds"""
import os
import signal
import sys
import time

from harness import Trace, expect, fail, free_port, log, run_main, wait_port
import servers

NEEDS = ["root", "nginx"]  # root: nginx's master runs its workers as `user root`
CASES = ["workers2", "workers1", "sendfile"]
ROUNDS = 20
REQUESTS = 200
SHUTDOWN_S = 20  # a graceful quit of an idle nginx takes milliseconds


def one_round(workers, k, sendfile=False):
    port = free_port()
    with Trace("nginx-w%d%s-%d" % (workers, "-sendfile" if sendfile else "", k)) as t:
        root = t.tmp("site")
        os.makedirs(root)
        want = servers.nginx_site(root)
        conf = servers.nginx_conf(root, port, workers=workers, sendfile=sendfile)
        t0 = time.monotonic()
        server = t.record_start(servers.nginx_argv(root, conf))
        if not wait_port(port, timeout=30, proc=server) or \
                not servers.nginx_workers_ready(root, workers, proc=server):
            rec = t.record_wait(timeout=10)
            fail("round %d: nginx under record did not start %d workers on port %d\n%s" %
                 (k, workers, port, rec.describe()))
        n, errors = servers.nginx_load(port, want, requests=REQUESTS, threads=4)
        expect(not errors, "round %d: client errors under record: %s" % (k, "; ".join(errors[:5])))
        expect(n == REQUESTS, "round %d: %d of %d requests answered" % (k, n, REQUESTS))
        t_quit = time.monotonic()
        os.kill(server.pid, signal.SIGQUIT)  # the recorder forwards it to the master
        rec = t.record_wait(timeout=SHUTDOWN_S)
        if rec.timed_out:
            t.keep()
            fail("round %d: the graceful shutdown hung (no exit %d s after SIGQUIT)\n%s" %
                 (k, SHUTDOWN_S, rec.describe()))
        expect(rec.rc == 0, "round %d: record exit %s (expected 0 after SIGQUIT)" % (k, rec.rc),
               rec)
        quit_s = time.monotonic() - t_quit
        with open(os.path.join(root, "error.log"), "rb") as f:
            elog = f.read()
        expect(b"signal 3 (SIGQUIT) received from 1, shutting down" in elog,
               "round %d: the master did not log SIGQUIT from its sender (pid 1 in the "
               "recording's PID namespace, the recorder's init)" % k)
        rec_s = time.monotonic() - t0
        rep = t.replay(show_output=False, timeout=120)
        expect(rep.rc == 0, "round %d: replay exit %s (expected 0, no divergence)" % (k, rep.rc),
               rep)
        last = (rep.err.strip().splitlines() or [""])[-1]
        log("round %d: %d requests, quit in %.2f s, record %.2f s; %s" %
            (k, n, quit_s, rec_s, last))


def main():
    case = sys.argv[1] if len(sys.argv) > 1 else "workers2"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else ROUNDS
    workers = {"workers2": 2, "workers1": 1, "sendfile": 2}.get(case)
    if workers is None:
        fail("no case %r (cases: %s)" % (case, ", ".join(CASES)))
    for k in range(1, rounds + 1):
        one_round(workers, k, sendfile=case == "sendfile")
    log("%s: %d of %d rounds clean (record, graceful quit, replay)" % (case, rounds, rounds))


if __name__ == "__main__":
    run_main(main)
