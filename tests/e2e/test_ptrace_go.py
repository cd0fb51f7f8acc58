#!/usr/bin/env python3
"""Go binaries under the ptrace backend (issue 14), built at test time from
ptrace_src/gohttp.go (standard library only, GOCACHE/GOPATH in a temp dir,
no network): time.Now, math/rand seeded from time, crypto/rand bytes, then
an HTTP server on loopback and a bounded client (3 requests).  Both the
default (dynamic, cgo) build and CGO_ENABLED=0.

What is asserted (see docs/ptrace.md "Go"):
  - record chooses the ptrace backend by itself and the program runs to
    exit 0 under it -- the preload backend used to crash it (SIGSEGV/SIGSYS);
    --backend preload on the Go binary is handed to ptrace, no crash;
  - never a false clean: every replay either reports no divergence AND
    reproduces the recorded stdout, or exits 2 with a divergence report.
Replaying Go identically is NOT yet achieved (the runtime's threads
interact through memory and futexes the tracer does not order; see
docs/ptrace.md "What works"); the count of identical replays is logged.

    test_ptrace_go.py CASE    default | nocgo"""
import os
import subprocess
import sys
import tempfile

from harness import Trace, expect, fail, log, run_main

NEEDS = ["go"]
CASES = ["default", "nocgo"]
ROUNDS = 3
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
        identical = 0
        for i in range(ROUNDS):
            with Trace("go_" + case) as t:
                rec = t.record([exe], timeout=120)
                expect(rec.rc == 0 and not rec.timed_out, "record exit %s" % rec.rc, rec)
                expect("backend ptrace:" in rec.err and "Go binary" in rec.err,
                       "record did not choose the ptrace backend for a Go binary", rec)
                lines = rec.out.splitlines()
                expect(len(lines) == 6 and lines[-1].startswith("resp 200 hello /r2"),
                       "the Go program's output under record is not what it prints natively", rec)
                rep = t.replay(show_output=True, timeout=120)
                expect(rep.rc in (0, 2) and not rep.timed_out, "replay exit %s" % rep.rc, rep)
                if rep.rc == 0:
                    expect("no divergence" in rep.err and rep.stdout == rec.stdout,
                           "FALSE CLEAN: replay exit 0 but the output differs", rep)
                    identical += 1
                else:
                    expect("divergence" in rep.err, "replay exit 2 without a divergence report",
                           rep)
                    log("round %d: %s" % (i + 1, rep.err.strip().splitlines()[-1]))
        if case == "default":
            with Trace("go_preload_forced") as t:
                rec = t.record([exe], extra=["--backend", "preload"], timeout=120)
                expect(rec.rc == 0 and "recording it with the ptrace backend" in rec.err,
                       "--backend preload on a Go binary was not handed to ptrace", rec)
        log("ok %s: %d rounds recorded under ptrace; %d of %d replays identical, the others "
            "reported their divergence" % (case, ROUNDS, identical, ROUNDS))


def main():
    names = sys.argv[1:] or CASES
    for n in names:
        if n not in CASES:
            fail("no case %r (cases: %s)" % (n, ", ".join(CASES)))
    for n in names:
        check(n)


if __name__ == "__main__":
    run_main(main)
