#!/usr/bin/env python3
"""The ptrace backend on binaries the preload interposer cannot serve (issue
14): a `gcc -static` C program that prints time, /dev/urandom and getrandom
bytes, and Debian's static busybox.  Recorded with the backend chosen
automatically (the record says so), replayed identically -- and the preload
backend forced on the static binary is never called clean.

    test_ptrace_static.py CASE    static_c | busybox | preload_not_clean | tampered | instead | trees | shared

trees: bash command substitution, a pipeline with a sort that spills to
temporary files, Python multiprocessing (fork, three
Processes, a Queue) and a multiprocessing.Pool of three, five recordings
each: every replay prints what its recording printed.

shared: three forked children of a static program take tickets from a
counter in a shared anonymous mapping with atomic adds, a getpid between two
takes, and print which they got -- decided by how the processes ran against
each other, through memory, with no call.  Every replay must print the same
(with a turn per process instead of one for the whole tree, replays
differed).

tampered: one bit of the journaled getrandom bytes flipped (frame checksum
fixed, so only the replay can tell) -- the ptrace replay must report the
divergence in the preload replayer's words, not "no divergence".

instead: a static program doing I/O on non-blocking pipes and loopback TCP
sockets, epoll_wait, an EPIPE with its SIGPIPE and a close the peer must see
as EOF -- the calls the tracer executes in the program's stead
(ptrace/instead.h).  The record must say it executed some, the program must
see what it sees natively (EOF after the close, one SIGPIPE), and every
replay must reproduce the recorded output."""
import os
import re
import subprocess
import sys
import tempfile
import time

from harness import Trace, expect, fail, flip_journal_byte, log, run_main

NEEDS = ["gcc", "/bin/busybox", "bash"]
CASES = ["static_c", "busybox", "preload_not_clean", "tampered", "instead", "trees", "shared"]

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ptrace_src")
ROUNDS = 20          # record + replay rounds of the static C program
ROUND_BUDGET = 240.0  # seconds for all of them: a bound, not a speed check


INSTEAD_ROUNDS = 10


def build_static(tmp, name="static_rand"):
    exe = os.path.join(tmp, name)
    r = subprocess.run(["gcc", "-static", "-O1", "-o", exe, os.path.join(SRC, name + ".c")],
                       capture_output=True, timeout=120)
    expect(r.returncode == 0, "gcc -static failed: %s" % r.stderr.decode(errors="replace"))
    return exe


def round_trip(name, argv, expect_backend="ptrace"):
    with Trace(name) as t:
        rec = t.record(argv)
        expect(rec.rc == 0 and not rec.timed_out, "%s: record exit %s" % (name, rec.rc), rec)
        expect("backend %s:" % expect_backend in rec.err,
               "%s: record did not say it chose the %s backend" % (name, expect_backend), rec)
        expect(rec.stdout, "%s: recorded no output" % name, rec)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0, "%s: replay exit %s (expected 0)" % (name, rep.rc), rep)
        expect("no divergence" in rep.err, "%s: replay did not report a clean run" % name, rep)
        expect(rep.stdout == rec.stdout,
               "%s: replayed stdout differs\n--- recorded\n%s" % (name, rec.out), rep)
        return rec.out


def static_c():
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-") as tmp:
        exe = build_static(tmp)
        outs = set()
        t0 = time.monotonic()
        for i in range(ROUNDS):
            if time.monotonic() - t0 > ROUND_BUDGET:
                fail("static_c: %d rounds did not finish in %.0f s" % (ROUNDS, ROUND_BUDGET))
            outs.add(round_trip("static_c", [exe]))
        # The recordings differ among themselves (time, random bytes): each
        # replay reproduced its own.
        expect(len(outs) > 1, "static_c: %d recordings printed the same output" % ROUNDS)
        log("ok static_c: %d rounds identical on replay (%d distinct recordings)" %
            (ROUNDS, len(outs)))


def busybox():
    for argv in (["/bin/busybox", "date", "+%s"],
                 ["/bin/busybox", "sh", "-c", "echo $RANDOM $RANDOM $$"]):
        out = round_trip("busybox", argv)
        log("ok busybox %s: %s" % (" ".join(argv[1:]), out.strip()))


