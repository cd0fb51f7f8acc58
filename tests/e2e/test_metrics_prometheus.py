#!/usr/bin/env python3
"""Prometheus scrapes understudy: Debian's real `prometheus` server, on
loopback with a 1 s scrape interval and a temporary storage dir, scrapes
understudyd --metrics (the backup) and `understudy run --metrics` (the
primary, protecting a redis on loopback), and the series are read back
through Prometheus's HTTP API (/api/v1/query): both targets up, the roles,
the replica's position, the shadow's state, the heartbeat settings, the
journal bytes on disk, and the primary's commit round-trip histogram
counting the writes a bounded redis-cli loop made.  `promtool check
metrics` lints both endpoints' text when promtool is installed.
Needs: root (the recorder's namespaces), prometheus, redis-server,
redis-cli, understudyd, `understudy run`."""
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.parse
import urllib.request

from harness import (UNDERSTUDY, UNDERSTUDYD, expect, fail, free_port, log, run, run_main, start,
                     wait_port)

NEEDS = ["root", "prometheus", "redis-server", "redis-cli", UNDERSTUDYD, "understudy:run"]
DEADLINE_S = 120


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def query(prom_port, q):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (prom_port, urllib.parse.urlencode({"query": q}))
    _, body = http_get(url)
    doc = json.loads(body)
    expect(doc.get("status") == "success", "query %s: %s" % (q, body))
    return doc["data"]["result"]


def wait_value(prom_port, q, ok, what, deadline):
    """Poll the query Q until OK(float value of its first series) holds."""
    last = None
    while time.monotonic() < deadline:
        res = query(prom_port, q)
        if res:
            last = float(res[0]["value"][1])
            if ok(last):
                return last
        time.sleep(0.5)
    fail("Prometheus never showed %s (query %s, last value %r)" % (what, q, last))


