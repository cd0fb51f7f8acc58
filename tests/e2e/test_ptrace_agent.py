#!/usr/bin/env python3
"""The ptrace backend's in-process agent (docs/ptrace.md "The agent";
issue 14's throughput target): the per-request calls recorded inside the
program, without a stop, and the journal the same as the tracer would have
written -- every replay clean and identical.

    test_ptrace_agent.py CASE    redis | threads | off

redis: Debian's redis-server forced to `--backend ptrace` under a bounded
redis-benchmark load and a few redis-cli commands whose answers are known:
the agent must have recorded most calls (the rewritten call sites reached
it), no read of an agent's call may fall outside what it copied (misses 0),
the answers are right, and the replay is clean.

threads: a C program whose main thread reads the clock and moves data
through a non-blocking pipe while three helpers sleep on a condition
variable, waking every 100 rounds to race for a mutex (the turn passes
between threads, the agent stands aside while anyone waits): 5 recordings,
each replayed with identical output.

off: UNDERSTUDY_PTRACE_AGENT=0 -- no agent goes in, every call stops, the
replay is still clean."""
import json
import os
import subprocess
import sys
import tempfile

from harness import Trace, expect, fail, free_port, log, run, run_main, wait_port

NEEDS = ["gcc", "redis-server", "redis-cli", "redis-benchmark"]
CASES = ["redis", "threads", "off"]
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ptrace_src")


def record_json(rec):
    for line in reversed(rec.stdout.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    fail("record printed no --json line", rec)


def redis():
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="understudy-agent-") as tmp, Trace("agent_redis") as t:
        t.record_start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"],
                       extra=["--backend", "ptrace", "--json"])
        expect(wait_port(port, timeout=30, proc=t.server), "redis-server did not listen under record")
        cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
        r = run(cli + ["SET", "agent:key", "hello-agent"], timeout=15)
        expect(r.rc == 0 and r.out.strip() == "OK", "SET under record: %r" % r.out, r)
        b = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "20", "-n", "20000",
                 "-P", "1", "-t", "set,get", "-q"], timeout=120)
        expect(b.rc == 0 and not b.timed_out, "redis-benchmark under record failed", b)
        r = run(cli + ["GET", "agent:key"], timeout=15)
        expect(r.rc == 0 and r.out.strip() == "hello-agent", "GET under record: %r" % r.out, r)
        r = run(cli + ["INCRBY", "agent:n", "41"], timeout=15)
        expect(r.out.strip() == "41", "INCRBY under record: %r" % r.out, r)
        run(cli + ["SHUTDOWN", "NOSAVE"], timeout=15)
        rec = t.record_wait(timeout=60)
        expect(rec.rc == 0, "record of redis-server exited %s" % rec.rc, rec)
        j = record_json(rec)
        a = j["agent"]
        expect(a["processes"] >= 1 and a["sites"] > 0, "no agent went into redis-server: %s" % a, rec)
        expect(a["misses"] == 0, "reads outside the agent's copies: %s" % a, rec)
        expect(a["calls"] > 4 * j["traced_calls"],
               "the agent recorded %d calls, the tracer stopped %d: the call sites did not reach it"
               % (a["calls"], j["traced_calls"]), rec)
        rep = t.replay(timeout=300)
        expect(rep.rc == 0 and "no divergence" in rep.err, "replay of redis-server not clean", rep)
        log("ok redis: %d calls recorded by the agent at %d call sites, %d traced calls, "
            "%d events, replay clean; %s" % (a["calls"], a["sites"], j["traced_calls"], j["events"],
                                             " ".join(b.out.split())[:200]))


def build(tmp, name, extra=()):
    exe = os.path.join(tmp, name)
    r = subprocess.run(["gcc", "-O1", "-pthread"] + list(extra) + ["-o", exe, os.path.join(SRC, name + ".c")],
                       capture_output=True, timeout=120)
    expect(r.returncode == 0, "gcc failed: %s" % r.stderr.decode(errors="replace"))
    return exe


def threads():
    with tempfile.TemporaryDirectory(prefix="understudy-agent-") as tmp:
        exe = build(tmp, "agent_threads")
        outs = set()
        for i in range(5):
            with Trace("agent_threads") as t:
                rec = t.record([exe], extra=["--backend", "ptrace", "--json"])
                expect(rec.rc == 0 and not rec.timed_out, "record exit %s" % rec.rc, rec)
                j = record_json(rec)
                a = j["agent"]
                expect(a["calls"] > 1000 and a["misses"] == 0, "agent: %s" % a, rec)
                expect(not j["warnings"], "record warned: %s" % j["warnings"], rec)
                out = rec.stdout.decode(errors="replace").splitlines()[0]
                rep = t.replay(show_output=True)
                expect(rep.rc == 0 and "no divergence" in rep.err, "replay %d not clean" % i, rep)
                expect(rep.stdout.decode(errors="replace").splitlines()[0] == out,
                       "replay %d printed another line than the recording: %s" % (i, out), rep)
                outs.add(out)
        expect(len(outs) > 1, "5 recordings printed the same line (the clock is not in it?)")
        log("ok threads: 5 recordings (%d distinct), each replayed identically" % len(outs))


def off():
    with tempfile.TemporaryDirectory(prefix="understudy-agent-") as tmp:
        exe = build(tmp, "agent_threads")
        env = dict(os.environ, UNDERSTUDY_PTRACE_AGENT="0")
        with Trace("agent_off") as t:
            rec = t.record([exe], extra=["--backend", "ptrace", "--json"], env=env)
            expect(rec.rc == 0, "record exit %s" % rec.rc, rec)
            a = record_json(rec)["agent"]
            expect(a["processes"] == 0 and a["calls"] == 0, "UNDERSTUDY_PTRACE_AGENT=0, yet: %s" % a, rec)
            out = rec.stdout.decode(errors="replace").splitlines()[0]
            rep = t.replay(show_output=True)
            expect(rep.rc == 0 and "no divergence" in rep.err, "replay not clean", rep)
            expect(rep.stdout.decode(errors="replace").splitlines()[0] == out, "replayed line differs", rep)
        log("ok off: no agent, every call stopped, replay identical")


def main():
    cases = {"redis": redis, "threads": threads, "off": off}
    names = sys.argv[1:] or list(cases)
    for n in names:
        if n not in cases:
            fail("no case %r (cases: %s)" % (n, ", ".join(cases)))
    for n in names:
        cases[n]()


if __name__ == "__main__":
    run_main(main)
