#!/usr/bin/env python3
"""Go-live from a journal: redis-server recorded while a client writes, then
SIGKILLed (the recording is cut, as if its node died); `understudy replay
--go-live` replays every event with outputs suppressed, re-creates the
listening sockets for real and serves: every acknowledged write is there, and
new writes are accepted.  This is the failover mechanism without the network.
Needs: the understudy CLI, redis-server, redis-cli."""
import os
import signal
import subprocess
import time

from harness import (UNDERSTUDY, Trace, expect, fail, free_port, log, run, run_main, start,
                     wait_port, _kill_group)

NEEDS = ["redis-server", "redis-cli", "pgrep"]


def cli(port, *args):
    return run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + [str(a) for a in args], timeout=15)


def program_pid(port):
    """The redis-server under record (not the recorder): found by its command line."""
    # redis rewrites its title to "redis-server ADDR:PORT"; the recorder's own
    # command line starts with the understudy binary, so it never matches.
    r = run(["pgrep", "-f", "^redis-server (127.0.0.1:%s|.*--port %s)" % (port, port)], timeout=10)
    pids = [int(p) for p in r.out.split()]
    expect(len(pids) == 1, "expected one redis-server on port %s, found %s" % (port, pids), r)
    return pids[0]


def main():
    port = free_port()
    with Trace("golive") as t:
        server = t.record_start(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", t.tmp("")])
        if not wait_port(port, timeout=30, proc=server):
            fail("redis-server under record never listened on %s\n%s" % (port, t.record_wait(10).describe()))
        acked = {}
        for i in range(200):
            r = cli(port, "SET", "key%d" % i, "value%d" % i)
            if r.rc == 0 and r.stdout.strip() == b"OK":
                acked["key%d" % i] = "value%d" % i
        for _ in range(7):
            expect(cli(port, "INCR", "counter").rc == 0, "INCR failed")
        os.kill(program_pid(port), signal.SIGKILL)
        rec = t.record_wait(timeout=30)
        expect(rec.rc == 128 + 9, "record should report the program killed by SIGKILL (137), got %s" % rec.rc, rec)
        # The port is free again once the killed server's socket is gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and cli(port, "PING").rc == 0:
            time.sleep(0.1)
        t0 = time.monotonic()
        live = start([UNDERSTUDY, "replay", t.dir, "--go-live"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE)
        try:
            if not wait_port(port, timeout=60, proc=live):
                fail("the replayed redis-server never went live on port %s" % port)
            log("live %.0f ms after starting the replay" % ((time.monotonic() - t0) * 1000))
            lost = [k for k, v in acked.items() if cli(port, "GET", k).stdout.strip().decode() != v]
            counter = cli(port, "GET", "counter").stdout.strip()
            log("acked %d, survived %d, lost %d; counter=%s" % (len(acked), len(acked) - len(lost),
                                                                 len(lost), counter.decode()))
            expect(not lost, "acknowledged writes lost after go-live: %s" % lost[:10])
            expect(counter == b"7", "counter after go-live is %r, want 7" % counter)
            expect(cli(port, "SET", "after", "1").stdout.strip() == b"OK", "write after go-live refused")
            expect(cli(port, "INCR", "counter").stdout.strip() == b"8", "INCR after go-live")
        finally:
            if live.poll() is None:
                live.send_signal(signal.SIGINT)
                try:
                    live.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    _kill_group(live)
        log("PASS")


if __name__ == "__main__":
    run_main(main)
