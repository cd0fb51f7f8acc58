#!/usr/bin/env python3
"""Progress on a terminal (issue 15 part 8): `understudy replay` and
`understudy journal verify` with stderr on a pseudo-terminal show a line
with %, a rate and an ETA ("replaying DIR:  45% 12.3k/27.1k events, 9.8k
events/s, ETA 2s"); piped, or with --json, they show none.  The redraw
interval is UNDERSTUDY_PROGRESS_MS=0 here so that a short journal still
draws its line a few times.
Needs: a recording of python3 calling time.time() 30000 times (each one is
an event)."""
import os
import pty
import re
import select
import subprocess
import sys
import time

from harness import UNDERSTUDY, Trace, expect, log, run, run_main

NEEDS = ["python3"]

REPLAY_LINE = re.compile(r"replaying \S+: +(\d+)% [\d.]+[kMG]?/[\d.]+[kMG]? events, "
                         r"[\d.]+[kMG]? events/s, ETA (\d+s|\d+m\d+s|\d+h\d+m)")
VERIFY_LINE = re.compile(r"verifying \S+: +(\d+)% [\d.]+ (B|KiB|MiB|GiB)/[\d.]+ (B|KiB|MiB|GiB), "
                         r"[\d.]+ (B|KiB|MiB|GiB)/s, ETA (\d+s|\d+m\d+s)")


def on_pty(argv, timeout=180.0):
    """Runs ARGV with stderr on a new pseudo-terminal (stdout piped):
    (exit status, what the terminal received)."""
    master, slave = pty.openpty()
    env = dict(os.environ, UNDERSTUDY_PROGRESS_MS="0")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                         env=env, start_new_session=True)
    os.close(slave)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            got += chunk
        elif p.poll() is not None:
            break
    try:
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    p.stdout.close()
    os.close(master)
    return rc, got.decode(errors="replace")


def main():
    with Trace("progress") as t:
        prog = "import time\nfor i in range(30000):\n    time.time()\nprint('done')\n"
        r = t.record([sys.executable, "-c", prog], timeout=300)
        expect(r.rc == 0, "recording python failed", r)

        rc, tty = on_pty([UNDERSTUDY, "replay", t.dir])
        lines = [m for m in REPLAY_LINE.finditer(tty)]
        expect(rc == 0, "replay on a terminal exited %d: %s" % (rc, tty[-1500:]))
        expect(lines, "no 'N%% done/total events, rate events/s, ETA' line on the terminal: %r"
               % tty[-1500:])
        pcts = [int(m.group(1)) for m in lines]
        expect(pcts == sorted(pcts) and pcts[-1] > pcts[0],
               "the replay percentage does not advance: %s" % pcts)
        expect("\r" in tty and "\033[K" in tty, "the progress line is not redrawn in place")
        log("replay: %d progress lines, %d%% .. %d%%, e.g. %r" %
            (len(lines), pcts[0], pcts[-1], lines[len(lines) // 2].group(0)))

        rc, tty = on_pty([UNDERSTUDY, "journal", "verify", t.dir])
        vlines = [m for m in VERIFY_LINE.finditer(tty)]
        expect(rc == 0, "verify on a terminal exited %d: %s" % (rc, tty[-1500:]))
        expect(vlines, "no 'N%% done/total, rate/s, ETA' line from verify: %r" % tty[-1500:])
        log("verify: %d progress lines, e.g. %r" % (len(vlines), vlines[-1].group(0)))

        rc, tty = on_pty([UNDERSTUDY, "journal", "verify", t.dir, "--json"])
        expect(rc == 0 and "ETA" not in tty, "verify --json drew progress: %r" % tty[-500:])
        rc, tty = on_pty([UNDERSTUDY, "replay", t.dir, "--json"])
        expect("ETA" not in tty, "replay --json drew progress: %r" % tty[-500:])

        env = dict(os.environ, UNDERSTUDY_PROGRESS_MS="0")
        for argv in ([UNDERSTUDY, "replay", t.dir], [UNDERSTUDY, "journal", "verify", t.dir]):
            r = run(argv, timeout=180, env=env)
            expect(r.rc == 0, "%s failed" % " ".join(argv[1:3]), r)
            expect("ETA" not in r.err and "\r" not in r.err,
                   "progress on a pipe (%s): %r" % (" ".join(argv[1:3]), r.err[-500:]))
        log("piped and --json: no progress")


if __name__ == "__main__":
    run_main(main)
