#!/usr/bin/env python3
"""Process trees as Debian's tools make them (issue 13): a bash pipeline
and Python multiprocessing with the fork start method, each recorded and
replayed 10 rounds: the replay is clean (exit 0, so no signal ran late:
bash's SIGCHLD handlers run where its sigprocmask unblocks them) and prints
the recorded output byte for byte.

    pipeline         bash -c: a loop through `sort | head`, $RANDOM through
                     tr, /dev/urandom through od, ls | wc, a command
                     substitution reading /proc's uuid
    multiprocessing  12 forked multiprocessing.Process workers, each sleeping a
                     random while and sending its pid, a random number and the
                     time through a Pipe; the parent prints them as they come
                     (multiprocessing.connection.wait).  Not a Pool: its three
                     helper threads hand CPython's GIL to each other through
                     an atomic drop request polled between bytecodes, a
                     lock-free hand-off replay does not order (1 round in
                     about 30 diverged under load; docs/record-replay.md)
    shared_memory    tests/programs/shared_anon: three children append to a
                     log in shared anonymous memory under a process-shared
                     mutex and post a process-shared semaphore; record names
                     the mapping (its plain loads and stores are not ordered),
                     the replay prints the same log
Needs: the understudy CLI, bash, python3, the built programs.

    test_record_replay_trees.py CASE [ROUNDS]    pipeline | multiprocessing | shared_memory"""
import sys

from harness import Trace, expect, fail, log, program, run_main

NEEDS = ["bash", sys.executable, "program:shared_anon"]
CASES = ["pipeline", "multiprocessing", "shared_memory"]
ROUNDS = 10

PIPELINE = ('for i in 1 2 3; do date +%N; done | sort | head -n 2; '
            'echo $RANDOM | tr 0-9 a-j; head -c 8 /dev/urandom | od -An -tx1 | tr -d " "; '
            'ls /etc | wc -l; x=$(cat /proc/sys/kernel/random/uuid | cut -c1-8); echo "uuid $x"')

POOL = r"""
import multiprocessing as mp, os, random, time
from multiprocessing.connection import wait
def work(x, conn):
    time.sleep(random.random() / 100)
    conn.send((x, os.getpid(), random.random(), time.time() % 1000))
    conn.close()
if __name__ == "__main__":
    mp.set_start_method("fork")
    readers, procs = [], []
    for x in range(12):
        r, w = mp.Pipe(duplex=False)
        p = mp.Process(target=work, args=(x, w))
        p.start()
        w.close()
        readers.append(r)
        procs.append(p)
    while readers:
        for r in wait(readers):
            print(r.recv())
            readers.remove(r)
    for p in procs:
        p.join()
    print("urandom", os.urandom(8).hex())
"""


def one_round(case, k):
    with Trace("tree-%s-%d" % (case, k)) as t:
        if case == "pipeline":
            argv, lines = ["bash", "-c", PIPELINE], 6
        elif case == "multiprocessing":
            argv, lines = [sys.executable, "-c", POOL], 13
        else:
            argv, lines = [program("shared_anon")], 1
        rec = t.record(argv)
        expect(rec.rc == 0 and not rec.timed_out, "%s round %d: record exit %s" % (case, k, rec.rc),
               rec)
        if case == "shared_memory":
            expect("shared anonymous memory at 0x" in rec.err and "plain loads and stores are not" in rec.err,
                   "shared_memory round %d: record did not name the shared mapping" % k, rec)
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
