#!/usr/bin/env python3
"""Each tests/programs/*.c (one per call class) records and replays with the
recorded stdout.  Needs: the understudy CLI and the built programs.

    test_record_replay_programs.py NAME   one program (ctest runs one per program,
                                          e2e.test_record_replay_programs.NAME)
    test_record_replay_programs.py        every program, one report"""
import os
import sys

from harness import Trace, expect, fail, log, program, run_main

# name -> stdin fed while recording (None: /dev/null)
PROGRAMS = {
    "time_calls": None,
    "random_calls": None,
    "identity_calls": None,
    "tcp_echo": None,
    "pipe_fork": None,
    "local_files": None,
    "signals": None,
    "condvar_pc": None,
    "mutex_order": None,
    "threads_stdio": None,
    "racy_handoff": None,  # racy shared memory: needs the run-to-next-call handoff
    "stdin_transform": b"the quick brown fox\n" * 50,
    "transfer_calls": None,
    "fork_pool": None,  # fork-order and completion-order dependent worker pool, 20 rounds
    "siginfo_calls": None,
    "fd_passing": None,  # SCM_RIGHTS / SCM_CREDENTIALS between a parent and its child
    "signal_waits_more": None,  # pselect, epoll_pwait, sigtimedwait (its siginfo) replayed
    "tsc_calls": None,  # rdtsc / rdtscp trapped and replayed (hlt stands in: TSC_ENV)
    "signal_points": None,  # timers in a loop making no call: handlers at their points, 20 rounds
    "fd_race": None,  # 4 threads opening, dup-ing and closing at once: the same numbers, 10 rounds
    "sem_order": None,  # sem_trywait / sem_timedwait / sem_wait results and takers, 10 rounds
    "timed_sync": None,  # timed and clock variants of mutex, rwlock, condvar, semaphore waits, 10 rounds
    "signal_waits": None,  # handlers run inside sigsuspend / ppoll / a blocking read  # si_pid, si_code, si_value, si_status replayed as recorded  # copy_file_range, sendfile, splice, tee, sendmmsg, recvmmsg
}

# tsc_calls runs with `hlt` standing for rdtsc (interposer/tsc.cc): this
# way it runs whether or not the VM honours CR4.TSD (some ignore it; the trap
# itself is opt-in, UNDERSTUDY_TSC_TRAP=1, docs/record-replay.md).
TSC_ENV = {"UNDERSTUDY_TEST_TSC_HLT": "1"}

NEEDS = ["program:" + name for name in PROGRAMS]
CASES = list(PROGRAMS)  # one ctest per program (harness.describe)


def record_and_replay(name, stdin, check_journal=None):
    """Record NAME, replay it with --show-output; return the recorded stdout.
    check_journal(trace), if given, looks at the journal between the two."""
    with Trace(name) as t:
        argv = [program(name)]
        if name == "fork_pool":
            argv.append("4")
        if name in ("local_files", "transfer_calls"):
            argv.append(t.tmp(""))
        env = dict(os.environ, **TSC_ENV) if name == "tsc_calls" else None
        rec = t.record(argv, input=stdin, env=env)
        expect(rec.rc == 0 and not rec.timed_out, "%s: record exit %s" % (name, rec.rc), rec)
        expect(rec.stdout, "%s: recorded no output" % name, rec)
        if check_journal:
            check_journal(t)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0, "%s: replay exit %s (expected 0)" % (name, rep.rc), rep)
        expect(rep.stdout == rec.stdout,
               "%s: replayed stdout differs from the recorded stdout\n--- recorded\n%s"
               % (name, rec.out), rep)
        log("ok %s: %s" % (name, rec.out.strip().splitlines()[-1]))
        return rec.out


def check(name):
    """The test of one program; raises on failure."""
    if name == "fork_pool":
        # Each round records a new interleaving of 4 forked workers (pids,
        # urandom, clock, completion order) and must replay it exactly.
        for i in range(20):
            out = record_and_replay(name, None)
            expect(out.count("reaped ") == 4, "fork_pool: round %d reaped %d workers"
                   % (i, out.count("reaped ")))
        return
    if name == "signal_points":
        # Each round: where the timers landed in the loop differs; replay
        # (exit 0: clean, so no signal ran late) must print the same.
        def at_points(t):
            points = [e for e in t.show() if e.get("kind") == "signal" and "at_point" in e]
            expect(len(points) >= 7, "signal_points: %d signals recorded at a point, expected "
                   ">= 7 (3 timers, 4 ticks)" % len(points))
        for i in range(20):
            record_and_replay(name, None, at_points)
        return
    if name in ("fd_race", "sem_order", "timed_sync"):
        # Each round a new interleaving: which numbers the threads got, which
        # consumer took which unit; each must replay exactly.
        for i in range(10):
            record_and_replay(name, None)
        return
    if name != "mutex_order":
        record_and_replay(name, PROGRAMS[name])
        return
    # Order-dependent result: two recordings usually disagree, each replays
    # to its own hash.
    first = record_and_replay("mutex_order", None)
    second = record_and_replay("mutex_order", None)
    log("mutex_order hashes: %s | %s (%s)" % (first.split()[-1], second.split()[-1],
        "different" if first != second else "same this time; not an error"))


def main():
    names = sys.argv[1:]
    for name in names:
        if name not in PROGRAMS:
            fail("no program %r here (the programs: %s)" % (name, ", ".join(PROGRAMS)))
    if len(names) == 1:
        check(names[0])
        return
    failures = []
    for name in names or PROGRAMS:
        try:
            check(name)
        except Exception as e:  # keep going: one report for every program
            log("FAIL %s: %s" % (name, e))
            failures.append(name)
    expect(not failures, "programs failing: %s" % ", ".join(failures))


if __name__ == "__main__":
    run_main(main)
