#!/usr/bin/env python3
"""understudyd as a systemd service (issue 15 part 2), without systemd as
PID 1: what the daemon sends is read by the test's own receivers.

- sd_notify: NOTIFY_SOCKET is a Unix datagram socket this test owns.  READY=1
  comes once the daemon serves (the admin socket answers at that moment),
  with a STATUS= naming the role and state; WATCHDOG_USEC=400000 gives a
  WATCHDOG=1 at least every 200 ms; SIGHUP sends RELOADING=1 then READY=1;
  SIGTERM sends STOPPING=1.
- SIGHUP reload: the config file's log-level (info -> debug: admin
  connections are logged after, not before), notify hook (status shows the
  new one) are applied; a changed heartbeat-ms is named as needing a
  restart and is not applied (status keeps 100).
- journald: a real systemd-journald started in a private mount namespace
  (tmpfs over /run/systemd, /run/log, /var/log/journal, so the host's
  journal is untouched); understudyd with JOURNAL_STREAM naming its stderr
  sends its lines there: MESSAGE without our own timestamp, PRIORITY 6 for
  info and 4 for an alarm, NODE/ROLE/STATE fields, and PEER/SEQ while a
  primary (`understudy run`) is connected -- read back with journalctl.
- `understudyd --check`: the doctor's checks plus key_file, with the fix; a
  world-readable key is a NO; exit status 0 exactly when no check says NO.
Needs: root (mount namespace, the recorder), systemd-journald, journalctl."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from harness import (UNDERSTUDY, UNDERSTUDYD, expect, fail, free_port, log, run, run_main, start)

NEEDS = ["root", UNDERSTUDYD, "understudy:run", "/lib/systemd/systemd-journald", "journalctl",
         "unshare", "mount"]


def stop(p):
    if p is not None and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except Exception:
            p.kill()
            p.wait()


def status(admin):
    r = run([UNDERSTUDY, "status", "--admin", admin, "--json"], timeout=10)
    return json.loads(r.out) if r.rc == 0 else None


def read_log(path):
    with open(path, errors="replace") as f:
        return f.read()


class Notifications:
    """The test's NOTIFY_SOCKET: every datagram the daemon sends, in order."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []

    def wait_for(self, pred, what, timeout=30.0, proc=None, after=-1):
        """The first message after index AFTER that PRED accepts: (index, text)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, m in enumerate(self.messages):
                if i > after and pred(m):
                    return i, m
            if proc is not None and proc.poll() is not None:
                fail("understudyd exited (%s) before %s" % (proc.returncode, what))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        fail("no %s within %.0f s; received: %r" % (what, timeout, self.messages[-10:]))

    def close(self):
        self.sock.close()


def case_notify_and_reload(tmp, key):
    port = free_port()
    admin = os.path.join(tmp, "admin.sock")
    conf = os.path.join(tmp, "understudyd.conf")
    base = ('key = "%s"\nlisten = "127.0.0.1:%d"\ndata = "%s"\nadmin = "%s"\n'
            'witness = "none"\nno-shadow = true\n' % (key, port, os.path.join(tmp, "data"), admin))
    with open(conf, "w") as f:
        f.write(base + 'log-level = "info"\nheartbeat-ms = 100\n')
    hook = os.path.join(tmp, "hook.sh")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(hook, 0o755)
    nsock = os.path.join(tmp, "notify.sock")
    notes = Notifications(nsock)
    dlog_path = os.path.join(tmp, "understudyd.log")
    dlog = open(dlog_path, "wb")
    env = dict(os.environ, NOTIFY_SOCKET=nsock, WATCHDOG_USEC="400000")
    env.pop("JOURNAL_STREAM", None)
    daemon = start([UNDERSTUDYD, "--config", conf], stdout=dlog, stderr=dlog, env=env)
    try:
        i, ready = notes.wait_for(lambda m: "READY=1" in m, "READY=1", proc=daemon)
        # Serving when it said so: the admin socket answers right now.
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(admin)
        except OSError as e:
            fail("READY=1 came before the admin socket %s accepted: %s" % (admin, e))
        finally:
            c.close()
        expect("STATUS=backup (idle): waiting for a primary on 127.0.0.1:%d" % port in ready,
               "READY=1 without the role and state in STATUS=: %r" % ready)
        t0 = time.monotonic()
        notes.wait_for(lambda m: m == "WATCHDOG=1", "WATCHDOG=1", proc=daemon)
        # Three more pings: they keep coming (every 200 ms asked; generous).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(1 for m in notes.messages if m == "WATCHDOG=1") >= 4:
                break
            try:
                notes.messages.append(notes.sock.recv(4096).decode())
            except socket.timeout:
                pass
        pings = sum(1 for m in notes.messages if m == "WATCHDOG=1")
        expect(pings >= 4, "only %d WATCHDOG=1 in %.1f s" % (pings, time.monotonic() - t0))
        log("notify: %r then %d watchdog pings in %.1f s" % (ready, pings, time.monotonic() - t0))

        # Before the reload: info level, no debug line for admin connections.
        expect(status(admin) is not None, "status failed")
        expect("admin connection on" not in read_log(dlog_path),
               "a debug line at log-level info: %s" % read_log(dlog_path)[-1500:])
        with open(conf, "w") as f:
            mport = free_port()
            f.write(base + 'log-level = "debug"\nheartbeat-ms = 200\nnotify = "%s"\n'
                    'metrics = "127.0.0.1:%d"\n' % (hook, mport))
        n_before = len(notes.messages)
        daemon.send_signal(signal.SIGHUP)
        j, _ = notes.wait_for(lambda m: m.startswith("RELOADING=1"), "RELOADING=1", proc=daemon,
                              after=n_before - 1)
        notes.wait_for(lambda m: "READY=1" in m, "READY=1 after the reload", proc=daemon, after=j)
        deadline = time.monotonic() + 20
        line = None
        while time.monotonic() < deadline and line is None:
            line = next((l for l in read_log(dlog_path).splitlines() if "SIGHUP: re-read" in l),
                        None)
            time.sleep(0.05)
        expect(line is not None, "no SIGHUP line in the log: %s" % read_log(dlog_path)[-2000:])
        expect("log level (info -> debug)" in line and "notify (" in line and hook in line,
               "the reload line does not name what was applied: %s" % line)
        expect("need a restart" in line and "heartbeat-ms (100 -> 200)" in line,
               "the reload line does not say heartbeat-ms needs a restart: %s" % line)
        st = status(admin)
        expect(st is not None and st["notify"] == hook, "status does not show the new hook: %r"
               % (st and st["notify"]))
        expect(st["heartbeat_ms"] == 100, "heartbeat-ms was applied without a restart: %r"
               % st["heartbeat_ms"])
        # metrics: the endpoint the reload opened answers.
        import urllib.request
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read()
        expect(b'understudy_role{role="backup"} 1' in body,
               "the reloaded --metrics endpoint does not serve: %r" % body[:300])
        expect("metrics (unset -> 127.0.0.1:%d)" % mport in line,
               "the reload line does not name the metrics change: %s" % line)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "admin connection on" not in read_log(dlog_path):
            time.sleep(0.05)
        expect("admin connection on" in read_log(dlog_path),
               "log-level debug from the reload shows no debug line")
        log("reload: %s" % line.split("understudyd", 1)[-1])

        # `understudy run -q` / `-v` against this daemon: its own lines carry a
        # UTC stamp; -q keeps only the outcome; -v adds the replication line.
        stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z understudy run: "
        base_run = [UNDERSTUDY, "run", "--backup", "127.0.0.1:%d" % port, "--key", key,
                    "--no-audit"]
        r = run(base_run + ["-q", "--journal", os.path.join(tmp, "rq"), "--", "/bin/true"],
                timeout=120)
        lines = r.err.splitlines()
        expect(r.rc == 0 and len(lines) == 1 and re.match(stamp + r"\d+ events in ", lines[0]),
               "run -q printed more than its outcome (or no stamp)", r)
        r = run(base_run + ["-v", "--journal", os.path.join(tmp, "rv"), "--", "/bin/sleep", "6"],
                timeout=120)
        expect(r.rc == 0 and re.search(stamp + r"replication to 127\.0\.0\.1:%d: connected, seq "
                                       r"\d+ acked \d+, lag \d+ events" % port, r.err, re.M),
               "run -v printed no replication line", r)
        expect(all(re.match(stamp, l) for l in r.err.splitlines()),
               "a line of run without its stamp", r)
        log("run -q: %r" % lines[0])
        # `understudy run` under Type=notify (understudy@.service): READY=1
        # with the link's state once the program runs, watchdog pings,
        # STOPPING=1 at the end.
        rsock = os.path.join(tmp, "run-notify.sock")
        rnotes = Notifications(rsock)
        try:
            renv = dict(os.environ, NOTIFY_SOCKET=rsock, WATCHDOG_USEC="400000")
            renv.pop("JOURNAL_STREAM", None)
            rp = start(base_run + ["-q", "--journal", os.path.join(tmp, "rn"), "--",
                                   "/bin/sleep", "3"], env=renv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _, rready = rnotes.wait_for(lambda m: "READY=1" in m, "READY=1 from run",
                                            proc=rp)
                expect("STATUS=primary: /bin/sleep replicating to 127.0.0.1:%d" % port in rready,
                       "run's READY=1 without its STATUS=: %r" % rready)
                rnotes.wait_for(lambda m: m == "WATCHDOG=1", "WATCHDOG=1 from run", proc=rp)
                rnotes.wait_for(lambda m: m.startswith("STOPPING=1"), "STOPPING=1 from run",
                                timeout=60)
                expect(rp.wait(timeout=60) == 0, "run under NOTIFY_SOCKET failed")
            finally:
                stop(rp)
            log("run notify: %r, then %r" % (rready, rnotes.messages[-1]))
        finally:
            rnotes.close()
        daemon.send_signal(signal.SIGTERM)
        notes.wait_for(lambda m: m.startswith("STOPPING=1"), "STOPPING=1")
        daemon.wait(timeout=30)
    finally:
        stop(daemon)
        notes.close()


def case_check(tmp, key):
    data = os.path.join(tmp, "check-data")
    r = run([UNDERSTUDYD, "--check", "--data", data, "--admin", os.path.join(tmp, "a.sock")],
            timeout=60)
    lines = r.out.splitlines()
    names = [l.split()[0] for l in lines if l and not l.startswith(" ")]
    for n in ("preload_library", "syscall_user_dispatch", "criu", "data_dir", "key_file"):
        expect(n in names, "--check does not run the '%s' check" % n, r)
    keyline = next(l for l in lines if l.startswith("key_file"))
    expect(" NO " in keyline and "no --key given" in keyline, "no key is not a NO", r)
    expect("fix: understudy keygen" in r.out, "the key_file NO has no fix", r)
    expect(r.rc == 1, "--check with a failed check exited %d" % r.rc, r)
    # The same checks as `understudy doctor` (one code): the names agree.
    d = run([UNDERSTUDY, "doctor", "--json"], timeout=60)
    doctor = [c["name"] for c in json.loads(d.out)["checks"]]
    expect(all(n in names for n in doctor), "--check lacks doctor's checks: %s vs %s"
           % (names, doctor))
    wide = os.path.join(tmp, "wide.key")
    shutil.copy(key, wide)
    os.chmod(wide, 0o644)
    r = run([UNDERSTUDYD, "--check", "--key", wide, "--data", data], timeout=60)
    keyline = next(l for l in r.out.splitlines() if l.startswith("key_file"))
    expect(" NO " in keyline and "0644" in keyline and "chmod 600" in r.out,
           "a world-readable key is not refused with the fix", r)
    r = run([UNDERSTUDYD, "--check", "--key", key, "--data", data], timeout=60)
    keyline = next(l for l in r.out.splitlines() if l.startswith("key_file"))
    expect(" yes " in keyline, "a good key file is not a yes", r)
    no = [l for l in r.out.splitlines() if l and not l.startswith(" ") and " NO " in l]
    expect(r.rc == (1 if no else 0), "exit status %d with %d NO line(s)" % (r.rc, len(no)), r)
    log("--check: exit %d, %d failed: %s" % (r.rc, len(no), [l.split()[0] for l in no]))


def inside_namespace(tmp, key):
    """Runs in `unshare -m`: a private journald, understudyd logging to it,
    a short primary; prints journalctl's JSON for understudyd on stdout."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    for d in ("/run/systemd", "/run/log", "/var/log/journal"):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    os.makedirs("/run/systemd/journal", exist_ok=True)
    jd = subprocess.Popen(["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    daemon = None
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists("/run/systemd/journal/socket"):
            if time.monotonic() > deadline:
                raise SystemExit("systemd-journald did not create its socket")
            time.sleep(0.05)
        port = free_port()
        admin = os.path.join(tmp, "j-admin.sock")
        # stderr is a pipe whose device:inode JOURNAL_STREAM names, as systemd
        # does for a unit: the daemon must pick the journal by itself.
        rfd, wfd = os.pipe()
        st = os.fstat(wfd)
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        env.pop("NOTIFY_SOCKET", None)
        daemon = subprocess.Popen(
            [UNDERSTUDYD, "--key", key, "--listen", "127.0.0.1:%d" % port, "--data",
             os.path.join(tmp, "j-data"), "--admin", admin, "--no-shadow", "--node-name",
             "jnode", "--witness", "none"],
            stdout=subprocess.DEVNULL, stderr=wfd, env=env)
        os.close(wfd)
        deadline = time.monotonic() + 30
        while not os.path.exists(admin) and time.monotonic() < deadline:
            time.sleep(0.05)
        # An alarm: a peer without the cluster key (a refused handshake).
        other = os.path.join(tmp, "other.key")
        subprocess.run([UNDERSTUDY, "keygen", "-o", other, "--force"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([UNDERSTUDY, "status", "--admin", "127.0.0.1:%d" % port, "--key", other],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        st = subprocess.run([UNDERSTUDY, "status", "--admin", admin, "--json"],
                            stdout=subprocess.PIPE, timeout=60).stdout.decode()
        # A primary for a few seconds: PEER and SEQ are known meanwhile.
        r = subprocess.run([UNDERSTUDY, "run", "--backup", "127.0.0.1:%d" % port, "--key", key,
                            "--no-audit", "--journal", os.path.join(tmp, "j-primary"), "--",
                            "/bin/sh", "-c", "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; "
                            "done"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=120)
        sys.stderr.write("run exited %d: %s\n" % (r.returncode, r.stderr.decode()[-600:]))
        time.sleep(1.5)  # a line after the primary left (its exit is logged)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        os.set_blocking(rfd, False)
        try:
            leaked = os.read(rfd, 65536)
        except BlockingIOError:
            leaked = b""
        sys.stderr.write("stderr of understudyd: %r\n" % leaked[:400])
        out = subprocess.run(["journalctl", "--directory=/run/log/journal", "-o", "json",
                              "--no-pager", "SYSLOG_IDENTIFIER=understudyd"],
                             stdout=subprocess.PIPE, timeout=60).stdout
        sys.stdout.write(json.dumps({"leaked": leaked.decode(errors="replace"), "status": st,
                                     "entries": out.decode(errors="replace")}))
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        jd.terminate()
        jd.wait(timeout=20)


def case_journald(tmp, key):
    r = run(["unshare", "--mount", sys.executable, os.path.abspath(__file__), "--inside-ns", tmp,
             key], timeout=240)
    expect(r.rc == 0, "the journald namespace run failed", r)
    doc = json.loads(r.out)
    entries = [json.loads(l) for l in doc["entries"].splitlines() if l.strip()]
    expect(entries, "journald holds no entry of understudyd", r)
    expect(doc["leaked"] == "", "understudyd also wrote to stderr under journald: %r"
           % doc["leaked"][:300])
    msgs = [e.get("MESSAGE", "") for e in entries]
    log("journald messages: %s" % [m[:70] for m in msgs])
    listening = [e for e in entries if e.get("MESSAGE", "").startswith("listening on 127.0.0.1")]
    expect(listening, "no 'listening on' entry (no own timestamp before it): %s" % msgs[:5])
    e = listening[0]
    expect(e.get("PRIORITY") == "6" and e.get("NODE") == "jnode" and
           e.get("_TRANSPORT") == "journal", "the listening entry lacks its fields: %r" % e)
    # ROLE and STATE are known from the daemon's first status on (just after
    # it listens): every later entry has them.
    later = entries[entries.index(e) + 1:]
    expect(later and all(x.get("ROLE") == "backup" and x.get("STATE") for x in later[1:]),
           "entries after start lack ROLE/STATE: %s" % [(x.get("MESSAGE"), x.get("ROLE"))
                                                       for x in later])
    alarms = [e for e in entries if e.get("MESSAGE", "").startswith("ALARM: ")]
    expect(alarms and alarms[0].get("PRIORITY") == "4",
           "the startup alarm is not PRIORITY 4: %r" % (alarms[:1] or msgs))
    with_peer = [e for e in entries if e.get("PEER", "").startswith("127.0.0.1:") and
                 int(e.get("SEQ", "0")) > 0]
    expect(with_peer, "no entry carries PEER and SEQ while the primary was connected: %s"
           % [(e.get("MESSAGE"), e.get("PEER"), e.get("SEQ")) for e in entries])
    # The same alarm as data in status --json (alarm_records), its text kept.
    st = json.loads(doc["status"])
    recs = st.get("alarm_records", [])
    expect(len(recs) == len(st["alarms"]) == 1, "alarm_records do not match alarms: %r" % st)
    rec = recs[0]
    expect(rec["kind"] == "link_auth" and rec["object"].startswith("127.0.0.1:") and
           rec["time"].endswith("Z") and st["alarms"][0] == rec["time"] + " " + rec["cause"],
           "the refused peer's alarm record: %r (text %r)" % (rec, st["alarms"][0]))
    log("alarm record: %s" % json.dumps(rec)[:300])
    stamped = [m for m in msgs if m[:4].isdigit() and "T" in m[:12]]
    expect(not stamped, "messages carry our own timestamp: %s" % stamped[:3])
    log("journald: %d entries; e.g. %s" % (len(entries), {k: with_peer[0].get(k) for k in
        ("MESSAGE", "PRIORITY", "NODE", "ROLE", "STATE", "PEER", "SEQ", "SERVICE")}))


def main():
    tmp = tempfile.mkdtemp(prefix="understudy-systemd-")
    try:
        key = os.path.join(tmp, "cluster.key")
        expect(run([UNDERSTUDY, "keygen", "-o", key]).rc == 0, "keygen failed")
        case_check(tmp, key)
        case_notify_and_reload(tmp, key)
        case_journald(tmp, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--inside-ns":
        inside_namespace(sys.argv[2], sys.argv[3])
        sys.exit(0)
    run_main(main)
