#!/usr/bin/env python3
"""Local files, one rule (issue 13 part 5).  The default `--local-files
journal`: a replay never depends on what happened to the disk after the
recording -- tests/programs/local_rule makes a directory, changes into it,
writes and reads a file there, reads a read-only file the test prepared and
tries one that is absent, then removes what it made.  Before the replay the
test rewrites the read-only file (other bytes, another size), creates the
absent one and leaves the directory gone: the replay is clean with the
recorded output.  With `--local-files reexec` the same change is a
divergence that names the file.
Needs: the understudy CLI and the built programs.

    test_local_files_rule.py CASE    journal | reexec (one ctest each)"""
import os
import sys

from harness import Trace, expect, fail, log, program, run_main

NEEDS = ["program:local_rule"]
CASES = ["journal", "reexec"]


def prepare(t):
    work = t.tmp("work")
    os.makedirs(work)
    with open(os.path.join(work, "ro.txt"), "w") as f:
        for i in range(30):
            f.write("recorded line %d of ro.txt\n" % i)
    return work


def change_disk(work):
    """What a node's disk may look like by the time of the replay."""
    with open(os.path.join(work, "ro.txt"), "w") as f:
        f.write("rewritten since, and shorter\n")
    with open(os.path.join(work, "later.txt"), "w") as f:
        f.write("created after the recording\n")
    expect(not os.path.exists(os.path.join(work, "d")), "the program left d behind")


def check(case):
    with Trace("local-rule-" + case) as t:
        work = prepare(t)
        rec = t.record([program("local_rule"), work], local_files=case)
        expect(rec.rc == 0 and not rec.timed_out, "%s: record exit %s" % (case, rec.rc), rec)
        out = rec.stdout.decode()
        for want in ("mkdir d: 0", "chdir d: 0", "getcwd ends in /d: 1", "later.txt: No such file",
                     "rmdir d: 0", "ro.txt: fstat size 800"):
            expect(want in out, "%s: the recorded run did not print %r" % (case, want), rec)
        change_disk(work)
        rep = t.replay(show_output=True)
        if case == "journal":
            expect(rep.rc == 0, "journal: replay exit %s after the disk changed (expected 0: "
                   "nothing of the disk after the recording may matter)" % rep.rc, rep)
            expect(rep.stdout == rec.stdout, "journal: replayed output differs from the recorded "
                   "one:\n%s\nvs\n%s" % (rep.stdout.decode(), out), rep)
            expect(not os.path.exists(os.path.join(work, "d")),
                   "journal: the replay made d on the disk (mkdir must be emulated)", rep)
            log("ok journal: d gone, ro.txt rewritten, later.txt created; replay clean, "
                "output identical (%d lines)" % len(out.splitlines()))
            return
        text = (rep.stdout + rep.stderr).decode(errors="replace")
        expect(rep.rc != 0, "reexec: replay exit 0 although ro.txt changed", rep)
        expect("diverge" in text.lower() and "ro.txt" in text,
               "reexec: the divergence does not name ro.txt", rep)
        line = next((l for l in text.splitlines() if "ro.txt" in l), "")
        log("ok reexec: the changed file is a divergence: %s" % line.strip())


def main():
    for c in sys.argv[1:] or CASES:
        if c not in CASES:
            fail("no case %r (the cases: %s)" % (c, ", ".join(CASES)))
        check(c)


if __name__ == "__main__":
    run_main(main)
