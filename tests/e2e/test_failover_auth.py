#!/usr/bin/env python3
"""The backup refuses peers without the cluster key and survives garbage.

1. understudyd on node B holds key K; `understudy run` on node A with
   another key (a fresh `understudy keygen`) must exit non-zero within 30 s,
   saying why (its message names the key / authentication), and the daemon
   must log the refusal -- and keep running.
2. Random bytes to the admin socket and the peer port are dropped (closed
   connection or error), a well-framed but malformed admin request gets an
   error reply; afterwards `understudy status` still answers.
3. Control: `understudy run` with the right key then protects redis (PING
   through the service address answers).
Needs: root, network namespaces, understudyd + `understudy keygen/run/
status`, redis-server, redis-cli."""
import os
import re
import socket
import struct
import time

import netns
from harness import expect, fail, log, run, run_main

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli"]

ADMIN_REQUEST, ADMIN_REPLY = 20, 21   # cluster/peer_link.h LinkType
REFUSAL = re.compile(r"auth|key|refus|denied|reject|unauthori", re.I)


def daemon_log(cl):
    with open(cl.log_path("understudyd"), "rb") as f:
        return f.read().decode(errors="replace")


def garbage_admin(path, blobs):
    """Send each blob on a fresh admin connection; return what came back."""
    replies = []
    for blob in blobs:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(path)
            s.sendall(blob)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while len(data) < 4096:
                d = s.recv(4096)
                if not d:
                    break
                data += d
            replies.append(data)
        except socket.timeout:
            replies.append(None)    # no answer within 3 s: reported below
        except OSError as e:
            replies.append(("%s" % e).encode())
        finally:
            s.close()
    return replies


def main():
    with netns.Net() as net, netns.Cluster(net) as cl:
        a, b = net.node("A"), net.node("B")
        cl.start_backup()

        # 1. a peer with the wrong key
        wrong = cl.keygen(os.path.join(cl.dir, "wrong.key"))
        argv = a.argv(cl.run_argv(netns.redis_argv(net.tmpdir("redis-wrong")), key=wrong))
        r = run(argv, timeout=30)
        expect(not r.timed_out, "`understudy run` with a wrong key did not give up in 30 s", r)
        expect(r.rc != 0, "`understudy run` with a wrong key exited 0", r)
        expect(REFUSAL.search(r.err + r.out), "the refusal message does not say why "
               "(expected it to mention the key / authentication)", r)
        log("wrong key: run exit %d: %s" % (r.rc, (r.err.strip() or r.out.strip())
                                            .splitlines()[-1]))
        # The run gave up when the daemon hung up; the daemon's log line about
        # it may be written just after: wait for it (bounded), not a fixed time.
        deadline = time.monotonic() + 10
        while True:
            refusals = [l for l in daemon_log(cl).splitlines() if REFUSAL.search(l)]
            if refusals or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        expect(refusals, "understudyd logged no refusal of the peer with the wrong key:\n" +
               daemon_log(cl)[-3000:])
        log("daemon logged: %s" % refusals[-1].strip())
        expect(cl.daemon.poll() is None, "understudyd exited after refusing a peer")
        expect(not net.vip_holders(), "a refused peer got the service address: %s" %
               net.vip_holders())

        # 2. garbage to the admin socket and to the peer port.  Raw random
        # bytes (not even a link message: the daemon may just hang up), then
        # well-framed ADMIN_REQUEST messages (cluster/peer_link.h: u32 length,
        # u8 type 20) whose payload is not an AdminRequest: each must get an
        # ADMIN_REPLY (type 21) carrying AdminReply.error (field 1, bytes).
        raw = [os.urandom(64), os.urandom(4096), b"\xff" * 16 + b"\n", b"\n"]
        replies = garbage_admin(cl.admin, raw)
        for blob, rep in zip(raw, replies):
            expect(rep is not None, "admin socket: no reply and no close within 3 s to %d "
                   "random bytes %r..." % (len(blob), blob[:16]))
        framed = [os.urandom(40), b"\xff" * 8, b"\x0a\xff\xff\xff\xff\x0f", b"{\"cmd\": 42}"]
        replies = garbage_admin(cl.admin, [struct.pack("<IB", len(p), ADMIN_REQUEST) + p
                                           for p in framed])
        for payload, rep in zip(framed, replies):
            expect(rep is not None and len(rep) >= 6 and rep[4] == ADMIN_REPLY and rep[5] == 0x0A,
                   "admin socket: a malformed AdminRequest %r got %r, not an ADMIN_REPLY "
                   "carrying an error" % (payload[:16], rep and rep[:80]))
        log("admin socket, malformed request -> %r" % replies[0][5:120])
        probe = ("import socket,os\nfor n in (16, 4096, 70000):\n"
                 "    s = socket.create_connection(('%s', %d), timeout=3)\n"
                 "    try:\n        s.sendall(os.urandom(n)); s.recv(1024)\n"
                 "    except OSError:\n        pass\n    s.close()\n" % (b.ip, netns.PEER_PORT))
        pr = a.run(["python3", "-c", probe], timeout=30)
        expect(pr.rc == 0, "could not send garbage to the peer port", pr)
        expect(cl.daemon.poll() is None, "understudyd exited after malformed input")
        st, doc = cl.status(check=False)
        expect(st.rc == 0, "`understudy status` fails after malformed requests", st)
        log("status after garbage: %s" % (doc if doc is not None else st.out.strip()[:200]))

        # 3. control: the right key works
        cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
        log("right key: service answers on %s" % net.vip)
        if not net.vip_holders() == ["A"]:
            fail("service address holders after a good start: %s" % net.vip_holders())


if __name__ == "__main__":
    run_main(main)
