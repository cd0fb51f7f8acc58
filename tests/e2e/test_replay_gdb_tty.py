#!/usr/bin/env python3
"""`understudy replay --gdb` driven interactively through a pseudo-terminal:
a crash_parse recording (it dies of SIGSEGV in parse_request) is replayed
under gdb with --until N.  Checks: gdb gets the terminal (no job-control
stop of the replay or of gdb); the stop at --until lands in the program's
own frame (main), with a line naming the event; `goto-event M` with M < N
and M > N stops before event M; `continue` reaches the SIGSEGV in
parse_request; on `quit` the replay reports that the program died of
SIGSEGV under gdb as in the recording, and exits with 128+SIGSEGV.
Needs: the understudy CLI, gdb."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time

from harness import UNDERSTUDY, Trace, expect, fail, log, program, run_main

NEEDS = ["gdb", "program:crash_parse"]

PROMPT = b"(gdb) "


class Pty:
    """The replay as the session leader of a fresh pseudo-terminal, as from
    a terminal emulator; everything read from it is kept in self.out."""

    def __init__(self, argv):
        self.out = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.status = None

    def read_until(self, pattern, timeout, since=0):
        """Reads until `pattern` (a regex of bytes) matches output after
        offset `since`; fails after `timeout` s or if the replay ends."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.out, since)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                fail("no %r within %.0f s; state %s; output so far:\n%s" %
                     (pattern, timeout, self.state(), self.out[-3000:].decode(errors="replace")))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.reap(5)
                    m = rx.search(self.out, since)
                    if m:
                        return m
                    fail("the replay ended before %r; output:\n%s" %
                         (pattern, self.out[-3000:].decode(errors="replace")))
                self.out += chunk

    def state(self):
        """Process states (ps letter) of the replay's tree: T = stopped."""
        try:
            import subprocess
            return subprocess.run(["ps", "-o", "pid,pgid,tpgid,stat,comm", "--ppid", str(self.pid),
                                   "-p", str(self.pid)], capture_output=True,
                                  text=True, timeout=5).stdout
        except Exception as e:  # noqa: BLE001 -- diagnostics only
            return str(e)

    def command(self, line, until, timeout):
        start = len(self.out)
        os.write(self.fd, line.encode() + b"\n")
        return self.read_until(until, timeout, since=start), start

    def reap(self, timeout):
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = st
                break
            try:
                r, _, _ = select.select([self.fd], [], [], 0.2)
                if r:
                    self.out += os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.2)
        return self.status

    def close(self):
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # the session we started
            except ProcessLookupError:
                pass
            self.reap(10)
        os.close(self.fd)


def program_events(t):
    """The program's events (the recorder's own, tid 0, are not numbered)."""
    return sum(1 for e in t.show() if e.get("tid", 0) != 0)


def stop_at(p, cmd, timeout=120):
    """Sends `cmd` (None: nothing) and returns (event number, stop line) of
    the extension's line for the next stop, after gdb's prompt is back."""
    start = len(p.out)
    if cmd is not None:
        os.write(p.fd, cmd.encode() + b"\n")
    m = p.read_until(rb"understudy: stopped before event (\d+)[^\r\n]*", timeout, since=start)
    p.read_until(re.escape(PROMPT), 60, since=m.end())
    line = m.group(0).decode(errors="replace")
    log("%s -> %s" % (cmd or "start", line))
    return int(m.group(1)), line


def quit_gdb(p):
    """quit (answering gdb's question if it asks); returns the replay's report
    line and its exit code."""
    os.write(p.fd, b"quit\n")
    m = p.read_until(rb"(\(y or n\) )|(understudy replay: gdb exited[^\r\n]*)", 60)
    if m.group(1):
        os.write(p.fd, b"y\n")
        m = p.read_until(rb"understudy replay: gdb exited[^\r\n]*", 60)
    report = m.group(0).decode(errors="replace")
    log("report: " + report)
    st = p.reap(60)
    expect(st is not None, "the replay did not end after gdb quit")
    return report, os.waitstatus_to_exitcode(st)


