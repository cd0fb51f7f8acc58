#!/usr/bin/env python3
"""A bounded, Jepsen-style checker for "no acknowledged write is lost".

Usage: jepsen_client.py --host VIP --port PORT [--count N] [--duration S]
                        [--incr-every K] [--max-outage S] [--progress-every N]
                        [--rate OPS] [--prefix P]

Runs (typically in the client namespace, `ip netns exec usC-PID ...`) a stream
of writes over RESP on a raw TCP socket, one request at a time:
    SET P:i v:i:<nonce>        for i = 0 .. N-1, and every K-th write also
    INCR P:counter
--rate paces the SETs (at most OPS per second; 0 = as fast as replies come),
so a driver knows the stream spans its failover.
It records every write whose reply came back (ACKNOWLEDGED) with its value.
On a connection error it reconnects to HOST:PORT (the service address) with
bounded backoff: the first retry at once, then every 2 ms for the first
200 ms of an outage (a latency-sensitive client, so the switchover it sees
is the service's, not its own backoff's), then doubling up to 50 ms; each
connect gives up after --connect-timeout (5 ms: a SYN sent to the old node
after the address left it is lost).  An outage longer than --max-outage, or
the whole run exceeding --duration, ends the stream.  A request whose reply
never came is *indeterminate* (it may or may not have been applied): not
counted as acked, never counted as lost.

At the end it reads back every key (pipelined GETs, same reconnect rules) and
prints one JSON object on the last line of stdout:
    {"acked": .., "survived": .., "lost": .., "indeterminate": ..,
     "counter": {"acked_max": .., "final": .., "lost": 0|1},
     "connections": [[t_connect_start, t_connected, t_first_ok], ..],
     "gaps": [[t_last_ok, t_next_ok], ..],       # reply gaps > 2 ms
     "errors": [[t, "what"], ..], "elapsed": .., "ok": true|false}
  lost = acked SETs whose key is missing or holds another value, plus 1 if
  the counter reads lower than the highest acknowledged INCR reply.
  Times are CLOCK_MONOTONIC seconds (time.monotonic()), the same clock in
  every namespace, so a test can place its failover command on this axis.

While writing it prints {"progress": acked_so_far, "t": now} every
--progress-every acknowledged writes (flushed), so a driver can act
mid-stream.  Exit status: 0 lost == 0 and the stream finished; 1 lost > 0;
2 the run could not complete (outage budget exceeded or read-back failed).
No redis-py: python's socket module only.
"""
import argparse
import json
import os
import socket
import sys
import time

BACKOFF_MIN, BACKOFF_MAX = 0.002, 0.05
FAST_RETRY_S = 0.2     # retry every BACKOFF_MIN this long into an outage
GAP = 0.002


