#!/usr/bin/env python3
"""redis-server recorded while redis-cli and a bounded redis-benchmark drive
it over loopback; SHUTDOWN NOSAVE ends the recording with exit 0; the replay
ends with no divergence and the journal verifies.
Needs: the understudy CLI, redis-server, redis-cli, redis-benchmark."""
from harness import Trace, expect, fail, log, free_port, run, run_main, wait_port

NEEDS = ["redis-server", "redis-cli", "redis-benchmark"]


def cli(port, *args, timeout=15):
    return run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args), timeout=timeout)


def drive(port):
    steps = [
        (("SET", "k1", "v1"), b"OK"),
        (("GET", "k1"), b"v1"),
        (("SET", "counter", "10"), b"OK"),
        (("INCR", "counter"), b"11"),
        (("INCRBY", "counter", "5"), b"16"),
        (("EXPIRE", "k1", "100"), b"1"),
        (("TTL", "k1"), None),
        (("RANDOMKEY",), None),
        (("LPUSH", "list", "a", "b", "c"), b"3"),
        (("LRANGE", "list", "0", "-1"), b"c\nb\na"),
        (("DBSIZE",), None),
    ]
    for args, want in steps:
        r = cli(port, *args)
        expect(r.rc == 0, "redis-cli %s failed" % " ".join(args), r)
        if want is not None:
            expect(r.stdout.strip() == want, "redis-cli %s: got %r, want %r" %
                   (" ".join(args), r.stdout.strip(), want), r)
    r = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", "5000", "-c", "10",
             "-t", "set,get", "-q"], timeout=120)
    expect(r.rc == 0, "redis-benchmark failed", r)
    log("redis-benchmark under record: " + " | ".join(r.out.replace("\r", "\n").split("\n")[-3:-1]))


def main():
    port = free_port()
    with Trace("redis") as t:
        server = t.record_start(["redis-server", "--port", port, "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", t.tmp("")])
        if not wait_port(port, timeout=30, proc=server):
            rec = t.record_wait(timeout=10)
            fail("redis-server under record never listened on %d\n%s" % (port, rec.describe()))
        drive(port)
        cli(port, "SHUTDOWN", "NOSAVE")
        rec = t.record_wait(timeout=60)
        expect(rec.rc == 0 and not rec.timed_out, "record exit %s (expected 0)" % rec.rc, rec)
        vr, summary = t.verify()
        expect(vr.rc == 0 and summary and summary.get("ok"), "journal verify failed", vr)
        log("journal: %d events, %d bytes" % (summary["events"], summary["bytes"]))
        rep = t.replay(show_output=False, timeout=300)
        expect(rep.rc == 0, "replay exit %s (expected 0, no divergence)" % rep.rc, rep)
        log(rep.err.strip().splitlines()[-1])


if __name__ == "__main__":
    run_main(main)