def job_stopped(p):
    """Processes of the replay in a job-control stop (state T), gdb's
    inferior (ptrace stop, state t) aside."""
    rows = [l.split() for l in p.state().splitlines()[1:]]
    return [r for r in rows if len(r) >= 5 and r[3].startswith("T")]


def main():
    with Trace("replay_gdb_tty") as t:
        # 1. goto-event back and forth on a single-threaded program whose
        # calls are all made from main (uname .. getpid, then printf).
        rec = t.record([program("identity_calls")])
        expect(rec.rc == 0, "record identity_calls exit %s" % rec.rc, rec)
        events = program_events(t)
        log("identity_calls: %d program events" % events)
        expect(events >= 8, "identity_calls made only %d events" % events)
        until, back, forward = 4, 2, 6  # 6: inside printf, called by main
        p = Pty([UNDERSTUDY, "replay", t.dir, "--gdb", "--until", str(until)])
        try:
            n, line = stop_at(p, None)
            expect(n == until, "stopped before event %d, not %d" % (n, until))
            expect(" in main " in line, "the stop is not in the program's frame main: " + line)
            # gdb has the terminal: its prompt answers (a job-control stop
            # would leave the command unanswered) and nothing is stopped.
            m, _ = p.command("frame", rb"#\d+ [^\n]*main[^\n]*", 60)
            p.read_until(re.escape(PROMPT), 60, since=m.end())
            expect(not job_stopped(p), "processes of the replay are stopped:\n" + p.state())
            for target in (back, forward, back):
                n, line = stop_at(p, "goto-event %d" % target)
                expect(n == target, "goto-event %d stopped before event %d" % (target, n))
                expect(" in main " in line, "goto-event %d: not in main: %s" % (target, line))
            # gdb's own run restarts the replay, to the command line's --until.
            n, line = stop_at(p, "run")
            expect(n == until, "run stopped before event %d, not %d" % (n, until))
            m, _ = p.command("goto-event %d" % (events + 5), rb"recording has only (\d+) events", 60)
            expect(int(m.group(1)) == events, "goto-event past the end: %r" % m.group(0))
            p.read_until(re.escape(PROMPT), 60, since=m.end())
            report, rc = quit_gdb(p)
            expect("had not ended" in report, "report: " + report)
            expect(rc == 0, "replay exit %d after quitting a stopped program" % rc)
        finally:
            p.close()

        # 2. A recording that died of SIGSEGV: stop in main, go past the
        # last event into the crash, quit: the report and the exit status
        # say SIGSEGV, as recorded.
        rec = t.record([program("crash_parse")], input=b"BAD!GET /index.html\r\n")
        expect(rec.rc == 128 + signal.SIGSEGV, "record exit %s (expected SIGSEGV)" % rec.rc, rec)
        events = program_events(t)
        p = Pty([UNDERSTUDY, "replay", t.dir, "--gdb", "--until", str(events)])
        try:
            n, line = stop_at(p, None)
            expect(n == events and " in main " in line, "crash_parse stop: " + line)
            start = len(p.out)
            os.write(p.fd, b"goto-event %d\n" % (events + 1))
            m = p.read_until(rb"SIGSEGV", 120, since=start)
            m = p.read_until(rb"parse_request", 30, since=start)
            p.read_until(re.escape(PROMPT), 60, since=m.end())
            report, rc = quit_gdb(p)
            expect("under gdb the program died of SIGSEGV" in report and
                   "recorded run died of SIGSEGV" in report, "report: " + report)
            expect(rc == 128 + signal.SIGSEGV, "replay exit %d, expected %d (SIGSEGV as recorded)"
                   % (rc, 128 + signal.SIGSEGV))
        finally:
            p.close()


if __name__ == "__main__":
    run_main(main)
