"""End-to-end test harness: a tiny program plus a few verbs.

    from harness import Trace, expect, program, run_main

    NEEDS = ["sqlite3", "program:time_calls"]   # what this test needs, once

    def main():
        with Trace("time_calls") as t:          # journal in a temp dir
            rec = t.record([program("time_calls")])
            rep = t.replay(show_output=True)
            expect(rep.rc == 0, "replay exit", rep)
            expect(rep.stdout == rec.stdout, "stdout differs", rep)

    run_main(main)

Contract:
  - exit 0 = pass, 1 = fail, 77 = skipped (ctest SKIP_RETURN_CODE);
  - every test module declares NEEDS (see "Needs" below); run_main checks
    it before main() and skips with the reasons -- or, under CI=true, fails;
  - a module may declare CASES, a list of names: ctest then runs it once per
    case, `test_x.py CASE` (see describe() at the end);
  - a failing Trace keeps its journal and prints the exact command that
    replays it; a passing one deletes it;
  - every child runs with a timeout, in its own session, and is killed (its
    process group, by the pid we got from Popen) on timeout, on failure and
    at exit -- never anything we did not start;
  - networking is loopback only; free_port() hands out ports below the
    kernel's ephemeral range (never 6379 or 6390).
"""

import atexit
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from wire import varint, xxh3_low32

SOURCE = os.environ.get("UNDERSTUDY_SOURCE") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("UNDERSTUDY_BUILD") or os.path.join(SOURCE, "build")
UNDERSTUDY = os.path.join(BUILD, "bin", "understudy")
UNDERSTUDYD = os.path.join(BUILD, "bin", "understudyd")
PRELOAD = os.path.join(BUILD, "lib", "libunderstudy_preload.so")
PROGRAMS = os.path.join(BUILD, "tests", "programs")

# Ports the harness never hands out: a developer's own redis, and the port
# some docs use for examples.
RESERVED_PORTS = {6379, 6390}

DEFAULT_TIMEOUT = 60.0
SKIP = 77


def program(name):
    """Path of a tests/programs/NAME.c binary."""
    return os.path.join(PROGRAMS, name)


# ---------------------------------------------------------------------------
# Outcomes


class TestFailure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def fail(reason):
    raise TestFailure(reason)


def expect(cond, what, result=None):
    """Fail with WHAT (and the command's output when RESULT is given)."""
    if not cond:
        fail(what + ("\n" + result.describe() if result is not None else ""))


def skip(reason):
    """Skip the test -- except under CI=true, where a missing need fails."""
    if os.environ.get("CI", "").lower() == "true":
        log("FAIL: CI must not skip: " + reason)
        _cleanup_children()
        sys.exit(1)
    log("SKIP: " + reason)
    _cleanup_children()
    sys.exit(SKIP)


def run_main(main):
    """Check the calling module's NEEDS, run MAIN(); exit 0 on success, 1 on
    TestFailure/any exception, 77 when a need is missing."""
    module = sys.modules.get(main.__module__)
    needs = getattr(module, "NEEDS", None)
    try:
        if needs is None:
            fail("%s declares no NEEDS (a list; [] when it needs only the build)" %
                 getattr(module, "__file__", main.__module__))
        need(*needs)
        main()
    except TestFailure as e:
        log("FAIL: %s" % e)
        _cleanup_children()
        sys.exit(1)
    except Exception:
        import traceback
        traceback.print_exc()
        log("FAIL: unexpected exception")
        _cleanup_children()
        sys.exit(1)
    _cleanup_children()
    log("PASS")
    sys.exit(0)


# ---------------------------------------------------------------------------
# Needs (CRIU zdtm style).  Each test module says, once and as data, what it
# needs beyond the build (the understudy CLI and the interposer, which every
# test needs):
#
#     NEEDS = ["root", "netns", "redis-server"]
#
# An entry is one of
#     root, netns, criu, bpf   a capability of this machine (checks below)
#     program:NAME             tests/programs/NAME.c, built
#     lib:SONAME               a shared library ctypes can load
#     understudy:SUB           SUB is listed by `understudy --help`
#     /abs/path                an executable file
#     NAME                     an executable in PATH
# Every unmet entry is reported; the test then skips (exit 77) -- or fails
# under CI=true, where a skip would hide a broken runner.


