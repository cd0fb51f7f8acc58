#!/usr/bin/env python3
"""Go binaries under the ptrace backend (issue 14), built at test time from
ptrace_src/gohttp.go (standard library only, GOCACHE/GOPATH in a temp dir,
no network): time.Now, math/rand seeded from time, crypto/rand bytes, then
an HTTP server on loopback and a bounded client (3 requests).  Both the
default (dynamic, cgo) build and CGO_ENABLED=0.

What is asserted (see docs/ptrace.md "Threads"):
  - record chooses the ptrace backend by itself and the program runs to
    exit 0 under it -- the preload backend used to crash it (SIGSEGV/SIGSYS);
    --backend preload on the Go binary is handed to ptrace, no crash;
  - every one of ROUNDS replays reports no divergence and reproduces the
    recorded stdout byte for byte (the runtime's threads -- sysmon, the
    netpoller, GC workers, the HTTP server's and client's goroutines -- run
    one at a time per process, in the journal's order: before turns, every
    replay diverged between events 35 and 125);
  - the recordings differ from each other (time, math/rand, crypto/rand,
    ports), so an identical replay is not the program being deterministic.

    test_ptrace_go.py CASE    default | nocgo"""
import os
import subprocess
import sys
import tempfile
import time

from harness import Trace, expect, fail, log, run_main

NEEDS = ["go"]
CASES = ["default", "nocgo"]
ROUNDS = int(os.environ.get("PTRACE_GO_ROUNDS", "10"))
ROUND_BUDGET = 600.0  # seconds for all rounds of one case: a bound, not a speed check
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ptrace_src", "gohttp.go")


def build(tmp, cgo):
    env = dict(os.environ, GOCACHE=os.path.join(tmp, "gocache"), GOPATH=os.path.join(tmp, "gopath"),
               GO111MODULE="off", GOFLAGS="", GOPROXY="off", CGO_ENABLED="1" if cgo else "0")
    exe = os.path.join(tmp, "gohttp")
    r = subprocess.run(["go", "build", "-o", exe, SRC], env=env, capture_output=True, timeout=300)
    expect(r.returncode == 0, "go build failed: %s" % r.stderr.decode(errors="replace"))
    return exe


def check(case):
    with tempfile.TemporaryDirectory(prefix="understudy-go-") as tmp:
        exe = build(tmp, cgo=(case == "default"))
        outs = set()
        t0 = time.monotonic()
        for i in range(ROUNDS):
            if time.monotonic() - t0 > ROUND_BUDGET:
                fail("%s: %d rounds did not finish in %.0f s" % (case, ROUNDS, ROUND_BUDGET))
            with Trace("go_" + case) as t:
                rec = t.record([exe], timeout=120)
                expect(rec.rc == 0 and not rec.timed_out, "record exit %s" % rec.rc, rec)
                expect("backend ptrace:" in rec.err and "Go binary" in rec.err,
                       "record did not choose the ptrace backend for a Go binary", rec)
                lines = rec.out.splitlines()
                expect(len(lines) == 6 and lines[-1].startswith("resp 200 hello /r2"),
                       "the Go program's output under record is not what it prints natively", rec)
                rep = t.replay(show_output=True, timeout=120)
                expect(rep.rc == 0 and not rep.timed_out,
                       "round %d: replay exit %s (expected 0, identical)" % (i + 1, rep.rc), rep)
                expect("no divergence" in rep.err, "round %d: replay not clean" % (i + 1), rep)
                expect(rep.stdout == rec.stdout,
                       "round %d: FALSE CLEAN: replay exit 0 but the output differs\n--- recorded\n%s"
                       % (i + 1, rec.out), rep)
                outs.add(rec.out)
        expect(len(outs) > 1, "%s: %d recordings printed the same output: time and randomness did "
               "not vary, the test proves nothing" % (case, ROUNDS))
        if case == "default":
            with Trace("go_preload_forced") as t:
                rec = t.record([exe], extra=["--backend", "preload"], timeout=120)
                expect(rec.rc == 0 and "recording it with the ptrace backend" in rec.err,
                       "--backend preload on a Go binary was not handed to ptrace", rec)
        log("ok %s: %d of %d rounds recorded under ptrace and replayed identically in %.0f s"
            % (case, ROUNDS, ROUNDS, time.monotonic() - t0))


def main():
    names = sys.argv[1:] or CASES
    for n in names:
        if n not in CASES:
            fail("no case %r (cases: %s)" % (n, ", ".join(CASES)))
    for n in names:
        check(n)


if __name__ == "__main__":
    run_main(main)
