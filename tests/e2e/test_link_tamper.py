#!/usr/bin/env python3
"""A tampering proxy on the replication link is refused; no acknowledged write is lost.

Each trial, on fresh namespaces: understudyd on node B, redis-server under
`understudy run` on node A whose --backup is a tampering proxy on node D
(tests/e2e/tamper_proxy.py; the proxy forwards to B), a client on node C
writing distinctive SETs to the service address.  Once the stream runs, the
proxy tampers once, in one of these modes:

  flip       one bit of a JOURNAL message from the recorder
  content    16 bytes of one, and the frame checksum recomputed where the
             format shows one in clear (it does not any more)
  drop       one JOURNAL message from the recorder not forwarded
  forge-ack  a JOURNAL message with a stream ACK for seq 2^40 sent to the
             recorder (a valid journal frame, checksum and all)
  role       the recorder's AUTH_HELLO role rewritten to admin
  replay     the recorder's connection so far sent again on a new connection

For each: the side that receives the tampered bytes refuses them with a line
naming the cause (the daemon's alarm or refusal, or the recorder's ALARM),
the link recovers by itself (reconnect and resume: the client keeps getting
replies), and after node A is killed the backup takes over and the client's
read-back shows lost = 0.  In every trial no recorded client byte (the SET
keys, a distinctive prefix) appears in clear among the bytes the proxy
forwarded, while the backup's replica (plain on its disk) does hold them.
One ctest per mode (CASES: e2e.test_link_tamper.flip, ...), about 10 s
each; with no argument every mode runs in turn.
Needs: root, network namespaces, understudyd + `understudy run`,
redis-server, redis-cli."""
import json
import os
import re
import sys
import threading
import time

import jepsen_client
import netns
from harness import expect, fail, log, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]
HERE = os.path.dirname(os.path.abspath(__file__))
PROXY = os.path.join(HERE, "tamper_proxy.py")
PROXY_PORT = 7700
COUNT, RATE = 3000, 1500      # a 2 s stream: tamper at ~20 %, kill A at ~70 %
MISSED = 5                    # 500 ms budget: a reconnect after tampering is
                              # never mistaken for the primary's death

# What each mode's refusal says, and whose log says it.
EXPECT = {
    "flip": ("understudyd", r"ALARM: link to .*: message \d+ failed authentication "
                            r"\(altered or forged\); tearing down"),
    "content": ("understudyd", r"ALARM: link to .*: message \d+ failed authentication "
                               r"\(altered or forged\); tearing down"),
    "drop": ("understudyd", r"ALARM: link to .*: message \d+ arrived where \d+ was due: 1 "
                            r"message\(s\) missing \(dropped on the way\); tearing down"),
    "forge-ack": ("run", r"ALARM: link to .*: message \d+ failed authentication "
                         r"\(altered or forged\); tearing down"),
    "role": ("run", r"does not hold our cluster key, or the handshake was altered on the way"),
    "replay": ("understudyd", r"refused connection from .*\(recorder\) failed authentication: "
                              r"it does not hold the cluster key, or it replays or alters a "
                              r"recorded handshake"),
}
# The daemon also learns of the role rewrite: the recorder tells it why it
# hangs up.
ALSO = {"role": ("understudyd", r"refused connection from .*altered on the way")}
# The alarm the daemon's `status` keeps for each mode (the forged ack is seen
# by the recorder alone: its ALARM line above is the alarm).
STATUS_ALARM = {
    "flip": r"failed authentication \(altered or forged\)",
    "content": r"failed authentication \(altered or forged\)",
    "drop": r"missing \(dropped on the way\)",
    "role": r"refused connection from .*altered on the way",
    "replay": r"refused connection from .*replays or alters a recorded handshake",
}
CASES = list(EXPECT)


class ProxiedCluster(netns.Cluster):
    """netns.Cluster whose recorder reaches the backup through PROXY_NODE."""

    def __init__(self, net, proxy_node, **kw):
        super().__init__(net, **kw)
        self.proxy_node = proxy_node

    def run_argv(self, app_argv, key=None):
        argv = super().run_argv(app_argv, key)
        i = argv.index("--backup")
        argv[i + 1] = "%s:%d" % (self.proxy_node.ip, PROXY_PORT)
        return argv


class Proxy:
    def __init__(self, node, upstream, mode, capture, after):
        self.events, self.lock = [], threading.Lock()
        self.proc = node.start(["python3", PROXY, "--listen", "0.0.0.0:%d" % PROXY_PORT,
                                "--upstream", upstream, "--mode", mode, "--after", after,
                                "--capture", capture])
        threading.Thread(target=self._read, daemon=True).start()
        if not self.wait(lambda e: e["event"] == "listening", 10):
            fail("the tampering proxy did not start: %s" % self.proc.stderr.read()[-2000:])

    def _read(self):
        for raw in self.proc.stdout:
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            with self.lock:
                self.events.append(doc)

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                hit = [e for e in self.events if pred(e)]
            if hit:
                return hit[0]
            if self.proc.poll() is not None:
                return None
            time.sleep(0.02)
        return None


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def wait_line(path, pattern, timeout):
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        for line in read(path).splitlines():
            if rx.search(line):
                return line.strip()
        time.sleep(0.05)
    return None