def _which(name):
    if os.path.sep in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name)


def _quiet_ok(argv, timeout=10):
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _lib_loads(soname):
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


_cli_help = None


def _cli_subcommands():
    """Subcommands listed by `understudy --help` (`understudy X --help` exits
    0 even for an unknown X: the parser handles --help first)."""
    global _cli_help
    if _cli_help is None:
        r = run([UNDERSTUDY, "--help"], timeout=10)
        _cli_help = set(re.findall(r"^  (\w+) ", r.out, re.M))
    return _cli_help


_CAPABILITIES = {
    "root": lambda: None if os.geteuid() == 0 else "needs root",
    "netns": lambda: None if _quiet_ok(["unshare", "--net", "true"]) else
    "needs network namespaces ('unshare --net true' failed)",
    "criu": lambda: None if _which("criu") and _quiet_ok(["criu", "check"], timeout=30) else
    "needs CRIU ('criu check' failed or criu is not installed)",
    "bpf": lambda: None if (os.geteuid() == 0 and os.path.exists("/sys/kernel/btf/vmlinux")
                            and _which("bpftool")) else
    "needs BPF (root, /sys/kernel/btf/vmlinux and bpftool)",
}


def unmet(entry):
    """Why the need ENTRY is not met here; None when it is."""
    kind, _, arg = entry.partition(":")
    if entry in _CAPABILITIES:
        return _CAPABILITIES[entry]()
    if arg and kind == "program":
        ok = os.access(program(arg), os.X_OK)
        return None if ok else "tests/programs/%s.c is not built (%s)" % (arg, program(arg))
    if arg and kind == "lib":
        return None if _lib_loads(arg) else "needs the library %s (ctypes cannot load it)" % arg
    if arg and kind == "understudy":
        return None if arg in _cli_subcommands() else \
            "'understudy %s' is not built (not in 'understudy --help')" % arg
    if arg and os.path.sep not in entry:
        fail("unknown kind of need %r (see 'Needs' in tests/e2e/harness.py)" % entry)
    return None if _which(entry) else "needs the binary '%s' (not found%s)" % (
        entry, "" if os.path.sep in entry else " in PATH")


def need(*entries):
    """Skip (or, under CI=true, fail) unless the build and every ENTRY are there."""
    for path in (UNDERSTUDY, PRELOAD):
        if not os.access(path, os.R_OK):
            skip("%s is not built; run 'cmake --build %s'" % (path, BUILD))
    reasons = [r for r in (unmet(e) for e in entries) if r is not None]
    if reasons:
        skip("; ".join(reasons))


# ---------------------------------------------------------------------------
# Child processes: bounded, in their own session, killed by pid on the way out

_children = []


def _kill_group(p, sig=signal.SIGKILL):
    # Only while P is unreaped: its pid (= our group id) cannot be reused yet.
    if p.returncode is not None:
        return
    try:
        os.killpg(p.pid, sig)  # the session/group we created with this pid
    except (ProcessLookupError, PermissionError):
        pass


def _cleanup_children():
    for p in list(_children):
        if p.poll() is None:
            _kill_group(p, signal.SIGTERM)
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                _kill_group(p)
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
        if p in _children:
            _children.remove(p)


atexit.register(_cleanup_children)


def _on_signal(signo, _frame):
    _cleanup_children()
    sys.exit(128 + signo)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


class Result:
    def __init__(self, argv, rc, stdout, stderr, elapsed, timed_out=False):
        self.argv, self.rc, self.stdout, self.stderr = argv, rc, stdout, stderr
        self.elapsed, self.timed_out = elapsed, timed_out

    @property
    def out(self):
        return self.stdout.decode(errors="replace")

    @property
    def err(self):
        return self.stderr.decode(errors="replace")

    def describe(self, limit=3000):
        def tail(b):
            s = b.decode(errors="replace")
            return s if len(s) <= limit else "...\n" + s[-limit:]
        return ("  command: %s\n  exit: %s%s (%.2f s)\n  --- stdout\n%s\n  --- stderr\n%s" %
                (" ".join(map(_quote, self.argv)), self.rc,
                 " TIMED OUT" if self.timed_out else "", self.elapsed,
                 tail(self.stdout), tail(self.stderr)))


