#!/usr/bin/env python3
"""A program that crashes with SIGSEGV in parse_request() after reading a
bad request from a stdin pipe is recorded; `understudy replay --gdb
--gdb-cmd bt` (gdb batch) shows the crash in parse_request.
Needs: the understudy CLI, gdb."""
import signal

from harness import Trace, expect, log, program, run_main

NEEDS = ["gdb", "program:crash_parse"]


def main():
    with Trace("crash_parse") as t:
        rec = t.record([program("crash_parse")], input=b"BAD!GET /index.html\r\n")
        expect(rec.rc == 128 + signal.SIGSEGV,
               "record exit %s (expected %d: killed by SIGSEGV)" % (rec.rc, 128 + signal.SIGSEGV),
               rec)
        rep = t.replay(show_output=False, gdb_cmds=["bt"], timeout=120)
        expect(b"SIGSEGV" in rep.stdout + rep.stderr, "gdb did not see the SIGSEGV", rep)
        frames = [l for l in rep.out.splitlines() if l.startswith("#")]
        expect(frames and "parse_request" in frames[0],
               "the innermost frame of gdb's bt is not parse_request", rep)
        expect(any(" main " in f or " main(" in f for f in frames), "no main in the bt", rep)
        log("\n".join(frames))
        # Good input takes the other path, also under replay.
        rec = t.record([program("crash_parse")], input=b"GET /index.html\r\n")
        expect(rec.rc == 0, "record of good input exit %s" % rec.rc, rec)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0 and rep.stdout == rec.stdout, "replay of good input", rep)


if __name__ == "__main__":
    run_main(main)
