#!/usr/bin/env python3
"""memcached -t 4 recorded while four client threads, each on its own
connection, set and get a few thousand keys; SIGTERM to the recorder
(forwarded to memcached, as a service manager stops it) ends it with exit 0.  20 rounds: every client answer is right under record and
every replay ends with no divergence (each recording is a different
interleaving of memcached's worker threads: the clients race).

Not the protocol's `shutdown` command: the worker thread that reads it
raises SIGINT in itself, whose handler sets `stop_main_loop`, a plain
global the main thread polls between event-loop rounds with no lock and no
system call -- a data race replay does not reproduce (it diverged at the
main thread's exit in 2 of ~35 rounds on a loaded machine; docs/
record-replay.md, Limits).
Needs: the understudy CLI, memcached (scripts/setup.sh installs it).

    test_record_replay_memcached.py [ROUNDS]     default 20"""
import os
import signal
import sys
import time

from harness import Trace, expect, fail, free_port, log, run_main, wait_port
import servers

NEEDS = ["memcached"]
ROUNDS = 20
OPS = 1000  # per client thread: 1000 sets, 1000 gets, ~60 cross-thread gets


def one_round(k, background=True):
    """One round; BACKGROUND False runs memcached without its LRU maintainer
    and crawler threads (servers.memcached_argv)."""
    port = free_port()
    with Trace("memcached-%d" % k) as t:
        t0 = time.monotonic()
        server = t.record_start(servers.memcached_argv(port, threads=4, background=background))
        if not wait_port(port, timeout=30, proc=server):
            rec = t.record_wait(timeout=10)
            fail("round %d: memcached under record never listened on %d\n%s" %
                 (k, port, rec.describe()))
        n, errors = servers.memcached_load(port, threads=4, ops=OPS, deadline_s=60)
        expect(not errors, "round %d: client errors under record: %s" % (k, "; ".join(errors[:5])))
        os.kill(server.pid, signal.SIGTERM)  # the recorder forwards it to memcached
        rec = t.record_wait(timeout=30)
        expect(rec.rc == 0 and not rec.timed_out,
               "round %d: record exit %s (expected 0 after SIGTERM)" % (k, rec.rc), rec)
        rec_s = time.monotonic() - t0
        rep = t.replay(show_output=False, timeout=120)
        expect(rep.rc == 0, "round %d: replay exit %s (expected 0, no divergence)" % (k, rep.rc),
               rep)
        last = (rep.err.strip().splitlines() or [""])[-1]
        log("round %d: %d client ops, record %.2f s; %s" % (k, n, rec_s, last))


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    for k in range(1, rounds + 1):
        one_round(k)
    log("%d of %d rounds: record and replay clean" % (rounds, rounds))


if __name__ == "__main__":
    run_main(main)
