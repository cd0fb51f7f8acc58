#!/usr/bin/env python3
"""A static binary protected by `understudy run` fails over with nothing lost
(issue 14 part 5): the ptrace backend records it on node A, with output
commit, and replicates the journal to node B.  In active-active B's shadow
is `understudy replay --follow`, replaying the replica as it arrives; at
failover it rebuilds the program's listening socket, epoll set and
connections inside it and lets it serve.  In active-passive B runs no copy
(the ptrace backend takes no checkpoints) and replays the replica from seq 1
at failover (`understudy replay --go-live`).

The program is tests/e2e/ptrace_src/static_kv.c, a small RESP key-value
server built here with `gcc -static`, so LD_PRELOAD cannot load into it;
`understudy run` must say it chose the ptrace backend.  A client on node C
streams SETs and INCRs at a bounded rate; at 50 % of the stream:

    unplanned       node A dies (link down, SIGKILL of every process in it)
    planned         `understudy failover`
    passive         active-passive, node A dies: B replays from seq 1
    go              as unplanned, with tests/e2e/ptrace_src/go_kv.go instead: a
                    Go server (CGO_ENABLED=0, as Debian's golang-go builds it),
                    a goroutine per connection, Go's runtime threads
    node            as unplanned, with tests/e2e/node_src/node_kv.js on
                    Debian's node instead: a dynamic binary that `understudy
                    run` gives to the ptrace backend by itself (Node's runtime
                    threads hand work over through atomics)
    backup_stopped  output commit first: B's understudyd is stopped (SIGSTOP)
                    for 0.8 s, during which no write may be acknowledged (the
                    tracer holds every reply until the backup acks its
                    request); then node A dies and B, continued, takes over

Jepsen-style: acked / survived / lost, lost = 0 the only pass; the service
address ends on B, the old primary answers nobody; prints the switchover and
the failover line (replay time, events).
Needs: root, network namespaces, gcc (static libc), go, understudyd +
`understudy run/status/failover`, redis-cli."""
import os
import signal
import subprocess
import sys
import time

import harness
import jepsen_client
import netns
from harness import expect, log, run_main

NEEDS = netns.CLUSTER + ["gcc", "go", "node", "redis-cli"]
CASES = ["unplanned", "planned", "passive", "backup_stopped", "go", "node"]

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ptrace_src", "static_kv.c")
GO_SRC = os.path.join(os.path.dirname(SRC), "go_kv.go")
NODE_SRC = os.path.join(os.path.dirname(os.path.dirname(SRC)), "node_src", "node_kv.js")
COUNT = 3000
RATE = 500


def build_go(tmp):
    exe = os.path.join(tmp, "go_kv")
    env = dict(os.environ, GOCACHE=os.path.join(tmp, "gocache"), GOPATH=os.path.join(tmp, "gopath"),
               HOME=tmp, CGO_ENABLED="0", GO111MODULE="off")
    r = subprocess.run(["go", "build", "-o", exe, GO_SRC], capture_output=True, timeout=300, env=env,
                       cwd=tmp)
    expect(r.returncode == 0, "go build failed: %s" % r.stderr.decode(errors="replace"))
    return exe


def build(tmp):
    exe = os.path.join(tmp, "static_kv")
    r = subprocess.run(["gcc", "-static", "-O1", "-o", exe, SRC], capture_output=True, timeout=120)
    expect(r.returncode == 0, "gcc -static failed: %s" % r.stderr.decode(errors="replace"))
    return exe