def preload_not_clean():
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-") as tmp:
        exe = build_static(tmp)
        with Trace("preload_not_clean") as t:
            rec = t.record([exe], extra=["--backend", "preload"])
            expect(rec.rc == 0, "preload record exit %s" % rec.rc, rec)
            expect("WARNING" in rec.err and "--backend ptrace" in rec.err,
                   "record with the preload backend did not warn that nothing was recorded", rec)
            rep = t.replay(show_output=True)
            expect(rep.rc == 2, "replay of an empty preload journal exit %s (expected 2)" % rep.rc,
                   rep)
            expect("cannot be called clean" in rep.err, "replay did not say why", rep)
            log("ok preload_not_clean: %s" % rep.err.strip().splitlines()[-1])


def tampered():
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-") as tmp:
        exe = build_static(tmp)
        with Trace("tampered") as t:
            rec = t.record([exe])
            expect(rec.rc == 0, "record exit %s" % rec.rc, rec)
            line = [l for l in rec.out.splitlines() if l.startswith("getrandom ")]
            expect(len(line) == 1, "no getrandom line in the output", rec)
            seq = flip_journal_byte(t.dir, bytes.fromhex(line[0].split()[1]), index=3)
            rep = t.replay(show_output=False)
            expect(rep.rc == 2, "replay of a tampered journal exit %s (expected 2)" % rep.rc, rep)
            expect("output differs: write(fd 1)" in rep.err,
                   "the divergence is not the output check's", rep)
            log("ok tampered (event %s flipped): %s" % (seq, rep.err.strip().splitlines()[-1]))


def instead():
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-") as tmp:
        exe = build_static(tmp, "static_io")
        outs = set()
        done = []
        t0 = time.monotonic()
        for i in range(INSTEAD_ROUNDS):
            if time.monotonic() - t0 > ROUND_BUDGET:
                fail("instead: %d rounds did not finish in %.0f s" % (INSTEAD_ROUNDS, ROUND_BUDGET))
            # Odd rounds without the in-process agent: every such call is
            # then executed by the tracer; even rounds with it, where most
            # are recorded by the agent (docs/ptrace.md "The agent").
            agent = i % 2 == 0
            env = dict(os.environ, UNDERSTUDY_PTRACE_AGENT="1" if agent else "0")
            with Trace("instead") as t:
                rec = t.record([exe], env=env)
                expect(rec.rc == 0 and not rec.timed_out, "instead: record exit %s" % rec.rc, rec)
                m = re.search(r"\((\d+) traced calls, (\d+) executed by the tracer, (\d+) recorded "
                              r"in the program by the agent\)", rec.err)
                expect(m is not None and int(m.group(2)) > 0,
                       "instead: the record executed no call in the program's stead", rec)
                expect(m is not None and (int(m.group(3)) > 0) == agent,
                       "instead: %s the agent, the agent recorded %s calls" %
                       ("with" if agent else "without", m.group(3) if m else "?"), rec)
                done.append(int(m.group(2)))
                expect("after close epoll 2001 read 0" in rec.out,
                       "instead: the program did not see EOF after its peer closed (the tracer's "
                       "duplicate kept the socket open?)", rec)
                expect("Broken pipe sigpipes 1" in rec.out,
                       "instead: the EPIPE write did not raise exactly one SIGPIPE", rec)
                rep = t.replay(show_output=True)
                expect(rep.rc == 0 and "no divergence" in rep.err,
                       "instead: replay exit %s, not clean" % rep.rc, rep)
                expect(rep.stdout == rec.stdout,
                       "instead: replayed stdout differs\n--- recorded\n%s" % rec.out, rep)
                outs.add(rec.out)
        expect(len(outs) > 1, "instead: %d recordings printed the same output" % INSTEAD_ROUNDS)
        log("ok instead: %d rounds identical on replay (%d distinct recordings; %d-%d calls "
            "executed by the tracer per recording)" % (INSTEAD_ROUNDS, len(outs), min(done),
                                                        max(done)))


TREES_BASH = ("for i in 1 2 3 4 5 6; do x=$(echo $RANDOM | sort); y=$(date +%N); "
              "echo \"$i $x $y\"; done")
