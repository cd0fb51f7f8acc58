#!/usr/bin/env python3
"""A signal sent to the recorder reaches the recorded program exactly once,
whether it is sent to the recorder's pid (kill) or to its process group
(killpg, what a shell's job control or a supervisor does): a Python program
counts SIGINTs in a KeyboardInterrupt-style handler, then reports the count.
Needs: the understudy CLI, python3.

    test_record_signal_once.py CASE    pid | group (one ctest each)"""
import os
import signal
import sys
import time

from harness import Trace, expect, fail, log, run_main

NEEDS = [sys.executable]
CASES = ["pid", "group"]

PROGRAM = r"""
import signal, sys, time
n = 0
def on_int(signo, frame):
    global n
    n += 1
signal.signal(signal.SIGINT, on_int)
print("ready", flush=True)
deadline = time.monotonic() + 60
while n == 0 and time.monotonic() < deadline:
    time.sleep(0.01)
# A window for a duplicate to arrive (it came within milliseconds when it did).
end = time.monotonic() + 1.5
while time.monotonic() < end:
    time.sleep(0.01)
print("interrupts %d" % n, flush=True)
"""


def check(case):
    with Trace("signal-once-" + case) as t:
        p = t.record_start([sys.executable, "-c", PROGRAM])
        line = p.stdout.readline()
        expect(line.strip() == b"ready", "the program did not start (got %r)" % line)
        if case == "pid":
            os.kill(p.pid, signal.SIGINT)
        elif case == "group":
            os.killpg(p.pid, signal.SIGINT)  # start() made the recorder a group leader
        else:
            fail("no case %r" % case)
        rec = t.record_wait(timeout=60)
        out = line + rec.stdout
        expect(b"interrupts 1" in out, "%s: the program saw %s (expected 1 interrupt)"
               % (case, out.decode(errors="replace").strip().splitlines()[-1]), rec)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0, "%s: replay exit %s" % (case, rep.rc), rep)
        expect(b"interrupts 1" in rep.stdout, "%s: the replay saw another count" % case, rep)
        log("ok %s: one interrupt recorded and replayed" % case)


def main():
    for c in sys.argv[1:] or CASES:
        check(c)


if __name__ == "__main__":
    run_main(main)
