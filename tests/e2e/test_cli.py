#!/usr/bin/env python3
"""One CLI (issue 15 part 6): unknown commands and options are named with
the closest valid word; every wrong command line exits 64
(docs/cli.md); absurd values are refused; old spellings still work;
`status --json` has a version, numbers as numbers and `replica` before any
primary connected; `doctor --json` lists its checks.
Needs: understudyd, `understudy status`, `understudy doctor`."""
import json
import os
import shutil
import signal
import tempfile
import time

from harness import UNDERSTUDY, UNDERSTUDYD, expect, free_port, log, run, run_main, start

NEEDS = [UNDERSTUDYD, "understudy:status", "understudy:doctor"]

USAGE = 64
CASES_WRONG = [
    # argv, what stderr must say
    ([UNDERSTUDY, "frobnicate"], "unknown command 'frobnicate'"),
    ([UNDERSTUDY, "recrod"], "did you mean 'record'?"),
    ([UNDERSTUDY, "--bogus"], "unknown option '--bogus'"),
    ([UNDERSTUDY, "-V"], "did you mean '--version'?"),
    ([UNDERSTUDY], "a command is required: journal record replay"),
    ([UNDERSTUDY, "record", "--jurnal", "x", "--", "true"], "did you mean '--journal'?"),
    ([UNDERSTUDY, "status", "--admni", "x"], "did you mean '--admin'?"),
    ([UNDERSTUDY, "journal", "veriyf", "x"], "did you mean 'verify'?"),
    ([UNDERSTUDY, "replay", "--until", "-5", "x"], "'-5' is not a whole number >= 1"),
    ([UNDERSTUDY, "replay", "--until", "0", "x"], "'0' is not a whole number >= 1"),
    ([UNDERSTUDY, "run", "--mode", "passive", "--backup", "h:1", "--key", "k", "--", "true"],
     "active-passive"),
    ([UNDERSTUDY, "run", "--mode", "active-passive", "--checkpoint-interval", "10x", "--backup",
      "h:1", "--key", "k", "--", "true"], "--checkpoint-interval 10x"),
    ([UNDERSTUDY, "record", "--", "true"], "--journal DIR is required"),
    ([UNDERSTUDYD, "--bogus"], "unknown option '--bogus' for 'understudyd'"),
    ([UNDERSTUDYD, "--metrcs", "x"], "did you mean '--metrics'?"),
]


def main():
    for argv, want in CASES_WRONG:
        r = run(argv, timeout=30)
        expect(r.rc == USAGE, "%s exited %s, not %d" % (" ".join(argv[1:]), r.rc, USAGE), r)
        expect(want.encode() in r.stderr, "%s: stderr does not say %r" % (" ".join(argv[1:]), want), r)
    for argv in ([UNDERSTUDY, "--version"], [UNDERSTUDY, "record", "--help"], [UNDERSTUDYD, "--help"]):
        r = run(argv, timeout=30)
        expect(r.rc == 0, "%s exited %s" % (" ".join(argv[1:]), r.rc), r)

    r = run([UNDERSTUDY, "doctor", "--json"], timeout=120)
    doc = json.loads(r.out)
    expect(doc["version"] and isinstance(doc["checks"], list) and
           {"preload_library", "criu", "bpf", "namespaces", "syscall_user_dispatch"} <=
           {c["name"] for c in doc["checks"]}, "doctor --json lacks checks: %r" % doc)
    expect(r.rc == (0 if doc["ok"] else 1), "doctor's exit %s does not match ok=%s" % (r.rc, doc["ok"]))

    tmp = tempfile.mkdtemp(prefix="understudy-cli-")
    daemon = None
    try:
        key = os.path.join(tmp, "k")
        expect(run([UNDERSTUDY, "keygen", "-o", key]).rc == 0, "keygen failed")
        admin = os.path.join(tmp, "admin.sock")
        # The old spelling --admin-socket still works.
        daemon = start([UNDERSTUDYD, "--listen", "127.0.0.1:%d" % free_port(), "--key", key,
                        "--data", os.path.join(tmp, "data"), "--admin-socket", admin,
                        "--witness", "none", "--no-shadow", "--fsync", "none"])
        st = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and daemon.poll() is None:
            r = run([UNDERSTUDY, "status", "--admin", admin, "--json"], timeout=10)
            if r.rc == 0:
                st = json.loads(r.out)
                break
            time.sleep(0.1)
        expect(st is not None, "understudyd never answered status (exit %s)" % daemon.poll())
        expect(st["version"], "status --json has no version")
        expect(isinstance(st["uptime_ms"], int) and isinstance(st["primary"]["last_seq"], int),
               "64-bit numbers are not JSON numbers: %r" % st)
        expect(isinstance(st.get("replica"), dict) and st["replica"]["last_seq"] == 0,
               "replica is missing before a primary connected: %r" % st)
        expect(st["replica"]["fsync"] in ("", "page-cache"), "fsync none is not page-cache")
        r = run([UNDERSTUDY, "status", "--admin-socket", admin], timeout=10)
        expect(r.rc == 0, "status --admin-socket (the old spelling) failed", r)
        log("%d wrong command lines exit %d with the word named; status --json: %d keys"
            % (len(CASES_WRONG), USAGE, len(st)))
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except Exception:
                daemon.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
