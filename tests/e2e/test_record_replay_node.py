#!/usr/bin/env python3
"""Node.js, whose runtime threads hand work over through plain atomics
(issue 13 part 6; docs/ptrace.md "Choosing"): `understudy record` picks the
ptrace backend for it by itself, which runs a process's threads one turn at a
time, handed over at traced calls in journal order -- so what the threads
did to each other through shared memory comes back the same on replay.

    test_record_replay_node.py CASE    workers | atomics | http | script

workers: four worker_threads post running sums (with the clock) to the main
thread, which prints them in arrival order with Math.random and crypto
bytes: 10 recordings, each replayed clean with identical output.

atomics: three workers race on a SharedArrayBuffer counter with
Atomics.add and pass a baton through Atomics.wait / notify; the values each
drew are hashed and printed: 10 recordings, each replayed identically, and
the recordings do not all print the same (the order really varies).

http: the http module under a bounded keep-alive client and fresh
connections from python3, shut down by SIGTERM: every answer carries its
number, the clock and random bytes; the replay is clean and prints the same.

script: a `#!/usr/bin/env node` script is recognised through its "#!" line
and gets the ptrace backend too; `--backend preload` still overrides."""
import http.client
import json
import os
import signal
import sys
import time

from harness import Trace, expect, fail, free_port, log, run_main, wait_port

NEEDS = ["node"]
CASES = ["workers", "atomics", "http", "script"]
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_src")
CHOSEN = "backend ptrace:"


def record_json(rec):
    for line in reversed(rec.stdout.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    fail("record printed no --json line", rec)


def program_lines(rec):
    return [l for l in rec.stdout.decode(errors="replace").splitlines() if not l.startswith("{")]


def rounds(script, n, want_varied):
    outs = set()
    for i in range(n):
        with Trace("node_" + script) as t:
            rec = t.record(["node", os.path.join(SRC, script + ".js")], extra=["--json"], timeout=120)
            expect(rec.rc == 0 and not rec.timed_out, "record of %s.js exited %s" % (script, rec.rc), rec)
            expect(CHOSEN in rec.err and "Node.js" in rec.err,
                   "record did not pick the ptrace backend for node by itself", rec)
            j = record_json(rec)
            expect(not j["warnings"], "record warned: %s" % j["warnings"], rec)
            out = program_lines(rec)
            expect(out, "%s.js printed nothing under record" % script, rec)
            rep = t.replay(show_output=True, timeout=120)
            expect(rep.rc == 0 and "no divergence" in rep.err,
                   "replay %d of %s.js not clean (exit %s)" % (i + 1, script, rep.rc), rep)
            expect(rep.stdout.decode(errors="replace").splitlines() == out,
                   "replay %d of %s.js printed other lines than its recording:\n%s" %
                   (i + 1, script, "\n".join(out)), rep)
            outs.add("\n".join(out))
    if want_varied:
        expect(len(outs) > 1, "%d recordings of %s.js printed the same thing" % (n, script))
    log("ok %s: %d recordings (%d distinct outputs), each replayed clean and identical"
        % (script, n, len(outs)))


def workers():
    rounds("workers", 10, want_varied=True)


def atomics():
    rounds("atomics", 10, want_varied=True)


def http_case():
    port = free_port()
    with Trace("node_http") as t:
        t.record_start(["node", os.path.join(SRC, "http_server.js"), str(port)], extra=["--json"])
        expect(wait_port(port, timeout=30, proc=t.server), "node did not listen under record")
        answers = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 60
        for i in range(300):
            expect(time.monotonic() < deadline, "300 requests took over 60 s")
            conn.request("GET", "/k%d" % i)
            r = conn.getresponse()
            body = r.read().decode()
            expect(r.status == 200 and body.startswith("/k%d #%d " % (i, i + 1)),
                   "answer %d: %d %r" % (i, r.status, body))
            answers.append(body)
        conn.close()
        for i in range(20):  # fresh connections: accept, read, close
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/fresh%d" % i, headers={"Connection": "close"})
            r = c.getresponse()
            expect(r.status == 200 and "/fresh%d #" % i in r.read().decode(), "fresh answer %d" % i)
            c.close()
        # The recorder's child is node: SIGTERM to the recorder reaches it once.
        t.server.send_signal(signal.SIGTERM)
        rec = t.record_wait(timeout=60)
        expect(rec.rc == 0, "record of the node server exited %s" % rec.rc, rec)
        expect(CHOSEN in rec.err, "record did not pick the ptrace backend", rec)
        out = program_lines(rec)
        expect(out == ["listening", "served 320"], "the server printed %r" % out, rec)
        j = record_json(rec)
        expect(not j["warnings"], "record warned: %s" % j["warnings"], rec)
        rep = t.replay(show_output=True, timeout=300)
        expect(rep.rc == 0 and "no divergence" in rep.err, "replay of the node server not clean", rep)
        expect(rep.stdout.decode(errors="replace").splitlines() == out, "replay printed another thing", rep)
    log("ok http: 320 requests answered under record (%d events, %d by the agent), replay clean "
        "and identical" % (j["events"], j["agent"]["calls"]))


def script():
    with Trace("node_script") as t:
        path = os.path.join(t.root, "hello")
        with open(path, "w") as f:
            f.write("#!/usr/bin/env node\nconsole.log('hello', Date.now() > 0, Math.random() < 1);\n")
        os.chmod(path, 0o755)
        rec = t.record([path])
        expect(rec.rc == 0 and CHOSEN in rec.err and "a script for " in rec.err and "Node.js" in rec.err,
               "a #!/usr/bin/env node script did not get the ptrace backend", rec)
        rep = t.replay(show_output=True)
        expect(rep.rc == 0 and rep.stdout.decode().strip() == "hello true true", "replay of the script", rep)
        rec = t.record([path], extra=["--backend", "preload"])
        expect(rec.rc == 0 and CHOSEN not in rec.err and rec.stdout.decode().strip() == "hello true true",
               "--backend preload did not override", rec)
    log("ok script: '#!/usr/bin/env node' -> ptrace; --backend preload overrides")


def main():
    cases = {"workers": workers, "atomics": atomics, "http": http_case, "script": script}
    names = sys.argv[1:] or list(cases)
    for n in names:
        if n not in cases:
            fail("no case %r (cases: %s)" % (n, ", ".join(cases)))
    for n in names:
        cases[n]()


if __name__ == "__main__":
    run_main(main)