def _quote(s):
    import shlex
    return shlex.quote(str(s))


def start(argv, stdin=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=None, cwd=None):
    """Start ARGV in its own session; it is killed at exit if still running."""
    p = subprocess.Popen([str(a) for a in argv], stdin=stdin if stdin is not None else
                         subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                         start_new_session=True)
    _children.append(p)
    return p


def finish(p, argv, input=None, timeout=DEFAULT_TIMEOUT, t0=None):
    """Wait for P (feeding INPUT) at most TIMEOUT s; kill its group on timeout."""
    t0 = t0 if t0 is not None else time.monotonic()
    timed_out = False
    try:
        out, err = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(p)
        out, err = p.communicate(timeout=10)
    if p in _children:
        _children.remove(p)
    return Result(argv, p.returncode, out or b"", err or b"", time.monotonic() - t0, timed_out)


def run(argv, input=None, timeout=DEFAULT_TIMEOUT, env=None, cwd=None):
    """Run ARGV to completion (bounded); return a Result."""
    t0 = time.monotonic()
    p = start(argv, stdin=subprocess.PIPE if input is not None else None, env=env, cwd=cwd)
    return finish(p, [str(a) for a in argv], input=input, timeout=timeout, t0=t0)


# ---------------------------------------------------------------------------
# Loopback ports


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (never 6379/6390).

    Chosen below the kernel's ephemeral range: ports from bind(0) are in that
    range, and so is the source port of every outgoing connection (redis-cli,
    redis-benchmark, other tests), any of which could take the port between
    this check and the server's own bind."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10000, low) if low > 11000 else 0
        if port in RESERVED_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
    fail("could not find a free loopback port")