def acked_seq(cl):
    _, doc = cl.status(check=False)
    p = (doc or {}).get("primary", {})
    return int(p.get("acked_seq", 0)), bool(p.get("connected"))


def replica_bytes(data_dir):
    out = b""
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            if name.endswith(".seg"):
                with open(os.path.join(root, name), "rb") as f:
                    out += f.read()
    return out


def trial(mode):
    t0 = time.monotonic()
    marker = ("tamper%s%d" % (mode.replace("-", ""), os.getpid())).encode()
    with netns.Net(labels=("A", "B", "C", "D")) as net, \
            ProxiedCluster(net, net.node("D"), missed_heartbeats=MISSED) as cl:
        a, b, c, d = (net.node(x) for x in "ABCD")
        capture = os.path.join(cl.dir, "wire.bin")
        proxy = Proxy(d, "%s:%d" % (b.ip, netns.PEER_PORT), mode, capture,
                      after=60 if mode != "replay" else 40)
        cl.start_backup()
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        stream = jepsen_client.Stream(c, net.vip, count=COUNT, rate=RATE, duration=30,
                                      io_timeout=0.1, extra=["--prefix", marker.decode()])
        if not stream.wait_progress(COUNT // 5, timeout=30):
            rep, rc, err = stream.finish()
            fail("%s: the client stopped before %d acked writes (rc %s): %s" %
                 (mode, COUNT // 5, rc, err.decode(errors="replace")[-2000:]))
        ev = proxy.wait(lambda e: e["event"] == "tampered", 15)
        expect(ev is not None, "%s: the proxy never tampered (events: %s)" %
               (mode, proxy.events[-5:]))
        who, pattern = EXPECT[mode]
        line = wait_line(cl.log_path(who), pattern, 10)
        expect(line is not None, "%s: %s logged no refusal matching %r after: %s\n%s" %
               (mode, who, pattern, ev["what"], read(cl.log_path(who))[-3000:]))
        also = None
        if mode in ALSO:
            also = wait_line(cl.log_path(ALSO[mode][0]), ALSO[mode][1], 10)
            expect(also is not None, "%s: %s logged no line matching %r" %
                   (mode, ALSO[mode][0], ALSO[mode][1]))
        if mode in STATUS_ALARM:
            rx, alarm = re.compile(STATUS_ALARM[mode]), None
            deadline = time.monotonic() + 10
            while alarm is None and time.monotonic() < deadline:
                _, doc = cl.status(check=False)
                alarm = next((x for x in (doc or {}).get("alarms", []) if rx.search(x)), None)
                if alarm is None:
                    time.sleep(0.1)
            expect(alarm is not None, "%s: the backup's status shows no alarm matching %r: %s" %
                   (mode, STATUS_ALARM[mode], (doc or {}).get("alarms")))
        # The link recovers by itself: the stream keeps being acked.
        seen = stream.progress
        expect(stream.wait_progress(max(seen + 300, int(COUNT * 0.7)), timeout=20),
               "%s: replication did not recover after the tampering (client acked %d, then "
               "stalled)" % (mode, seen))
        a.link(False)
        a.kill_all()
        rep, rc, err = stream.finish()
        expect(rep is not None, "%s: the client printed no report (exit %s): %s" %
               (mode, rc, err.decode(errors="replace")[-2000:]))
        expect(rep["lost"] == 0, "%s: acknowledged writes lost: %s; first lost: %s" %
               (mode, jepsen_client.jepsen_line(rep), rep["lost_keys"]))
        expect(rep["ok"], "%s: the client did not finish cleanly: %s (stopped: %s, read-back: "
               "%s)" % (mode, jepsen_client.jepsen_line(rep), rep["stopped"],
                        rep["readback_error"]))
        holders = net.vip_holders()
        expect("B" in holders, "%s: service address not on B after the kill (holders %s; B: %s)" %
               (mode, holders, b.ip_cmd("-4", "-o", "addr", "show", check=False).stdout))
        wire = open(capture, "rb").read()
        replica = replica_bytes(os.path.join(cl.dir, "backup-data"))
        expect(marker in replica, "%s: the replica does not hold the client's keys %r: the "
               "clear-text check below would prove nothing" % (mode, marker))
        expect(len(wire) > 100000, "%s: the proxy forwarded only %d bytes" % (mode, len(wire)))
        expect(marker not in wire, "%s: recorded client bytes %r appear in clear on the wire" %
               (mode, marker))
        log("%-9s %s -> %s: %s%s; %s; %d wire bytes, none in clear; %.1f s" %
            (mode, ev["what"], who, line[-120:], " (daemon: %s)" % also[-80:] if also else "",
             jepsen_client.jepsen_line(rep), len(wire), time.monotonic() - t0))


def main():
    modes = sys.argv[1:] or CASES
    for mode in modes:
        trial(mode)


if __name__ == "__main__":
    run_main(main)
