#!/usr/bin/env python3
"""The kmod escape audit counts for the ptrace backend too (issue 14 part 4).

`understudy record --audit` of a static program: the eBPF audit counts
every watched call the program's tree makes in the kernel, the tracer
counts the traced calls it let run; equal counts mean nothing escaped the
seccomp filter.

    clean    static_rand (time, /dev/urandom, getrandom, getpid): the record
             says every call went through the tracer, the journal has no
             AUDIT event, the replay is clean
    escape   the same program with getrandom left out of the filter (test
             hook UNDERSTUDY_TEST_PTRACE_UNTRACE): the record raises an
             ESCAPE AUDIT ALARM naming getrandom and its count, the journal
             holds the AUDIT event, and the replay is never called clean
Needs: root, BPF, gcc (static libc)."""
import json
import os
import sys

from harness import Trace, expect, log, run, run_main, UNDERSTUDY
import test_ptrace_static

NEEDS = ["root", "bpf", "gcc"]
CASES = ["clean", "escape"]


def audit_events(t):
    r = run([UNDERSTUDY, "journal", "show", t.dir, "--json"], timeout=60)
    expect(r.rc == 0, "journal show failed", r)
    out = []
    for line in r.out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("kind") == "audit":
            out.append(doc)
    return out


def main(case):
    import tempfile
    with tempfile.TemporaryDirectory(prefix="understudy-ptrace-audit-") as tmp:
        exe = test_ptrace_static.build_static(tmp)
        env = dict(os.environ)
        if case == "escape":
            env["UNDERSTUDY_TEST_PTRACE_UNTRACE"] = "getrandom"
        with Trace("ptrace_audit_" + case) as t:
            rec = t.record([exe], extra=["--audit", "--json"], env=env)
            expect(rec.rc == 0, "record exit %s" % rec.rc, rec)
            doc = json.loads([l for l in rec.out.splitlines() if l.startswith("{")][-1])
            audit = doc.get("audit") or {}
            expect(audit.get("on") is True, "the audit did not run: %s" % audit, rec)
            events = audit_events(t)
            rep = t.replay(show_output=False)
            if case == "clean":
                expect("went through the tracer" in rec.err and audit["escaped"] == 0,
                       "the audit reported escapes for a fully traced program: %s" % audit, rec)
                expect(not events, "the journal holds AUDIT events: %s" % events)
                expect(rep.rc == 0 and "no divergence" in rep.err, "replay not clean", rep)
                log("ok clean: audit on, 0 escapes, replay clean")
            else:
                expect("ESCAPE AUDIT ALARM" in rec.err and "getrandom" in rec.err,
                       "no ESCAPE AUDIT ALARM naming getrandom", rec)
                n = audit.get("calls", {}).get("getrandom", 0)
                expect(n >= 1, "the --json audit does not count getrandom: %s" % audit, rec)
                expect(events, "the journal holds no AUDIT event")
                expect(rep.rc != 0 and "no divergence" not in rep.err,
                       "a journal with an escape was replayed as clean (exit %s)" % rep.rc, rep)
                log("ok escape: getrandom x%d flagged; replay exit %d: %s" %
                    (n, rep.rc, rep.err.strip().splitlines()[-1]))


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1] if len(sys.argv) > 1 else "clean"))