def main():
    tmp = tempfile.mkdtemp(prefix="understudy-metrics-")
    procs = []
    try:
        key = os.path.join(tmp, "cluster.key")
        r = run([UNDERSTUDY, "keygen", "-o", key])
        expect(r.rc == 0, "keygen failed", r)
        peer, dmetrics, rmetrics, prom, redis = (free_port() for _ in range(5))
        dlog = open(os.path.join(tmp, "understudyd.log"), "wb")
        daemon = start([UNDERSTUDYD, "--listen", "127.0.0.1:%d" % peer, "--key", key,
                        "--data", os.path.join(tmp, "data"), "--admin",
                        os.path.join(tmp, "admin.sock"), "--witness", "none", "--node-name", "b",
                        "--metrics", "127.0.0.1:%d" % dmetrics], stdout=dlog, stderr=dlog)
        procs.append(daemon)
        expect(wait_port(dmetrics, 30, daemon), "understudyd --metrics never listened")
        status, text = http_get("http://127.0.0.1:%d/metrics" % dmetrics)
        expect(status == 200 and 'understudy_role{role="backup"} 1' in text,
               "understudyd's /metrics does not say backup:\n" + text[:2000])
        expect(http_get_code("http://127.0.0.1:%d/nothing" % dmetrics) == 404,
               "an unknown path is not 404")

        rlog = open(os.path.join(tmp, "run.log"), "wb")
        primary = start([UNDERSTUDY, "run", "--backup", "127.0.0.1:%d" % peer, "--key", key,
                         "--journal", os.path.join(tmp, "primary-journal"), "--no-audit",
                         "--metrics", "127.0.0.1:%d" % rmetrics, "--",
                         "redis-server", "--port", str(redis), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", tmp], stdout=rlog, stderr=rlog)
        procs.append(primary)
        expect(wait_port(redis, 60, primary), "redis under `understudy run` never listened")
        expect(wait_port(rmetrics, 10, primary), "`understudy run --metrics` never listened")

        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: backup\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n"
                    "  - job_name: primary\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % (dmetrics, rmetrics))
        plog = open(os.path.join(tmp, "prometheus.log"), "wb")
        server = start(["prometheus", "--config.file=" + cfg,
                        "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
                        "--web.listen-address=127.0.0.1:%d" % prom, "--log.level=warn"],
                       stdout=plog, stderr=plog)
        procs.append(server)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if server.poll() is not None:
                fail("prometheus exited %s: %s" % (server.returncode,
                                                   open(plog.name).read()[-2000:]))
            if http_get_code("http://127.0.0.1:%d/-/ready" % prom) == 200:
                break
            time.sleep(0.2)

        # Writes through the primary: each reply waits for the backup's ack.
        writes = 200
        for i in range(writes):
            r = run(["redis-cli", "-p", str(redis), "SET", "k%d" % i, "v%d" % i], timeout=15)
            expect(r.rc == 0 and r.out.strip() == "OK", "redis SET %d failed" % i, r)

        wait_value(prom, 'up{job="backup"}', lambda v: v == 1, "the backup target up", deadline)
        wait_value(prom, 'up{job="primary"}', lambda v: v == 1, "the primary target up", deadline)
        wait_value(prom, 'understudy_role{job="backup",role="backup"}', lambda v: v == 1,
                   "the daemon's role backup", deadline)
        wait_value(prom, 'understudy_role{job="primary",role="primary"}', lambda v: v == 1,
                   "run's role primary", deadline)
        wait_value(prom, 'understudy_primary_connected{job="backup"}', lambda v: v == 1,
                   "the primary connected to the backup", deadline)
        seq = wait_value(prom, 'understudy_replica_durable_seq{job="backup"}', lambda v: v > writes,
                         "the replica past the writes", deadline)
        n = wait_value(prom, 'understudy_commit_round_trip_seconds_count{job="primary"}',
                       lambda v: v >= writes, "a commit round trip per write", deadline)
        inf = wait_value(prom, 'understudy_commit_round_trip_seconds_bucket{job="primary",le="+Inf"}',
                         lambda v: v >= writes, "the histogram's +Inf bucket", deadline)
        p99 = wait_value(prom, 'histogram_quantile(0.99, understudy_commit_round_trip_seconds_bucket'
                         '{job="primary"})', lambda v: v > 0, "a p99 from the histogram", deadline)
        wait_value(prom, 'understudy_heartbeat_budget_seconds{job="backup"}', lambda v: v == 0.2,
                   "the backup's heartbeat budget 0.2 s", deadline)
        wait_value(prom, 'understudy_journal_disk_bytes{job="backup"}', lambda v: v > 0,
                   "replica journal bytes on disk", deadline)
        wait_value(prom, 'understudy_journal_disk_bytes{job="primary"}', lambda v: v > 0,
                   "primary journal bytes on disk", deadline)
        wait_value(prom, 'sum(understudy_shadow_state{job="backup"})', lambda v: v == 1,
                   "exactly one shadow state", deadline)
        for q in ('understudy_lag_events{job="backup"}', 'understudy_lag_seconds{job="primary"}',
                  'understudy_heartbeat_age_seconds{job="backup"}',
                  'understudy_failovers_total{job="backup"}',
                  'understudy_divergences_total{job="backup"}', 'understudy_alarms{job="backup"}'):
            expect(query(prom, q), "Prometheus has no series %s" % q)
        if shutil.which("promtool"):
            for port in (dmetrics, rmetrics):
                _, text = http_get("http://127.0.0.1:%d/metrics" % port)
                r = run(["promtool", "check", "metrics"], input=text.encode(), timeout=30)
                expect(r.rc == 0, "promtool check metrics on :%d" % port, r)
        log("Prometheus read back: replica durable seq %d, %d commit round trips (+Inf bucket "
            "%d), histogram p99 %.3f ms" % (seq, n, inf, p99 * 1000))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except Exception:
                    p.kill()
                    p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def http_get_code(url):
    try:
        return http_get(url, timeout=3)[0]
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


if __name__ == "__main__":
    run_main(main)
