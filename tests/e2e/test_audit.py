#!/usr/bin/env python3
"""The kmod escape audit under `understudy record --audit` (needs root + BPF):
 - raw_escape with the interposer's trap deliberately disabled: the audit
   catches its raw getrandom and clock_gettime, names them in the alarm, and
   the journal carries AUDIT events;
 - the same program with the trap on: zero escapes;
 - redis-server under a bounded redis-benchmark: zero escapes;
 - without BPF permission (as user nobody): one line saying why, and the
   recording goes on."""
import json
import os
import shutil
import tempfile

from harness import (UNDERSTUDY, Trace, expect, fail, free_port, log, program, run, run_main,
                     wait_port)

NEEDS = ["root", "bpf", "program:raw_escape", "redis-server", "redis-benchmark", "redis-cli",
         "setpriv"]
N = 200


def record_json(t, argv, extra=()):
    r = run([UNDERSTUDY, "record", "--audit", "--json", "-o", t.dir] + list(extra) + ["--"] + argv,
            timeout=120)
    try:
        summary = json.loads(r.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        fail("record --audit --json printed no summary\n" + r.describe())
    return r, summary


def main():
    escape = program("raw_escape")
    with Trace("audit-escape") as t:
        r, s = record_json(t, [escape, str(N)], extra=["--unsafe-no-trap"])
        audit = s.get("audit") or {}
        expect(audit.get("on"), "audit did not run", r)
        calls = audit.get("calls", {})
        expect(calls.get("getrandom", 0) >= N and calls.get("clock_gettime", 0) >= N,
               "audit missed the raw calls: %s" % calls, r)
        expect(b"ESCAPE AUDIT ALARM" in r.stderr and b"getrandom" in r.stderr, "no alarm line", r)
        audits = [e for e in t.show() if "audit" in e or e.get("kind") == "audit" or "AUDIT" in json.dumps(e)]
        expect(audits, "the journal has no audit events")
        log("trap off: %s" % calls)
    with Trace("audit-clean") as t:
        r, s = record_json(t, [escape, str(N)])
        expect(s["audit"]["on"] and s["audit"]["escaped"] == 0,
               "escapes with the trap on: %s" % s["audit"], r)
        log("trap on: 0 escapes")
    port = free_port()
    with Trace("audit-redis") as t:
        server = t.record_start(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", t.tmp("")], extra=["--audit", "--json"])
        if not wait_port(port, timeout=30, proc=server):
            fail("redis-server under record --audit never listened")
        b = run(["redis-benchmark", "-h", "127.0.0.1", "-p", port, "-n", "20000", "-c", "20",
                 "-t", "set,get", "-q"], timeout=120)
        expect(b.rc == 0, "redis-benchmark failed", b)
        run(["redis-cli", "-h", "127.0.0.1", "-p", port, "SHUTDOWN", "NOSAVE"], timeout=15)
        rec = t.record_wait(timeout=60)
        s = json.loads(rec.out.strip().splitlines()[-1])
        expect(s["audit"]["on"] and s["audit"]["escaped"] == 0, "redis escapes: %s" % s["audit"], rec)
        log("redis-server, 20000 SET + 20000 GET: 0 escapes")
    # Lifecycle: a process of the recorded tree that runs without the
    # interposer (here: LD_PRELOAD removed before exec) is an alarm.
    with Trace("audit-lifecycle") as t:
        r, s = record_json(t, ["/bin/sh", "-c", "env -u LD_PRELOAD sleep 0.5; echo done"])
        alarms = s["audit"].get("alarms", [])
        expect(len(alarms) == 1 and "sleep" in alarms[0] and "without the interposer" in alarms[0],
               "expected one alarm naming the unrecorded sleep: %s" % alarms, r)
        expect(b"AUDIT ALARM" in r.stderr, "no alarm line on stderr", r)
        log("lifecycle: " + alarms[0])
    # Degrade: a user without BPF permission gets the reason in one line.
    tmp = tempfile.mkdtemp(prefix="understudy-e2e-audit-nobody-")
    os.chmod(tmp, 0o777)
    try:
        r = run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                 UNDERSTUDY, "record", "--audit", "-o", os.path.join(tmp, "j"), "--", escape, "3"],
                timeout=60)
        lines = [l for l in r.err.splitlines() if "escape audit" in l]
        expect(r.rc == 0, "record as nobody failed", r)
        expect(len(lines) == 1 and "recording without the audit" in lines[0],
               "expected one line saying why the audit is off", r)
        log("as nobody: " + lines[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log("PASS")


if __name__ == "__main__":
    run_main(main)
