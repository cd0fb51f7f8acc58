#!/usr/bin/env python3
"""bench/checkpoint_bench.py: what a CRIU checkpoint of a loaded redis costs.

Usage: bench/checkpoint_bench.py [BUILD_DIR] [--mb 100] [--dumps 3] [--json OUT]

redis-server runs as init of its own PID and mount namespace (the recorder's
layout; `unshare -p -f --mount-proc setsid ...`) and is filled with about MB
megabytes (DEBUG POPULATE, 1000-byte values).  Then, with the driver's
defaults (criu swrk RPC, --leave-running, --tcp-established, --network-lock
nftables, host tmpfs mounts external, log level 4), DUMPS checkpoints are
taken, alternating with the same dump at log level 2 and with the host tmpfs
mounts tarred, so the options' cost is measured side by side in one run.
Each image directory is deleted once measured, except the last default one:
the original is killed, that checkpoint is verified and restored, and the
restored redis must hold every key.

Figures (medians): freeze (CRIU's frozen_time) in ms and per 100 MB of image,
image MB, dump total ms (driver call: CRIU plus the manifest), manifest ms,
restore ms (verify + CRIU; CRIU's own restore_time beside it).
Target: freeze <= 350 ms per 100 MB (a plain CRIU dump of a 106 MB redis
froze it 0.29 s on this machine).  Exit status: 0 target met, 1 missed (or
the restored data is wrong), 2 could not run (needs root, CRIU, redis,
build/bin/understudy-checkpoint).  Kills only what it started, by pid; every
step has a timeout.
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_FREEZE_MS_PER_100MB = 350.0
VALUE_BYTES = 1000


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default=os.environ.get("UNDERSTUDY_BUILD", "build"))
    ap.add_argument("--mb", type=int, default=100, help="data to load, MB (default 100)")
    ap.add_argument("--dumps", type=int, default=3, help="dumps per variant (default 3)")
    ap.add_argument("--json", dest="json_out", help="also write the figures here")
    ap.add_argument("--dir", help="where the images go (default: $TMPDIR or /tmp)")
    a = ap.parse_args()
    a.mb = max(1, min(a.mb, 2000))
    a.dumps = max(1, min(a.dumps, 10))
    return a


def cannot_run(why):
    print("checkpoint_bench: cannot run: " + why, file=sys.stderr)
    sys.exit(2)


def free_port():
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in (6379, 6390):
            return port


def cli(port, *args, timeout=60):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return r.stdout.strip() if r.returncode == 0 else "<error %d: %s>" % (r.returncode, r.stderr)


def wait_ping(port, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if cli(port, "PING", timeout=5) == "PONG":
                return True
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.05)
    return False


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_pid(pid):
    """SIGKILL pid; reap it if it is ours (we are a subreaper); wait until gone."""
    if pid is None or pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def tool(build, *args, timeout=300):
    r = subprocess.run([os.path.join(build, "bin", "understudy-checkpoint"), "--json"] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("understudy-checkpoint %s: %s" % (" ".join(args), r.stderr.strip()))
    return json.loads(r.stdout)


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    a = parse_args()
    binary = os.path.join(a.build, "bin", "understudy-checkpoint")
    if os.geteuid() != 0:
        cannot_run("needs root (CRIU)")
    for b in ("redis-server", "redis-cli", "unshare", "setsid"):
        if shutil.which(b) is None:
            cannot_run("%s not on PATH (scripts/setup.sh installs it)" % b)
    if not os.access(binary, os.X_OK):
        cannot_run("%s not built; run cmake --build %s --target understudy-checkpoint"
                   % (binary, a.build))
    try:
        tool(a.build, "check")
        version = tool(a.build, "version")["version"]
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        cannot_run(str(e))

    # A restored tree is CRIU's child; once CRIU exits it comes to us, so
    # that it can be reaped by its pid.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    work = tempfile.mkdtemp(prefix="understudy-ckpt-bench-", dir=a.dir)
    # The same dump into memory (tmpfs), to tell the disk's share of the freeze.
    shm = None
    if os.path.isdir("/dev/shm") and os.path.realpath(work).split("/")[1:3] != ["dev", "shm"]:
        shm = tempfile.mkdtemp(prefix="understudy-ckpt-bench-", dir="/dev/shm")
    port = free_port()
    helper = None
    init = None
    restored = None
    status = 0
    try:
        # Other tests' network namespaces are bound under /run/netns; CRIU
        # refuses an nsfs mount in the dump ("doesn't have a proper root
        # mount"), so they are detached in redis' own mount namespace (a
        # private copy: the host keeps them), as the recorder does.
        server = ("grep ' nsfs ' /proc/self/mounts | cut -d' ' -f2 | xargs -r -n1 umount -l "
                  "2>/dev/null; "
                  "exec redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no "
                  "--enable-debug-command yes --dir %s </dev/null >/dev/null 2>&1" % (port, work))
        helper = subprocess.Popen(["unshare", "-p", "-f", "--mount-proc", "setsid", "sh", "-c",
                                   server],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        children = "/proc/%d/task/%d/children" % (helper.pid, helper.pid)
        for _ in range(500):
            with open(children) as f:
                words = f.read().split()
            if words:
                init = int(words[0])
                break
            time.sleep(0.01)
        if init is None or not wait_ping(port):
            raise RuntimeError("redis-server did not start on port %d" % port)

        keys = a.mb * 1000 * 1000 // (VALUE_BYTES + 100)
        t0 = time.monotonic()
        out = cli(port, "DEBUG", "POPULATE", str(keys), "key", str(VALUE_BYTES), timeout=300)
        if out != "OK":
            raise RuntimeError("DEBUG POPULATE: " + out)
        info = dict(l.split(":", 1) for l in cli(port, "INFO", "memory").splitlines() if ":" in l)
        rss_mb = int(info["used_memory_rss"]) / 1e6
        print("redis %d keys x %d B loaded in %.1f s: used_memory_rss %.1f MB; CRIU %s"
              % (keys, VALUE_BYTES, time.monotonic() - t0, rss_mb, version), flush=True)

        variants = [
            ("default", [], work),
            ("log level 2", ["--log-level", "2"], work),
            ("host tmpfs tarred", ["--no-external-host-mounts"], work),
        ]
        if shm:
            variants.append(("images on tmpfs", [], shm))
        rows = {name: [] for name, _, _ in variants}
        last_default = None
        for i in range(a.dumps):
            for name, extra, base in variants:
                d = os.path.join(base, "dump-%d-%s" % (i, name.replace(" ", "-")))
                # The previous dump's pages reach the disk first, as they would
                # in a checkpoint interval of seconds (outside the timing).
                os.sync()
                r = tool(a.build, "dump", str(init), d, *extra)
                r["image_mb"] = r["image_bytes"] / 1e6
                r["freeze_per_100mb"] = r["frozen_ms"] * 100.0 / r["image_mb"]
                rows[name].append(r)
                print("  dump %d %-18s frozen %6.1f ms (memdump %6.1f, memwrite %6.1f)  "
                      "image %6.1f MB  total %6.1f ms  manifest %5.1f ms"
                      % (i + 1, name, r["frozen_ms"], r["memdump_ms"], r["memwrite_ms"],
                         r["image_mb"], r["total_ms"], r["manifest_ms"]), flush=True)
                if name == "default":
                    if last_default:
                        shutil.rmtree(last_default, ignore_errors=True)
                    last_default = d
                else:
                    shutil.rmtree(d, ignore_errors=True)

        # Failover: the original dies; the newest checkpoint comes back.
        kill_pid(init)
        helper.wait(timeout=30)
        init = None
        r = tool(a.build, "restore", last_default)
        restored = r["pid"]
        dbsize = cli(port, "DBSIZE") if wait_ping(port) else "<no answer>"
        data_ok = dbsize == str(keys)
        print("  restore: %.1f ms (verify %.1f ms, criu %.1f ms, CRIU's restore_time %.1f ms); "
              "DBSIZE %s (want %d)" % (r["total_ms"], r["verify_ms"], r["criu_ms"],
                                       r["criu_restore_ms"], dbsize, keys), flush=True)

        d = rows["default"]
        freeze_100 = median(d, "freeze_per_100mb")
        print("\n%-32s %12s %12s %10s" % ("figure (median)", "measured", "target", "verdict"))

        def line(label, value, target=None):
            if target is None:
                print("%-32s %12.1f %12s %10s" % (label, value, "-", "info"))
                return True
            ok = value <= target
            print("%-32s %12.1f %12.1f %10s" % (label, value, target, "ok" if ok else "MISSED"))
            return ok

        met = line("freeze ms / 100 MB", freeze_100, TARGET_FREEZE_MS_PER_100MB)
        line("freeze ms", median(d, "frozen_ms"))
        line("image MB", median(d, "image_mb"))
        line("dump total ms", median(d, "total_ms"))
        line("  of which CRIU ms", median(d, "criu_ms"))
        line("  of which manifest ms", median(d, "manifest_ms"))
        line("restore ms (verify + CRIU)", r["total_ms"])
        line("  CRIU's restore_time ms", r["criu_restore_ms"])
        line("freeze ms, log level 2", median(rows["log level 2"], "frozen_ms"))
        line("freeze ms, host tmpfs tarred", median(rows["host tmpfs tarred"], "frozen_ms"))
        if shm:
            line("freeze ms, images on tmpfs", median(rows["images on tmpfs"], "frozen_ms"))
        if not data_ok:
            print("restored data wrong: DBSIZE %s, want %d" % (dbsize, keys))
        status = 0 if met and data_ok else 1
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump({"criu": version, "keys": keys, "rss_mb": rss_mb, "dumps": rows,
                           "restore": r, "freeze_ms_per_100mb": freeze_100,
                           "restored_dbsize": dbsize}, f, indent=1)
    except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
        print("checkpoint_bench: %s" % e, file=sys.stderr)
        status = 2
    finally:
        kill_pid(init)
        kill_pid(restored)
        if helper is not None and helper.poll() is None:
            kill_pid(helper.pid)
        shutil.rmtree(work, ignore_errors=True)
        if shm:
            shutil.rmtree(shm, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
