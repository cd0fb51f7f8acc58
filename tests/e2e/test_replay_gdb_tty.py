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


def main():
    with Trace("replay_gdb_tty") as t:
        rec = t.record([program("crash_parse")], input=b"BAD!GET /index.html\r\n")
        expect(rec.rc == 128 + signal.SIGSEGV, "record exit %s (expected SIGSEGV)" % rec.rc, rec)
        events = program_events(t)
        log("journal: %d program events" % events)
        expect(events >= 3, "crash_parse made only %d events" % events)
        # Stop before the 2nd read of stdin in main (events: the 1st read
        # returns the request, the 2nd the end of input).
        p = Pty([UNDERSTUDY, "replay", t.dir, "--gdb", "--until", "2"])
        try:
            m = p.read_until(rb"understudy: stopped before event (\d+)[^\n]*", 120)
            line = m.group(0).decode(errors="replace")
            log("stop line: " + line)
            expect(m.group(1) == b"2", "stopped before event %s, not 2" % m.group(1).decode())
            expect(" in main " in line, "the stop is not in the program's frame main: " + line)
            p.read_until(re.escape(PROMPT), 60, since=m.end())
            # gdb has the terminal: its prompt answers (a job-control stop
            # would leave this unanswered), and `frame` is the user's.
            m, _ = p.command("frame", rb"#\d+ [^\n]*\n[\s\S]*?\(gdb\) ", 60)
            expect(b"main" in m.group(0), "frame is not main: %r" % m.group(0))
            expect("T" not in "".join(l.split()[3] for l in p.state().splitlines()[1:]
                                      if len(l.split()) > 3 and l.split()[4] != "crash_parse"),
                   "a process of the replay is stopped:\n" + p.state())
            # goto-event backwards and forwards.
            for target in (1, 3):
                m, _ = p.command("goto-event %d" % target,
                                 rb"understudy: stopped before event (\d+)[^\n]*", 120)
                log("goto-event %d: %s" % (target, m.group(0).decode(errors="replace")))
                expect(int(m.group(1)) == target,
                       "goto-event %d stopped before event %s" % (target, m.group(1).decode()))
                p.read_until(re.escape(PROMPT), 60, since=m.end())
            # gdb's own run restarts the replay (to the --until of the command line).
            m, _ = p.command("run", rb"understudy: stopped before event (\d+)[^\n]*", 120)
            expect(m.group(1) == b"2", "run stopped before event %s, not 2" % m.group(1).decode())
            p.read_until(re.escape(PROMPT), 60, since=m.end())
            # Past the last event: the program runs on into its crash.
            m, start = p.command("goto-event %d" % (events + 1),
                                 rb"SIGSEGV|understudy: stopped[^\n]*", 120)
            if b"SIGSEGV" not in m.group(0):
                fail("goto-event %d did not run into the SIGSEGV:\n%s" %
                     (events + 1, p.out[start:].decode(errors="replace")))
            m = p.read_until(rb"parse_request", 30, since=start)
            p.read_until(re.escape(PROMPT), 60, since=m.end())
            os.write(p.fd, b"quit\n")
            m = p.read_until(rb"(Quit anyway\? \(y or n\) )|(understudy replay: gdb exited[^\n]*)", 60)
            if m.group(1):
                os.write(p.fd, b"y\n")
                m = p.read_until(rb"understudy replay: gdb exited[^\n]*", 60)
            report = m.group(0).decode(errors="replace")
            log("report: " + report)
            st = p.reap(60)
            expect(st is not None, "the replay did not end after gdb quit")
            rc = os.waitstatus_to_exitcode(st)
            expect("died of SIGSEGV" in report, "the report does not say SIGSEGV: " + report)
            expect(rc == 128 + signal.SIGSEGV, "replay exit %d, expected %d (SIGSEGV as recorded)"
                   % (rc, 128 + signal.SIGSEGV))
        finally:
            p.close()


if __name__ == "__main__":
    run_main(main)