def wait_port(port, timeout=20.0, proc=None):
    """Wait until something accepts on 127.0.0.1:PORT (or PROC exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------
# Trace: one journal, the verbs record / replay / show / verify


class Trace:
    """A journal in a temp dir.  Kept (and its replay command printed) when the
    `with` block fails or keep() was called; removed otherwise."""

    def __init__(self, name):
        self.name = name
        self.root = tempfile.mkdtemp(prefix="understudy-e2e-%s-" % name)
        self.dir = os.path.join(self.root, "journal")
        self.kept = False
        self.server = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.server is not None and self.server.poll() is None:
            _kill_group(self.server)
        if exc_type is not None or self.kept:
            self.report_kept()
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        return False

    def keep(self):
        self.kept = True

    def replay_command(self, *extra):
        return " ".join([_quote(UNDERSTUDY), "replay", _quote(self.dir), "--show-output"] +
                        list(extra))

    def report_kept(self):
        log("journal kept: %s" % self.dir)
        log("replay it with: %s" % self.replay_command())

    def tmp(self, name):
        """A path inside this trace's temp dir (for the program's own files)."""
        return os.path.join(self.root, name)

    # -- record

    def _record_argv(self, argv, local_files=None, extra=()):
        a = [UNDERSTUDY, "record", "-o", self.dir]
        if local_files:
            a += ["--local-files", local_files]
        a += list(extra) + ["--"] + [str(x) for x in argv]
        return a

    def record(self, argv, input=None, timeout=DEFAULT_TIMEOUT, local_files=None, extra=(),
               env=None, cwd=None):
        """Record ARGV to completion; INPUT (bytes) is its stdin."""
        shutil.rmtree(self.dir, ignore_errors=True)
        return run(self._record_argv(argv, local_files, extra), input=input, timeout=timeout,
                   env=env, cwd=cwd)

    def record_start(self, argv, local_files=None, extra=(), env=None, cwd=None,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE):
        """Start recording a server in the background; finish with record_stop()."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self._server_argv = self._record_argv(argv, local_files, extra)
        self._server_t0 = time.monotonic()
        self.server = start(self._server_argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
        return self.server

    def record_wait(self, timeout=30.0):
        """Wait for the background recording to end by itself (bounded)."""
        return finish(self.server, self._server_argv, timeout=timeout, t0=self._server_t0)

    # -- replay and inspection

    def replay(self, show_output=True, until=None, gdb_cmds=(), timeout=DEFAULT_TIMEOUT,
               extra=(), json_summary=False):
        a = [UNDERSTUDY, "replay", self.dir]
        if show_output:
            a.append("--show-output")
        if until is not None:
            a += ["--until", str(until)]
        for c in gdb_cmds:
            a += ["--gdb-cmd", c]
        if json_summary:
            a.append("--json")
        a += list(extra)
        return run(a, timeout=timeout)

    def show(self, timeout=DEFAULT_TIMEOUT):
        """Events of the journal as dicts (understudy journal show --json)."""
        r = run([UNDERSTUDY, "journal", "show", self.dir, "--json"], timeout=timeout)
        expect(r.rc == 0, "journal show failed", r)
        return [json.loads(line) for line in r.out.splitlines() if line.startswith("{")]

    def verify(self, timeout=DEFAULT_TIMEOUT):
        """understudy journal verify --json: (Result, summary dict or None)."""
        r = run([UNDERSTUDY, "journal", "verify", self.dir, "--json"], timeout=timeout)
        try:
            summary = json.loads(r.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            summary = None
        return r, summary

    def journal_bytes(self):
        return sum(os.path.getsize(os.path.join(self.dir, f)) for f in os.listdir(self.dir))


# ---------------------------------------------------------------------------
# Journal surgery for negative tests (docs/formats/journal.md): flip one byte
# inside an event's recorded data and fix the frame checksum, so the journal
# stays valid and only the replay can notice.


def _event_seq(ev):
    """Field 1 (seq, varint) of an Event message."""
    i = 0
    while i < len(ev):
        key, i = varint(ev, i)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            return varint(ev, i)[0]
        if wire == 0:
            _, i = varint(ev, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            n, i = varint(ev, i)
            i += n
        elif wire == 5:
            i += 4
        else:
            break
    return None


def flip_journal_byte(journal_dir, marker, index=0):
    """Find MARKER (bytes) in an EVENT_BATCH frame, flip the low bit of
    MARKER[INDEX], recompute the frame checksum.  Returns the seq of the event
    whose data held it."""
    for name in sorted(os.listdir(journal_dir)):
        path = os.path.join(journal_dir, name)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        pos = int.from_bytes(data[12:16], "little")  # header length H
        while pos + 9 <= len(data):
            length = int.from_bytes(data[pos:pos + 4], "little")
            ftype = data[pos + 8]
            start, end = pos + 9, pos + 9 + length
            hit = data.find(marker, start, end)
            if ftype == 1 and hit >= 0:
                target = hit + index
                seq = None
                i = start  # EventBatch: repeated 0x0A varint(len) Event
                while i < end:
                    i += 1
                    n, i = varint(data, i)
                    if i <= target < i + n:
                        seq = _event_seq(bytes(data[i:i + n]))
                    i += n
                data[target] ^= 0x01
                crc = xxh3_low32(data[pos + 8:end])
                data[pos + 4:pos + 8] = crc.to_bytes(4, "little")
                with open(path, "wb") as f:
                    f.write(data)
                return seq
            pos = end
    fail("marker %r not found in any frame of %s" % (marker, journal_dir))


# ---------------------------------------------------------------------------
# What tests/CMakeLists.txt needs to know, for every test at once (one python
# start at configure time, not one per test):
#
#     python3 harness.py test_a.py test_b.py ...
#
# prints one line per test, "STEM|NEED,NEED...|CASE,CASE...", read from the
# modules' NEEDS and CASES (importing a test module does not run it).


def describe(paths):
    import importlib.util
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        needs = getattr(module, "NEEDS", None)
        if needs is None:
            raise SystemExit("%s declares no NEEDS" % path)
        cases = getattr(module, "CASES", ())
        for entry in list(needs) + list(cases):
            if any(c in entry for c in "|,;\n"):
                raise SystemExit("%s: %r: no '|', ',', ';' or newline in a need or case"
                                 % (path, entry))
        print("%s|%s|%s" % (stem, ",".join(needs), ",".join(cases)))


if __name__ == "__main__":
    describe(sys.argv[1:])
