"""Real servers from Debian driven by bounded clients: memcached (text
protocol, spoken by python threads) and nginx (master + workers serving a
directory of static files, fetched with http.client).  Shared by the e2e
tests (test_record_replay_memcached.py, test_record_replay_nginx.py) and
bench/servers_bench.py.

Every load here is bounded in count and in time, loopback only, and checks
what it gets back (a wrong answer is a failure, not a statistic).
"""
import hashlib
import http.client
import os
import socket
import threading
import time

# ---------------------------------------------------------------------------
# memcached


def memcached_argv(port, threads=4, background=True):
    """memcached on 127.0.0.1:PORT with THREADS worker threads; -A lets a
    client end it with the protocol's `shutdown`.  BACKGROUND False turns
    off the LRU maintainer and crawler threads (-o no_lru_maintainer,
    no_lru_crawler): they read `current_time`, which the main thread's
    clock tick writes with no lock, and take locks or sleep depending on
    what they read -- a data race replay cannot reproduce (docs/
    record-replay.md, Limits)."""
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", str(threads),
            "-m", "64", "-c", "64", "-A", "-u", "root"]
    if not background:
        argv += ["-o", "no_lru_maintainer,no_lru_crawler"]
    return argv


class _Conn:
    """One memcached text-protocol connection (bounded by a socket timeout)."""

    def __init__(self, port, timeout=20.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise IOError("memcached closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise IOError("memcached closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def set(self, key, value):
        self.s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        return self._line()

    def get(self, key):
        self.s.sendall(b"get %s\r\n" % key)
        line = self._line()
        if line == b"END":
            return None
        parts = line.split()
        if len(parts) != 4 or parts[0] != b"VALUE":
            raise IOError("memcached: unexpected reply %r" % line)
        value = self._exact(int(parts[3]) + 2)[:-2]
        end = self._line()
        if end != b"END":
            raise IOError("memcached: unexpected reply %r after a value" % end)
        return value

    def command(self, text):
        self.s.sendall(text + b"\r\n")

    def close(self):
        self.s.close()


def _value(t, i):
    # Deterministic, varied sizes (8..~600 bytes).
    return (b"v%d.%d-" % (t, i)) * (1 + (i * 7 + t) % 50)


def memcached_load(port, threads=4, ops=1500, deadline_s=60.0):
    """THREADS client threads, each on its own connection, each OPS sets then
    OPS gets of its own keys interleaved with reads of the other threads'
    keys.  Returns (ops done, list of errors)."""
    errors = []
    done = [0] * threads
    stop_at = time.monotonic() + deadline_s

    def worker(t):
        try:
            c = _Conn(port)
            try:
                for i in range(ops):
                    if time.monotonic() > stop_at:
                        errors.append("thread %d: out of time after %d ops" % (t, done[t]))
                        return
                    r = c.set(b"k%d_%d" % (t, i), _value(t, i))
                    if r != b"STORED":
                        errors.append("thread %d: set k%d_%d -> %r" % (t, t, i, r))
                        return
                    done[t] += 1
                for i in range(ops):
                    if time.monotonic() > stop_at:
                        errors.append("thread %d: out of time after %d ops" % (t, done[t]))
                        return
                    v = c.get(b"k%d_%d" % (t, i))
                    if v != _value(t, i):
                        errors.append("thread %d: get k%d_%d -> %r" % (t, t, i, (v or b"")[:40]))
                        return
                    done[t] += 1
                    if i % 16 == 0:  # another thread's key: set or not yet
                        o = (t + 1) % threads
                        v = c.get(b"k%d_%d" % (o, i))
                        if v is not None and v != _value(o, i):
                            errors.append("thread %d: get k%d_%d -> wrong value" % (t, o, i))
                            return
                        done[t] += 1
            finally:
                c.close()
        except (OSError, IOError) as e:
            errors.append("thread %d: %s" % (t, e))

    _run_threads(worker, threads, deadline_s + 10, errors)
    return sum(done), errors


def _run_threads(worker, threads, join_s, errors):
    """Runs worker(t) for t in range(threads) on threads of their own and
    waits up to JOIN_S for each; a thread still running is an error."""
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(join_s)
    if any(th.is_alive() for th in ts):
        errors.append("a client thread did not finish in %.0f s" % join_s)


def memcached_shutdown(port):
    """The text protocol's `shutdown` (memcached -A): the server exits 0."""
    c = _Conn(port, timeout=10)
    try:
        c.command(b"shutdown")
        try:
            c.s.recv(100)  # EOF (or ECONNRESET) once the server is gone
        except OSError:
            pass
    finally:
        c.close()


# ---------------------------------------------------------------------------
# nginx

NGINX_FILES = [("index.html", 600), ("small.txt", 37), ("page.html", 4096), ("mid.bin", 20000),
               ("big.bin", 150000), ("sub/deep.txt", 1234)]


def nginx_site(root):
    """Writes the static files under ROOT/html; returns {url path: sha256}."""
    want = {}
    for name, size in NGINX_FILES:
        path = os.path.join(root, "html", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = hashlib.sha256(name.encode()).digest() * (size // 32 + 1)
        data = data[:size]
        with open(path, "wb") as f:
            f.write(data)
        want["/" + name] = hashlib.sha256(data).hexdigest()
    return want


def nginx_conf(root, port, workers=2, sendfile=False):
    """nginx.conf for ROOT: master + WORKERS, in the foreground (daemon off:
    the recorder's child is the master), everything under ROOT.  `user root`:
    the tests run as root and ROOT is a private temp dir; dropping to
    www-data would need the files opened up to it."""
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""
user root;
worker_processes %(workers)d;
daemon off;
master_process on;
pid %(root)s/nginx.pid;
error_log %(root)s/error.log notice;
events { worker_connections 256; }
http {
    access_log %(root)s/access.log;
    sendfile %(sendfile)s;
    keepalive_timeout 30;
    client_body_temp_path %(root)s/tmp/body;
    proxy_temp_path %(root)s/tmp/proxy;
    fastcgi_temp_path %(root)s/tmp/fastcgi;
    uwsgi_temp_path %(root)s/tmp/uwsgi;
    scgi_temp_path %(root)s/tmp/scgi;
    types { text/html html; text/plain txt; application/octet-stream bin; }
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s/html;
    }
}
""" % {"root": root, "port": port, "workers": workers,
       "sendfile": "on" if sendfile else "off"})
    os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
    return conf


def nginx_argv(root, conf):
    # -e: the error log before the configuration is read (never /var/log).
    return ["nginx", "-p", root + "/", "-c", conf, "-e", os.path.join(root, "error.log")]


def nginx_load(port, want, requests=200, threads=4, deadline_s=60.0):
    """REQUESTS GETs of the site's files from THREADS threads, each on a
    keep-alive connection that it reopens every 10 requests, plus one 404.
    Returns (ok count, list of errors)."""
    paths = sorted(want)
    errors = []
    ok = [0] * threads
    stop_at = time.monotonic() + deadline_s
    per = requests // threads

    def worker(t):
        conn = None
        try:
            for i in range(per):
                if time.monotonic() > stop_at:
                    errors.append("thread %d: out of time after %d requests" % (t, i))
                    return
                if conn is None or i % 10 == 0:
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                path = paths[(i + t) % len(paths)]
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or hashlib.sha256(body).hexdigest() != want[path]:
                    errors.append("thread %d: GET %s -> %d, %d bytes" %
                                  (t, path, resp.status, len(body)))
                    return
                ok[t] += 1
            if t == 0:
                conn.request("GET", "/missing")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 404:
                    errors.append("GET /missing -> %d (expected 404)" % resp.status)
        except (OSError, http.client.HTTPException) as e:
            errors.append("thread %d: %s: %s" % (t, type(e).__name__, e))
        finally:
            if conn is not None:
                conn.close()

    _run_threads(worker, threads, deadline_s + 10, errors)
    return sum(ok), errors


def nginx_workers_ready(root, workers, timeout=20.0, proc=None):
    """Waits until the error log says every worker started (nginx logs
    'start worker process N' per worker); a request before that could land
    while a worker is still being set up, which is fine, but a SIGQUIT before
    every worker exists tests a different path than the one meant."""
    log = os.path.join(root, "error.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with open(log, "rb") as f:
                if f.read().count(b"start worker process ") >= workers:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------
# A load as a process of its own (bench/servers_bench.py runs several side by
# side, so the client is not one interpreter's GIL):
#
#     servers.py memcached-load PORT THREADS OPS
#     servers.py nginx-load PORT SITE_ROOT REQUESTS THREADS
#
# prints one JSON line {"ops": N, "errors": [...], "seconds": S}.


def _main(argv):
    import json
    if argv[:1] == ["memcached-load"]:
        t0 = time.monotonic()
        n, errors = memcached_load(int(argv[1]), threads=int(argv[2]), ops=int(argv[3]),
                                   deadline_s=120)
    elif argv[:1] == ["nginx-load"]:
        want = {}
        for name, _ in NGINX_FILES:
            with open(os.path.join(argv[2], "html", name), "rb") as f:
                want["/" + name] = hashlib.sha256(f.read()).hexdigest()
        t0 = time.monotonic()
        n, errors = nginx_load(int(argv[1]), want, requests=int(argv[3]), threads=int(argv[4]),
                               deadline_s=120)
    else:
        raise SystemExit("usage: servers.py memcached-load PORT THREADS OPS | "
                         "nginx-load PORT SITE_ROOT REQUESTS THREADS")
    print(json.dumps({"ops": n, "errors": errors[:5], "seconds": time.monotonic() - t0}))
    return 1 if errors else 0


if __name__ == "__main__":
    import sys
    sys.exit(_main(sys.argv[1:]))
