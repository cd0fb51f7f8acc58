#!/usr/bin/env python3
"""memcached -t 4 under a four-thread bounded client, 20 rounds in the suite
(issue 13): each round records memcached while four client threads, each on
its own connection, make 1000 sets, 1000 gets and ~60 cross-thread gets
(every answer checked), SIGTERM to the recorder ends it with exit 0, and the
replay must end with no divergence.  Each recording is another interleaving
of memcached's worker threads.

memcached runs with `-o no_lru_maintainer,no_lru_crawler`: those two
background threads read `current_time`, which the main thread's clock tick
writes with no lock and no call, and sleep or take locks depending on what
they read -- a data race of memcached's that replay does not order
(docs/record-replay.md, Limits).  memcached_rounds.py (by hand) runs the
default configuration, background threads included.
Needs: the understudy CLI, memcached.

    test_record_replay_memcached.py [ROUNDS]     default 20"""
import sys

from harness import log, run_main
from memcached_rounds import one_round

NEEDS = ["memcached"]
ROUNDS = 20


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    for k in range(1, rounds + 1):
        one_round(k, background=False)
    log("%d of %d rounds: record and replay clean (memcached -t 4, LRU maintainer off)"
        % (rounds, rounds))


if __name__ == "__main__":
    run_main(main)
