#!/usr/bin/env python3
"""Negative cases.
 (a) One byte of a recorded stdin read is flipped in the journal (frame
     checksum fixed, so the journal stays valid): the replay must stop with
     exit 2 and name the event where the program's behaviour first departs
     from the recording -- the first output after the altered read (an
     emulated read cannot itself disagree: its bytes are the journal's).
 (b) io_uring_setup under `understudy record` is refused with a message
     naming it and a non-zero exit.
 (d) A recording made with the raw-syscall trap off (--unsafe-no-trap) says so
     in its journal, and its replay, though it finds no divergence, is not
     called clean (exit 4, outcome not_clean).
 (c) The same call in a forked worker of a master that respawns it: the
     refusal stops the whole program (the master too) with one message
     naming the call and the process, and the recording says so.
Needs: the understudy CLI, libxxhash.so.0 (the journal's checksum)."""
import json
import re

from harness import Trace, expect, fail, flip_journal_byte, log, program, run_main

# libxxhash.so.0: flip_journal_byte re-checksums the edited frame with it.
NEEDS = ["program:stdin_transform", "program:io_uring_refuse", "program:refuse_tree",
         "lib:libxxhash.so.0"]
MARKER = b"MARKER-1234"


def altered_input():
    with Trace("negative-flip") as t:
        stdin = b"first line\n" + MARKER + b" is the input that gets altered\nlast line\n"
        rec = t.record([program("stdin_transform")], input=stdin)
        expect(rec.rc == 0, "record exit %s" % rec.rc, rec)
        rep = t.replay(show_output=False)
        expect(rep.rc == 0, "the unaltered journal does not replay cleanly", rep)

        read_seq = flip_journal_byte(t.dir, MARKER, index=7)
        vr, summary = t.verify()
        expect(vr.rc == 0, "the edited journal no longer verifies (checksum fix wrong?)", vr)
        events = t.show()
        read = [e for e in events if e.get("seq") == read_seq]
        expect(read and read[0].get("name") == "read" and read[0].get("fd") == 0,
               "flipped byte is not in a read of fd 0: %r" % read)
        first_out = next((e["seq"] for e in events if e.get("seq", 0) > read_seq and
                          e.get("class") == "OUTPUT"), None)
        expect(first_out is not None, "no output after the altered read")

        rep = t.replay(show_output=False)
        expect(rep.rc == 2, "replay of the altered journal exit %s (expected 2)" % rep.rc, rep)
        m = re.search(r"divergence (?:at|after) event (\d+)", rep.err)
        expect(m, "the divergence report names no event", rep)
        named = int(m.group(1))
        expect(named in (read_seq, first_out),
               "divergence names event %d; the altered read is %d, the first output after it %d"
               % (named, read_seq, first_out), rep)
        expect("write" in rep.err, "the divergence report does not name the call", rep)
        log("altered read = event %d; replay: %s" % (read_seq, rep.err.strip().splitlines()[0]))


def io_uring_refused():
    with Trace("negative-io_uring") as t:
        rec = t.record([program("io_uring_refuse")])
        expect(rec.rc != 0, "io_uring_setup was not refused (exit 0)", rec)
        expect(b"io_uring_setup" in rec.stderr, "the refusal does not name io_uring_setup", rec)
        expect(b"io_uring_setup returned" not in rec.stdout,
               "the program went on after io_uring_setup", rec)
        expect(b"never loaded" not in rec.stderr,
               "a refused first call was also blamed on an interposer that never loaded", rec)
        log("refused, exit %d: %s" % (rec.rc, rec.err.strip().splitlines()[0]))


def refused_in_worker():
    with Trace("negative-refuse-tree") as t:
        rec = t.record([program("refuse_tree")], timeout=60)
        expect(not rec.timed_out, "the recording did not end: the master went on", rec)
        expect(rec.rc != 0, "the refusal in the worker did not fail the recording", rec)
        expect(b"gave up" not in rec.stdout, "the master ran to its end after the refusal", rec)
        respawns = rec.stdout.count(b"respawning")
        expect(respawns <= 1, "the master respawned the refused worker %d times" % respawns, rec)
        lines = [l for l in rec.err.splitlines() if "io_uring_setup" in l]
        expect(len(lines) == 1, "expected one message naming io_uring_setup, got %d" % len(lines),
               rec)
        expect(re.search(r"process \d+", lines[0]), "the message does not name the process", rec)
        log("whole program stopped (%d respawns): %s" % (respawns, lines[0]))


def unseen_is_not_clean():
    with Trace("negative-unseen") as t:
        rec = t.record([program("stdin_transform")], input=b"one line\n",
                       extra=["--unsafe-no-trap"])
        expect(rec.rc == 0, "record exit %s" % rec.rc, rec)
        unseen = [e for e in t.show() if e.get("kind") == "audit"]
        expect(unseen, "the journal does not say the trap was off", rec)
        rep = t.replay(show_output=False, json_summary=True)
        summary = json.loads(rep.out.strip().splitlines()[-1])
        expect(rep.rc == 4 and summary["outcome"] == "not_clean",
               "replay of a recording that missed calls exit %s outcome %s (expected 3, not_clean)"
               % (rep.rc, summary["outcome"]), rep)
        expect(b"NOT clean" in rep.stderr and b"trap was off" in rep.stderr,
               "the replay does not say why it is not clean", rep)
        log("not clean: %s" % rep.err.strip().splitlines()[-1])


def main():
    failures = []
    for case in (altered_input, io_uring_refused, refused_in_worker, unseen_is_not_clean):
        try:
            case()
        except Exception as e:
            log("FAIL %s: %s" % (case.__name__, e))
            failures.append(case.__name__)
    if failures:
        fail("failing: " + ", ".join(failures))


if __name__ == "__main__":
    run_main(main)