# A pipeline through a full pipe (the writer sleeps with the turn; its
# reader must get it) and a sort that spills to temporary files it reads
# back and removes (the replay must not look for them on disk).
TREES_PIPE = ("head -c 3000000 /dev/zero | wc -c; seq 1 100000 | sort -S 64K -n | tail -1; "
              "echo $RANDOM")
TREES_PY = """
import multiprocessing as mp, os, time
def work(q, i):
    q.put((i, os.getpid(), time.time_ns() % 1000000, os.urandom(4).hex()))
if __name__ == "__main__":
    mp.set_start_method("fork")
    q = mp.Queue()
    ps = [mp.Process(target=work, args=(q, i)) for i in range(3)]
    for p in ps: p.start()
    got = sorted(q.get(timeout=30) for _ in ps)
    for p in ps: p.join()
    print(got, [p.exitcode for p in ps])
"""
# A worker pool: its workers take the task queue's lock, a semaphore in
# memory the processes share, by atomics before any call.
TREES_POOL = """
import multiprocessing as mp, os
def f(x): return (x * x + os.urandom(1)[0], os.getpid())
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(3) as p:
        r = p.map(f, range(40), chunksize=2)
    print(sum(v for v, _ in r), [pid for _, pid in r])
"""


def trees():
    for name, argv in (("bash", ["bash", "-c", TREES_BASH]),
                       ("pipeline", ["bash", "-c", TREES_PIPE]),
                       ("multiprocessing", [sys.executable, "-c", TREES_PY]),
                       ("pool", [sys.executable, "-c", TREES_POOL])):
        outs = set()
        for i in range(5):
            with Trace("ptrace_trees") as t:
                rec = t.record(argv, extra=["--backend", "ptrace"], timeout=120)
                expect(rec.rc == 0 and not rec.timed_out, "trees %s: record exit %s" % (name, rec.rc), rec)
                rep = t.replay(show_output=True, timeout=120)
                expect(rep.rc == 0 and "no divergence" in rep.err,
                       "trees %s: replay %d not clean (exit %s)" % (name, i + 1, rep.rc), rep)
                expect(rep.stdout == rec.stdout, "trees %s: replay %d printed another output\n"
                       "--- recorded\n%s" % (name, i + 1, rec.out), rep)
                outs.add(rec.out)
        expect(len(outs) > 1, "trees %s: 5 recordings printed the same output" % name)
        log("ok trees %s: 5 rounds identical on replay (%d distinct recordings)" % (name, len(outs)))


SHARED_ROUNDS = 10


def shared():
    with tempfile.TemporaryDirectory(prefix="understudy-e2e-shared-") as tmp:
        exe = build_static(tmp, "shared_race")
        outs = set()
        for i in range(SHARED_ROUNDS):
            with Trace("ptrace_shared") as t:
                rec = t.record([exe], timeout=120)
                expect(rec.rc == 0 and not rec.timed_out, "shared: record exit %s" % rec.rc, rec)
                expect("tickets 900 " in rec.out, "shared: the program did not take 900 tickets", rec)
                rep = t.replay(show_output=True, timeout=120)
                expect(rep.rc == 0 and "no divergence" in rep.err,
                       "shared: replay %d not clean (exit %s)" % (i + 1, rep.rc), rep)
                expect(rep.stdout == rec.stdout, "shared: replay %d printed other tickets\n"
                       "--- recorded\n%s" % (i + 1, rec.out), rep)
                outs.add(rec.out)
        expect(len(outs) > 1, "shared: %d recordings printed the same tickets" % SHARED_ROUNDS)
        log("ok shared: %d rounds identical on replay (%d distinct recordings)" %
            (SHARED_ROUNDS, len(outs)))


def main():
    cases = {"static_c": static_c, "busybox": busybox, "preload_not_clean": preload_not_clean,
             "tampered": tampered, "instead": instead, "trees": trees,
             "shared": shared}
    names = sys.argv[1:] or list(cases)
    for n in names:
        if n not in cases:
            fail("no case %r (cases: %s)" % (n, ", ".join(cases)))
    for n in names:
        cases[n]()


if __name__ == "__main__":
    run_main(main)
