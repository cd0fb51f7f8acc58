"""Shared pieces of the re-integration tests (issue 12 part 5):
test_reintegration.py and test_reintegration_checkpoint.py.

Daemon: understudyd on one node of a netns.Cluster, with its own --data,
admin socket and log, and the admin calls the tests make of it (status,
wait for a state, `backup add` that must succeed or fail).  Also: a node's
crash as after a power cut (crash_node), the first seq a replica holds
(replica_first_seq), and a re-integration with its timings (rejoin)."""
import os
import time

import harness
import netns
from harness import expect, fail, log


class Daemon:
    """understudyd on one node, with its own --data, admin socket and logs."""

    def __init__(self, net, cl, label, data=None):
        self.net, self.cl, self.label = net, cl, label
        self.node = net.node(label)
        self.name = "node" + label
        self.admin = os.path.join(cl.dir, "admin-%s.sock" % label)
        self.data = data or os.path.join(cl.dir, "data-%s" % label)
        self.log = os.path.join(cl.dir, "understudyd-%s.log" % label)
        self.proc = None

    def start(self, timeout=30):
        argv = [netns.UNDERSTUDYD, "--listen", "%s:%d" % (self.node.ip, netns.PEER_PORT),
                "--data", self.data, "--key", self.cl.key, "--admin-socket", self.admin,
                "--service-address", "%s/%d" % (self.net.vip, self.net.cidr),
                "--service-dev", netns.NODE_DEV, "--heartbeat-ms", self.cl.heartbeat_ms,
                "--missed-heartbeats", self.cl.missed, "--node-name", self.name]
        out = open(self.log, "ab")
        self.proc = self.node.start(argv, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail("understudyd on %s exited (%s) at start:\n%s" %
                     (self.label, self.proc.returncode, self.tail()))
            if os.path.exists(self.admin) and self.status()[1] is not None:
                return
            time.sleep(0.05)
        fail("understudyd on %s did not answer within %d s:\n%s" % (self.label, timeout,
                                                                     self.tail()))

    def tail(self, n=5000):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def status(self):
        return self.cl._admin_json([harness.UNDERSTUDY, "status", "--admin", self.admin, "--json"],
                                   False, 15)

    def wait(self, what, pred, timeout=60):
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            _, doc = self.status()
            if doc is not None and pred(doc):
                return doc
            time.sleep(0.02)
        fail("%s: %s not reached within %d s; last status: %s\nlog:\n%s" %
             (self.label, what, timeout, doc and {k: doc.get(k) for k in
                                                  ("state", "state_reason", "shadow", "backup")},
              self.tail()))

    def backup_add_fails(self, target_addr, want, why):
        """`backup add TARGET_ADDR` asked of this daemon must fail, saying WANT."""
        r = harness.run([harness.UNDERSTUDY, "backup", "add", target_addr, "--admin", self.admin,
                         "--timeout-ms", "5000"], timeout=60)
        expect(r.rc == 1 and want in r.err,
               "backup add %s asked of %s (%s): wanted exit 1 saying %r, got %s: %s%s" %
               (target_addr, self.label, why, want, r.rc, r.out, r.err))
        log("error (%s): %s" % (why, r.err.strip()))

    def backup_add(self, target, extra=()):
        r, doc = self.cl._admin_json([harness.UNDERSTUDY, "backup", "add", "%s:%d" % (
            target.node.ip, netns.PEER_PORT), "--admin", self.admin, "--json",
            "--timeout-ms", "90000"] + list(extra), False, 150)
        expect(r.rc == 0 and doc is not None,
               "backup add %s asked of %s failed (exit %s): %s\n%s log:\n%s\n%s log:\n%s" %
               (target.label, self.label, r.rc, r.err.strip(), self.label, self.tail(),
                target.label, target.tail()))
        return doc


def crash_node(net, node):
    """NODE dies: link down, every process SIGKILLed, and the service
    address gone as after a reboot (`understudy run` adds it as /32, a
    go-live as /CIDR).  Returns the monotonic time of the event."""
    t = time.monotonic()
    node.link(False)
    node.kill_all()
    for plen in (32, net.cidr):
        node.ip_cmd("addr", "del", "%s/%d" % (net.vip, plen), "dev", netns.NODE_DEV, check=False)
    expect(not node.has_addr(net.vip), "could not remove %s from node %s" % (net.vip, node.label))
    return t


def replica_first_seq(daemon):
    """The first seq of the replica DAEMON protects now: the base of its
    lowest segment file (journal/format.h names them by it)."""
    _, doc = daemon.status()
    rdir = ((doc or {}).get("replica") or {}).get("dir", "")
    expect(rdir != "", "%s: status names no replica directory: %s" % (daemon.label, doc))
    segs = sorted(n for n in os.listdir(rdir) if n.endswith(".seg"))
    expect(segs, "%s: replica %s holds no segment" % (daemon.label, rdir))
    return int(segs[0][:-4]), rdir


def rejoin(primary, backup, name, ready, extra=()):
    """`backup add BACKUP` asked of PRIMARY; then waits until READY(status
    of BACKUP) and PRIMARY says the backup is protected.  Returns the
    backup add reply (--json) with "attach_ms" and "ready_ms" added."""
    t0 = time.monotonic()
    doc = primary.backup_add(backup, extra)
    attach_ms = 1000 * (time.monotonic() - t0)
    backup.wait("%s ready" % name, ready, timeout=120)
    ready_ms = 1000 * (time.monotonic() - t0)
    st = primary.wait("backup protected",
                      lambda d: d.get("backup", {}).get("state") == "protected")
    b = st["backup"]
    log("%s: backup add -> output commit on %.0f ms (from seq %s to %d, %.1f MiB, term %s; "
        "checkpoint mark %s, pause %s ms, image %s MB, ship %s ms, catch-up %s ms%s); "
        "-> the backup ready %.0f ms; lag now %s events" %
        (name, attach_ms, doc.get("from_seq"), doc["caught_up_seq"], doc["bytes"] / 2**20,
         doc["epoch"], doc.get("mark_seq", 0), doc.get("freeze_ms"), doc.get("image_mb"),
         doc.get("ship_ms"), doc.get("catch_up_ms"),
         "; FELL BACK: " + doc["fallback"] if doc.get("fallback") else "",
         ready_ms, b.get("lag", {}).get("events")))
    doc["attach_ms"], doc["ready_ms"] = attach_ms, ready_ms
    return doc