def main(kind):
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, c = net.node("A"), net.node("C")
        if kind == "node":
            program = ["node", NODE_SRC]
        else:
            program = [build_go(net.tmpdir("bin")) if kind == "go" else build(net.tmpdir("bin"))]
        passive = kind == "passive"
        if passive:
            cl.mode_args = ["--mode", "active-passive"]
        cl.start_backup()
        cl.start_primary(program + [netns.REDIS_PORT])
        with open(cl.log_path("run"), "rb") as f:
            run_log = f.read().decode(errors="replace")
        what = kind if kind in ("go", "node") else "a static binary"
        expect("backend ptrace:" in run_log,
               "understudy run did not say it chose the ptrace backend for %s:\n%s" %
               (what, run_log[-2000:]))
        _, st = cl.status()
        body = (st or {}).get("status", st or {})
        log("B before the failover: shadow %s" % body.get("shadow"))
        if passive:
            expect(int(body.get("shadow", {}).get("pid", 0) or 0) == 0,
                   "active-passive: B runs a shadow: %s" % body.get("shadow"))
        io_timeout = 1.0 if kind == "planned" else 0.1
        stream = jepsen_client.Stream(c, net.vip, count=COUNT, duration=90, io_timeout=io_timeout,
                                      rate=RATE, extra=["--progress-every", "5"])
        stream.require_progress(COUNT // 2, "before the failover", timeout=60)
        # The kmod escape audit runs for the ptrace backend too (issue 14
        # part 4): the kernel saw no watched call the tracer did not let through.
        _, st = cl.status()
        body = (st or {}).get("status", st or {})
        prim = body.get("primary", {})
        if not passive:
            sh = body.get("shadow", {})
            log("B's shadow mid-stream: %s" % sh)
            expect(sh.get("state") == "running" and int(sh.get("pid", 0) or 0) > 0 and
                   sh.get("healthy"), "B's ptrace shadow is not running mid-stream: %s" % sh)
        log("A's escape audit as B shows it: %s, %s escapes %s" %
            (prim.get("audit"), prim.get("audit_escapes", 0), prim.get("audit_detail", "")))
        expect(prim.get("audit") == "on" and int(prim.get("audit_escapes", 0) or 0) == 0,
               "the escape audit of the ptrace-recorded primary is not on with 0 escapes: %s" % prim)
        t_event = time.monotonic()
        doc = None
        if kind == "planned":
            _, doc = cl.failover(timeout=120)
        elif kind == "backup_stopped":
            before = stream.progress
            os.kill(cl.daemon.pid, signal.SIGSTOP)
            try:
                time.sleep(0.8)
                during = stream.progress - before
                log("acked while the backup was stopped for 0.8 s: %d (at %d/s before)" %
                    (during, RATE))
                # A reply already past the gate when the daemon stopped can
                # still arrive (and one progress line covers 5 writes).
                expect(during <= 10, "%d writes were acknowledged while the backup could not "
                       "ack anything: output commit does not hold them" % during)
                t_event = time.monotonic()
                a.link(False)
                a.kill_all()
            finally:
                os.kill(cl.daemon.pid, signal.SIGCONT)
        else:  # unplanned, passive, go, node
            a.link(False)
            a.kill_all()
        rep, rc, err = stream.finish()
        expect(rep is not None, "the client printed no report (exit %s): %s" %
               (rc, err.decode(errors="replace")[-2000:]))
        line = jepsen_client.jepsen_line(rep)
        log("%s: %s" % (kind, line))
        expect(rep["lost"] == 0, "%s failover of the ptrace backend lost acknowledged writes: %s; "
               "first lost: %s" % (kind, line, rep["lost_keys"]))
        expect(rep["ok"], "%s failover: the client did not finish cleanly: %s (stopped: %s, "
               "read-back: %s)" % (kind, line, rep["stopped"], rep["readback_error"]))
        expect(rep["acked"] >= COUNT // 2, "too few writes acked: %s" % line)
        switch = jepsen_client.switchover(rep, t_event)
        expect(switch is not None, "%s failover: no client reply after the event" % kind)
        holders = net.vip_holders()
        expect("B" in holders, "service address %s not on node B after the failover (holders: %s)"
               % (net.vip, holders))
        if kind == "planned":
            old = netns.probe_redis(c, a.ip)
            expect(old != "+PONG", "the old primary on %s still answers after the failover" % a.ip)
        with open(cl.log_path("understudyd"), "rb") as f:
            dlog = f.read().decode(errors="replace")
        lines = [l for l in dlog.splitlines() if "NOW PRIMARY" in l]
        expect(lines, "B's log has no go-live:\n" + dlog[-3000:])
        if passive:
            expect("replay from seq 1 (ptrace backend)" in lines[-1],
                   "active-passive: B did not replay from seq 1:\n" + lines[-1])
        else:
            expect("shadow running -> live" in dlog,
                   "B did not promote its ptrace shadow:\n" + dlog[-3000:])
        log("switchover %.1f ms (event -> first reply from B); %s" %
            (1000 * switch, lines[-1].split("NOW PRIMARY: ", 1)[-1]))
        if doc is not None:
            log("failover reply timings: %s" % doc.get("failover", doc).get("timings"))
        if kind == "planned":
            restart_daemon(cl, c, net)


def restart_daemon(cl, c, net):
    """The live service must not depend on understudyd (issue 12 part 4, for
    the ptrace backend too): SIGTERM the daemon on B, the service answers;
    start it again on the same --data, it adopts the service."""
    _, before = cl.status()
    pid = int((before or {}).get("status", before or {}).get("shadow", {}).get("pid", 0) or 0)
    expect(pid > 0, "no live service pid in B's status: %s" % before)
    cl.daemon.send_signal(signal.SIGTERM)
    try:
        cl.daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        harness.fail("understudyd did not exit within 30 s of SIGTERM")
    answer = netns.probe_redis(c, net.vip)
    expect(answer == "+PONG", "the service does not answer with understudyd stopped: %s" % answer)
    cl.start_backup()
    _, after = cl.status()
    body = (after or {}).get("status", after or {})
    expect(int(body.get("shadow", {}).get("pid", 0) or 0) == pid,
           "the restarted daemon did not adopt the live service (pid %d): %s" % (pid, body.get("shadow")))
    answer = netns.probe_redis(c, net.vip)
    expect(answer == "+PONG", "the service does not answer after the daemon restart: %s" % answer)
    with open(cl.log_path("understudyd"), "rb") as f:
        dlog = f.read().decode(errors="replace")
    expect("a ptrace backend service" in dlog, "the restarted daemon did not recognise the ptrace "
           "service:\n" + dlog[-2000:])
    log("understudyd restarted on B: the service (pid %d) answered throughout and was adopted" % pid)


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1] if len(sys.argv) > 1 else "unplanned"))
