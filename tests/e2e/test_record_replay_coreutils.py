#!/usr/bin/env python3
"""Debian's own tools on a directory, recorded and replayed: `cat FILE`
(coreutils 9.1 copies with copy_file_range), `cp -r DIR` and `tar c DIR` to
stdout.  cat and tar replay with their recorded stdout; cp's copy made while
recording is byte-identical to the source, and its replay is clean (every
write cp makes on replay is compared with the recorded checksum).  cp runs
without a shell around it: a shell forking it is issue 13 part 1.
Needs: the understudy CLI, cat, cp, tar.

    test_record_replay_coreutils.py CASE    cat | cp | tar (one ctest each)"""
import hashlib
import json
import os
import sys

from harness import Trace, expect, fail, log, run_main

NEEDS = ["cat", "cp", "tar"]
CASES = ["cat", "cp", "tar"]


def make_tree(root):
    """A small directory: text, a binary file bigger than one bounce chunk
    (128 KiB), an empty file and a subdirectory."""
    src = os.path.join(root, "src")
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "a.txt"), "w") as f:
        for i in range(2000):
            f.write("line %d of a.txt\n" % i)
    with open(os.path.join(src, "sub", "big.bin"), "wb") as f:
        for i in range(3000):
            f.write(hashlib.sha256(str(i).encode()).digest() * 4)
    open(os.path.join(src, "empty"), "w").close()
    return src


def tree_digest(path):
    """(relative path, sha256) of every regular file under PATH, sorted."""
    out = []
    for d, _, files in os.walk(path):
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out.append((os.path.relpath(p, path), hashlib.sha256(f.read()).hexdigest()))
    return sorted(out)


def check(case):
    with Trace("coreutils-" + case) as t:
        src = make_tree(t.root)
        if case == "cat":
            argv = ["cat", os.path.join(src, "a.txt"), os.path.join(src, "sub", "big.bin")]
        elif case == "cp":
            dst = os.path.join(t.root, "copy")
            argv = ["cp", "-r", src, dst]
        elif case == "tar":
            # Fixed metadata so the archive depends on the files only.
            argv = ["tar", "-C", src, "--sort=name", "--mtime=2020-01-01", "--owner=0",
                    "--group=0", "--numeric-owner", "-cf", "-", "."]
        else:
            fail("no case %r (the cases: %s)" % (case, ", ".join(CASES)))
        rec = t.record(argv)
        expect(rec.rc == 0 and not rec.timed_out, "%s: record exit %s" % (case, rec.rc), rec)
        expect(b"not supported" not in rec.stderr, "%s: a call was refused" % case, rec)
        expect(case == "cp" or len(rec.stdout) > 100000, "%s: recorded only %d bytes of output"
               % (case, len(rec.stdout)), rec)
        if case == "cp":
            expect(tree_digest(dst) == tree_digest(src),
                   "cp: the copy made under record differs from the source", rec)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0, "%s: replay exit %s (expected 0)" % (case, rep.rc), rep)
        expect(rep.stdout == rec.stdout, "%s: replayed stdout differs from the recorded one "
               "(%d vs %d bytes)" % (case, len(rep.stdout), len(rec.stdout)), rep)
        if case == "cp":
            writes = [e for e in t.show() if "write" in json.dumps(e)]
            expect(len(writes) >= 2, "cp: the journal holds no writes of the copy", rec)
            log("ok cp: %d files copied, replay clean" % len(tree_digest(src)))
            return
        log("ok %s: %d bytes of output replayed identically" % (case, len(rec.stdout)))


def main():
    cases = sys.argv[1:] or CASES
    for c in cases:
        check(c)


if __name__ == "__main__":
    run_main(main)
