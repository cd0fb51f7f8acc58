#!/usr/bin/env python3
"""sqlite3 with random(), datetime('now') and writes to a db replays its
output: with --local-files journal (the default; the db file is not needed
on replay) and with --local-files reexec (the directory restored to its
pre-record state).  Needs: the understudy CLI, sqlite3."""
import os
import shutil

from harness import Trace, expect, log, run_main

NEEDS = ["sqlite3"]

SQL = b"""
CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, r INTEGER, at TEXT, blob BLOB);
INSERT INTO t(r, at, blob) VALUES (random(), datetime('now'), randomblob(16));
INSERT INTO t(r, at, blob) SELECT random(), strftime('%Y-%m-%d %H:%M:%f', 'now'), randomblob(8)
  FROM t;
INSERT INTO t(r, at, blob) SELECT random(), datetime('now'), randomblob(4) FROM t;
SELECT id, r, at, hex(blob) FROM t ORDER BY id;
SELECT count(*), sum(r % 1000000) FROM t;
SELECT hex(randomblob(16)), datetime('now'), julianday('now');
"""


def seed_db(dir_):
    """The pre-record state: a db with one existing row."""
    os.makedirs(dir_, exist_ok=True)
    db = os.path.join(dir_, "test.db")
    from harness import run
    r = run(["sqlite3", db, "CREATE TABLE seed(x); INSERT INTO seed VALUES ('before');"],
            timeout=30)
    expect(r.rc == 0, "seeding the db failed", r)
    return db


def check(t, local_files):
    work = t.tmp("work")
    db = seed_db(work)
    pristine = t.tmp("pristine")
    shutil.copytree(work, pristine)
    rec = t.record(["sqlite3", db], input=SQL, local_files=local_files, cwd=work)
    expect(rec.rc == 0, "%s: record exit %s" % (local_files, rec.rc), rec)
    expect(rec.stdout.count(b"\n") >= 5, "%s: sqlite printed too little" % local_files, rec)
    if local_files == "journal":
        for f in os.listdir(work):  # the replay must not need the db file
            os.unlink(os.path.join(work, f))  # (the recorded cwd itself stays)
    else:
        shutil.rmtree(work)
        shutil.copytree(pristine, work)  # re-executed on the pre-record state
    rep = t.replay(show_output=True)
    expect(rep.rc == 0, "%s: replay exit %s (expected 0)" % (local_files, rep.rc), rep)
    expect(rep.stdout == rec.stdout,
           "%s: replayed stdout differs\n--- recorded\n%s" % (local_files, rec.out), rep)
    log("ok --local-files %s: %s" % (local_files, rec.out.strip().splitlines()[-1]))


def main():
    failures = []
    for mode in ("journal", "reexec"):
        try:
            with Trace("sqlite-" + mode) as t:
                check(t, mode)
        except Exception as e:
            log("FAIL --local-files %s: %s" % (mode, e))
            failures.append(mode)
    expect(not failures, "sqlite failing with --local-files %s" % ", ".join(failures))


if __name__ == "__main__":
    run_main(main)
