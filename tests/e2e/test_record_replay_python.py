#!/usr/bin/env python3
"""python3 printing time, random, uuid4 and urandom replays its output
byte for byte.  Needs: the understudy CLI, python3."""
import sys

from harness import Trace, expect, log, run_main

NEEDS = [sys.executable]

SCRIPT = r"""
import os, random, time, uuid
print("time", time.time())
print("monotonic", time.monotonic())
print("random", random.random())
print("uuid4", uuid.uuid4())
print("urandom", os.urandom(8).hex())
print("pid", os.getpid())
"""


def main():
    with Trace("python") as t:
        rec = t.record([sys.executable, "-c", SCRIPT])
        expect(rec.rc == 0, "record exit %s" % rec.rc, rec)
        expect(b"uuid4" in rec.stdout, "the script printed nothing", rec)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0, "replay exit %s (expected 0)" % rep.rc, rep)
        expect(rep.stdout == rec.stdout,
               "replayed stdout differs\n--- recorded\n%s" % rec.out, rep)
        log(rec.out.strip())


if __name__ == "__main__":
    run_main(main)
