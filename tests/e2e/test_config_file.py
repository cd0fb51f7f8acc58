#!/usr/bin/env python3
"""Config files (issue 15 part 3): understudyd --config and
`understudy run --config` take every option from a `name = value` file,
flags on the command line override it, an unknown name is refused naming
the closest option; the heartbeat settings are compared at the handshake:
a primary whose --heartbeat-ms/--missed-heartbeats differ from the
backup's is refused before its program starts, with a message naming both
values; with equal settings (from its config file) it runs.
Needs: root (the recorder's namespaces), understudyd, `understudy run`."""
import os
import shutil
import signal
import tempfile
import json
import time

from harness import (UNDERSTUDY, UNDERSTUDYD, expect, fail, free_port, log, run, run_main, start)

NEEDS = ["root", UNDERSTUDYD, "understudy:run", "understudy:status"]


def main():
    tmp = tempfile.mkdtemp(prefix="understudy-config-")
    daemon = None
    try:
        key = os.path.join(tmp, "cluster.key")
        expect(run([UNDERSTUDY, "keygen", "-o", key]).rc == 0, "keygen failed")
        port = free_port()
        admin = os.path.join(tmp, "admin.sock")
        dconf = os.path.join(tmp, "understudyd.conf")
        with open(dconf, "w") as f:
            f.write('# the backup\nkey = "%s"\nlisten = "127.0.0.1:%d"\ndata = "%s"\n'
                    'admin = "%s"\nheartbeat-ms = 100\nmissed-heartbeats = 3\n'
                    'witness = "none"\nno-shadow = true\nnode-name = "from-file"\n'
                    % (key, port, os.path.join(tmp, "data"), admin))
        bad = os.path.join(tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("missed-hearbeats = 3\n")
        r = run([UNDERSTUDYD, "--config", bad], timeout=20)
        expect(r.rc == 64 and b"unknown option 'missed-hearbeats'" in r.stderr and
               b"did you mean 'missed-heartbeats'" in r.stderr,
               "a misspelt config name is not refused with a suggestion", r)

        dlog = open(os.path.join(tmp, "understudyd.log"), "wb")
        daemon = start([UNDERSTUDYD, "--config", dconf, "--node-name", "from-flag"],
                       stdout=dlog, stderr=dlog)
        deadline = time.monotonic() + 30
        st = None
        while time.monotonic() < deadline and daemon.poll() is None:
            r = run([UNDERSTUDY, "status", "--admin", admin, "--json"], timeout=10)
            if r.rc == 0:
                st = json.loads(r.out)
                break
            time.sleep(0.1)
        expect(st is not None, "understudyd --config never answered status (exit %s): %s"
               % (daemon.poll(), open(dlog.name).read()[-2000:]))
        expect(st["missed_heartbeats"] == 3 and st["heartbeat_ms"] == 100,
               "the config's heartbeat settings are not in effect: %r" % st)
        expect(st["node"] == "from-flag", "the command line did not override the file: node %r"
               % st["node"])
        expect(st["shadow"]["state"] == "none", "no-shadow = true was not applied")

        # A primary with the default 2 missed heartbeats: refused, naming both.
        marker = "ran-despite-mismatch"
        rconf = os.path.join(tmp, "redis.conf")
        with open(rconf, "w") as f:
            f.write('backup = "127.0.0.1:%d"\nkey = "%s"\naudit = false\n'
                    'command = ["/bin/echo", "%s"]\n' % (port, key, marker))
        r = run([UNDERSTUDY, "run", "--config", rconf, "--journal", os.path.join(tmp, "j1")],
                timeout=60)
        expect(r.rc == 1, "a primary with other heartbeat settings was not refused (exit %s)"
               % r.rc, r)
        expect(b"--missed-heartbeats 3" in r.stderr and b"--missed-heartbeats 2" in r.stderr,
               "the refusal does not name both values", r)
        expect(marker.encode() not in r.stdout, "the program ran although the backup refused", r)
        refusal = [l for l in r.err.splitlines() if "heartbeat settings differ" in l]
        expect(refusal, "no 'heartbeat settings differ' line", r)

        # The same file plus the backup's settings: it runs.
        with open(rconf, "a") as f:
            f.write("missed-heartbeats = 3\n")
        r = run([UNDERSTUDY, "run", "--config", rconf, "--journal", os.path.join(tmp, "j2")],
                timeout=60)
        expect(r.rc == 0 and marker.encode() in r.stdout,
               "`understudy run --config` with matching settings did not run the program", r)
        # The command line overrides the file's command.
        r = run([UNDERSTUDY, "run", "--config", rconf, "--journal", os.path.join(tmp, "j3"), "--",
                 "/bin/echo", "from-the-command-line"], timeout=60)
        expect(r.rc == 0 and b"from-the-command-line" in r.stdout and marker.encode() not in
               r.stdout, "the command line's program did not override the file's", r)
        log("refused: %s" % refusal[0].strip())
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except Exception:
                daemon.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