class Outage(Exception):
    """The service stayed unreachable longer than the budget allows."""


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Reader:
    """Incremental RESP2 reply parser over one socket."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by peer")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise ConnectionError("protocol error: %r" % line[:40])


class RespError(str):
    pass


class Client:
    """One logical client of HOST:PORT that reconnects with bounded backoff."""

    def __init__(self, host, port, max_outage, deadline, io_timeout, connect_timeout):
        self.addr = (host, port)
        self.max_outage, self.deadline, self.io_timeout = max_outage, deadline, io_timeout
        self.connect_timeout = connect_timeout
        self.backoff = BACKOFF_MIN
        self.fails = 0          # connection failures since the last good reply
        self.sock = self.reader = None
        self.connections = []   # [t_connect_start, t_connected, t_first_ok]
        self.errors = []
        self.last_ok = None
        self.gaps = []
        self.down_since = None

    def _pause(self):
        """Back off before a retry: the first retry after a good reply is
        immediate, then every 2 ms for FAST_RETRY_S, then doubling to 50 ms."""
        if self.fails > 1:
            time.sleep(self.backoff)
            if time.monotonic() - self.down_since > FAST_RETRY_S:
                self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _connect(self):
        start = time.monotonic()
        if self.down_since is None:
            self.down_since = start
        while True:
            self._pause()
            now = time.monotonic()
            if now - self.down_since > self.max_outage or now > self.deadline:
                raise Outage("no connection to %s:%d for %.1f s" %
                             (self.addr[0], self.addr[1], now - self.down_since))
            try:
                s = socket.create_connection(self.addr, timeout=self.connect_timeout)
                s.settimeout(self.io_timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock, self.reader = s, Reader(s)
                self.connections.append([start, time.monotonic(), None])
                return
            except OSError as e:
                self.fails += 1
                self.errors.append([time.monotonic(), "connect: %s" % e])

    def drop(self, why):
        self.fails += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.errors.append([time.monotonic(), why])
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.reader = None

    def _ok(self):
        now = time.monotonic()
        conn = self.connections[-1]
        if conn[2] is None:
            conn[2] = now
        if self.last_ok is not None and now - self.last_ok > GAP:
            self.gaps.append([self.last_ok, now])
        self.last_ok = now
        self.down_since = None
        self.fails, self.backoff = 0, BACKOFF_MIN

    def call(self, payload, nreplies=1):
        """Send PAYLOAD once; return its replies, or raise ConnectionError
        (the request is then indeterminate).  Connects first if needed."""
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(payload)
            replies = [self.reader.reply() for _ in range(nreplies)]
        except (OSError, ConnectionError) as e:
            self.drop("io: %s" % e)
            raise ConnectionError(str(e))
        if any(isinstance(r, RespError) and r.startswith(("LOADING", "MASTERDOWN", "TRYAGAIN"))
               for r in replies):
            self.drop("server not ready: %s" % replies[0])
            raise ConnectionError("server not ready")
        self._ok()
        return replies


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--count", type=int, default=20000, help="SETs to attempt")
    ap.add_argument("--duration", type=float, default=60.0, help="bound on the write phase, s")
    ap.add_argument("--stop-file", default="",
                    help="end the write phase (normally) once this file exists")
    ap.add_argument("--incr-every", type=int, default=10)
    ap.add_argument("--max-outage", type=float, default=20.0)
    ap.add_argument("--io-timeout", type=float, default=1.0,
                    help="a reply slower than this drops the connection (request indeterminate)")
    ap.add_argument("--connect-timeout", type=float, default=0.005,
                    help="a connect slower than this is retried: a SYN sent before the service "
                         "address moved is lost, and a responsive client retries soon")
    ap.add_argument("--progress-every", type=int, default=500)
    ap.add_argument("--rate", type=float, default=0.0, help="SETs per second at most (0: no limit)")
    ap.add_argument("--prefix", default="j%d" % os.getpid())
    ap.add_argument("--readback-timeout", type=float, default=60.0)
    a = ap.parse_args()

    t0 = time.monotonic()
    cl = Client(a.host, a.port, a.max_outage, t0 + a.duration, a.io_timeout,
                a.connect_timeout)
    nonce = os.urandom(4).hex()
    acked = {}             # key -> value, for every acknowledged SET
    indeterminate = 0
    incr_acked_max = 0
    incr_prev = 0
    incr_nonmonotonic = 0
    stopped = None
    i = 0
    try:
        while i < a.count and time.monotonic() < cl.deadline:
            if a.stop_file and i % 50 == 0 and os.path.exists(a.stop_file):
                break  # the driver is done with its legs: the write phase ends here
            if a.rate > 0:
                ahead = t0 + i / a.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            key, val = "%s:%d" % (a.prefix, i), "v:%d:%s" % (i, nonce)
            try:
                r = cl.call(encode("SET", key, val))[0]
            except ConnectionError:
                indeterminate += 1
                i += 1
                continue
            if r == b"OK":
                acked[key] = val
            else:
                cl.errors.append([time.monotonic(), "SET %s: %r" % (key, r)])
            if a.incr_every and i % a.incr_every == 0:
                try:
                    n = cl.call(encode("INCR", "%s:counter" % a.prefix))[0]
                    if isinstance(n, int):
                        if n <= incr_prev:
                            incr_nonmonotonic += 1
                        incr_prev = n
                        incr_acked_max = max(incr_acked_max, n)
                except ConnectionError:
                    indeterminate += 1
            i += 1
            if a.progress_every and len(acked) % a.progress_every == 0 and acked:
                emit({"progress": len(acked), "t": time.monotonic()})
        if i < a.count and not (a.stop_file and os.path.exists(a.stop_file)):
            stopped = "duration bound reached after %d of %d writes" % (i, a.count)
    except Outage as e:
        stopped = str(e)
    t_write_end = time.monotonic()

    # Read back every acknowledged key (and the counter), pipelined.
    cl.deadline = time.monotonic() + a.readback_timeout
    cl.max_outage = a.readback_timeout
    keys = list(acked)
    found = {}
    counter = None
    readback_error = None
    batch = 500
    pos = 0
    try:
        while pos < len(keys):
            chunk = keys[pos:pos + batch]
            try:
                replies = cl.call(b"".join(encode("GET", k) for k in chunk), len(chunk))
            except ConnectionError:
                continue
            for k, v in zip(chunk, replies):
                found[k] = v.decode() if isinstance(v, bytes) else None
            pos += batch
        while counter is None:
            try:
                v = cl.call(encode("GET", "%s:counter" % a.prefix))[0]
                counter = int(v) if v is not None else 0
            except ConnectionError:
                continue
    except Outage as e:
        readback_error = "read-back: " + str(e)

    survived = sum(1 for k, v in acked.items() if found.get(k) == v)
    lost_keys = [k for k, v in acked.items() if k in found and found[k] != v]
    counter_lost = int(counter is not None and counter < incr_acked_max)
    lost = len(lost_keys) + counter_lost
    ok = lost == 0 and readback_error is None and stopped is None and incr_nonmonotonic == 0
    emit({
        "acked": len(acked), "survived": survived, "lost": lost,
        "unread": len(acked) - len(found), "indeterminate": indeterminate,
        "attempted": i, "lost_keys": lost_keys[:10],
        "counter": {"acked_max": incr_acked_max, "final": counter, "lost": counter_lost,
                    "nonmonotonic": incr_nonmonotonic},
        "connections": cl.connections, "gaps": cl.gaps, "errors": cl.errors[:50],
        "t_start": t0, "t_write_end": t_write_end, "elapsed": time.monotonic() - t0,
        "stopped": stopped, "readback_error": readback_error, "ok": ok,
    })
    if lost:
        return 1
    return 0 if ok else 2


def switchover(report, t_event):
    """Seconds from T_EVENT (monotonic) to the first successful reply on a
    connection opened after it; when the client never reconnected (connection
    kept across the switch), to the end of the reply gap spanning T_EVENT.
    None when neither happened."""
    for _start, _conn, first_ok in report["connections"]:
        if _start >= t_event and first_ok is not None:
            return first_ok - t_event
    for last_ok, next_ok in report["gaps"]:
        if last_ok <= t_event < next_ok:
            return next_ok - t_event
    return None


def jepsen_line(report):
    return ("acked %d  survived %d  lost %d  (indeterminate %d, counter %s/%s)" %
            (report["acked"], report["survived"], report["lost"], report["indeterminate"],
             report["counter"]["final"], report["counter"]["acked_max"]))


# ---------------------------------------------------------------------------
# Driver side: start this client in a node, act mid-stream, collect the report.


class Stream:
    """This client running in NODE (a netns.Node) against HOST:PORT."""

    def __init__(self, node, host, port=6379, count=20000, duration=60.0, io_timeout=1.0,
                 max_outage=20.0, rate=0, extra=()):
        import threading
        self.argv = [sys.executable, os.path.abspath(__file__), "--host", host, "--port", port,
                     "--count", count, "--duration", duration, "--io-timeout", io_timeout,
                     "--max-outage", max_outage, "--rate", rate] + list(extra)
        self.bound = duration + max_outage + 90   # write phase + read-back + slack
        self.t0 = time.monotonic()
        self.proc = node.start(self.argv)
        self.lines, self.err = [], b""
        self.progress = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if "progress" in doc:
                self.progress = doc["progress"]
            self.lines.append(doc)

    def wait_progress(self, acked, timeout=60.0):
        """Block until ACKED writes were acknowledged (False if the client ended
        or TIMEOUT passed first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.progress >= acked:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.002)
        return False

    def require_progress(self, more, what, timeout=60.0, context=None):
        """MORE writes acknowledged from now within TIMEOUT, or the test fails
        saying WHAT, with the client's report and stderr, and CONTEXT() (a
        callable returning more text to show, called once on failure)."""
        import harness
        want = self.progress + more
        if self.wait_progress(want, timeout=timeout):
            return
        extra = context() if context else ""
        rep, rc, err = self.finish()
        harness.fail("the client did not make progress %s (wanted %d acked, rc %s): %s\n%s%s" %
                     (what, want, rc, rep and jepsen_line(rep),
                      err.decode(errors="replace")[-2000:], "\n" + extra if extra else ""))

    def finish(self):
        """Wait for the report (bounded); returns (report dict or None, rc, stderr)."""
        import harness
        try:
            self.proc.wait(timeout=max(1.0, self.t0 + self.bound - time.monotonic()))
        except Exception:
            harness._kill_group(self.proc)
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        self.err = self.proc.stderr.read() if self.proc.stderr else b""
        if self.proc in harness._children:
            harness._children.remove(self.proc)
        reports = [l for l in self.lines if "acked" in l]
        return (reports[-1] if reports else None), self.proc.returncode, self.err


if __name__ == "__main__":
    sys.exit(main())
