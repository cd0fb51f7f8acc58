#!/usr/bin/env python3
"""Process trees as Debian's tools make them (issue 13): a bash pipeline
and Python multiprocessing with the fork start method, each recorded and
replayed 10 rounds: the replay is clean (exit 0, so no signal ran late:
bash's SIGCHLD handlers run where its sigprocmask unblocks them) and prints
the recorded output byte for byte.

    pipeline         bash -c: a loop through `sort | head`, $RANDOM through
                     tr, /dev/urandom through od, ls | wc, a command
                     substitution reading /proc's uuid
    multiprocessing  a Pool(3) of forked workers mapping over 12 items out of
                     order (imap_unordered), each returning its pid, a random
                     number and the time
Needs: the understudy CLI, bash, python3.

    test_record_replay_trees.py CASE [ROUNDS]    pipeline | multiprocessing"""
import sys

from harness import Trace, expect, fail, log, run_main

NEEDS = ["bash", sys.executable]
CASES = ["pipeline", "multiprocessing"]
ROUNDS = 10

PIPELINE = ('for i in 1 2 3; do date +%N; done | sort | head -n 2; '
            'echo $RANDOM | tr 0-9 a-j; head -c 8 /dev/urandom | od -An -tx1 | tr -d " "; '
            'ls /etc | wc -l; x=$(cat /proc/sys/kernel/random/uuid | cut -c1-8); echo "uuid $x"')

POOL = r"""
import multiprocessing as mp, os, random, time
def work(x):
    return (x, os.getpid(), random.random(), time.time() % 1000)
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(3) as pool:
        for r in pool.imap_unordered(work, range(12)):
            print(r)
    print("urandom", os.urandom(8).hex())
"""


def one_round(case, k):
    with Trace("tree-%s-%d" % (case, k)) as t:
        if case == "pipeline":
            argv, lines = ["bash", "-c", PIPELINE], 6
        else:
            argv, lines = [sys.executable, "-c", POOL], 13
        rec = t.record(argv)
        expect(rec.rc == 0 and not rec.timed_out, "%s round %d: record exit %s" % (case, k, rec.rc),
               rec)
        got = len(rec.out.strip().splitlines())
        expect(got == lines, "%s round %d: recorded %d lines of output, expected %d"
               % (case, k, got, lines), rec)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0, "%s round %d: replay exit %s (expected 0: clean)" % (case, k, rep.rc),
               rep)
        expect(rep.stdout == rec.stdout, "%s round %d: replayed output differs\n--- recorded\n%s"
               % (case, k, rec.out), rep)
        return (rep.err.strip().splitlines() or [""])[-1]


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in CASES:
        fail("usage: test_record_replay_trees.py CASE [ROUNDS] (the cases: %s)" % ", ".join(CASES))
    case = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else ROUNDS
    last = ""
    for k in range(1, rounds + 1):
        last = one_round(case, k)
    log("ok %s: %d of %d rounds clean and identical; last: %s" % (case, rounds, rounds, last))


if __name__ == "__main__":
    run_main(main)
