#!/usr/bin/env python3
"""keepalived-style notify hooks on a real planned failover (issue 15 part 5).

understudyd on node B runs with `--notify HOOK`; redis-server under
`understudy run` on node A; `understudy failover` asked of B.  The hook must
run for backup (the primary connected), fenced (A confirmed the fence) and
primary (B went live), in that order, each with UNDERSTUDY_STATE, _ROLE,
_REASON, _SEQ and _NODE in its environment -- _SEQ of primary the failover's
drained seq -- and each run's exit status in the daemon's log and in
`understudy events`.  A second hook that hangs (past --notify-timeout-ms) must
not delay the switchover: the failover reply's total stays far below the
timeout, and the hook is reported killed."""
import json
import os
import time

import harness
import netns
from harness import expect, fail, log, run_main
from test_failover_daemon_restart import hook_runs, wait_hook, write_hook

NEEDS = netns.CLUSTER + ["redis-server", "redis-cli", "understudy:events"]

HANG_MS = 60000


def main():
    with netns.Net() as net:
        hooks = net.tmpdir("hooks")
        hook = write_hook(hooks)
        # The hook hangs on "fenced": the failover must not wait for it.
        with open(hook) as f:
            text = f.read()
        text = text.replace("exit 0\n", "[ \"$1\" = fenced ] && sleep %d\nexit 0\n" %
                            (HANG_MS // 1000))
        with open(hook, "w") as f:
            f.write(text)
        with netns.Cluster(net, daemon_extra=["--notify", hook, "--notify-timeout-ms", "3000"]) \
                as cl:
            cl.start_backup()
            cl.start_primary(netns.redis_argv(net.tmpdir("redis")))
            wait_hook(hooks, "backup")
            r, reply = cl.failover()
            expect(reply and reply.get("node") == "nodeB", "failover reply: %s" % reply, r)
            total = reply["timings"]["total_ms"]
            seq = int(reply["drained_seq"])
            log("planned failover: total %.1f ms, live through seq %d" % (total, seq))
            expect(total < 3000, "the failover took %.0f ms: it waited for the hung hook" % total)
            env = wait_hook(hooks, "primary", timeout=30)
            runs = [s for s, _ in hook_runs(hooks)]
            expect(runs[:3] == ["backup", "fenced", "primary"],
                   "hook runs in order %s, wanted backup, fenced, primary" % runs)
            fenced = [e for s, e in hook_runs(hooks) if s == "fenced"][0]
            for e, role in ((fenced, "backup"), (env, "primary")):
                expect(e.get("UNDERSTUDY_ROLE") == role and e.get("UNDERSTUDY_NODE") == "nodeB"
                       and e.get("UNDERSTUDY_REASON") and int(e.get("UNDERSTUDY_SEQ", 0)) > 0,
                       "hook environment: %s" % e)
            expect(int(env["UNDERSTUDY_SEQ"]) == seq,
                   "primary hook UNDERSTUDY_SEQ %s != drained seq %d" % (env["UNDERSTUDY_SEQ"], seq))
            expect(int(fenced["UNDERSTUDY_SEQ"]) == seq,
                   "fenced hook UNDERSTUDY_SEQ %s != drained seq %d" %
                   (fenced["UNDERSTUDY_SEQ"], seq))
            expect(netns.probe_redis(net.node("C"), net.vip) == "+PONG",
                   "the service address does not answer after the failover")

            # Outcomes: logged and in the history.
            deadline = time.monotonic() + 30
            notes = []
            while time.monotonic() < deadline:
                r = harness.run([harness.UNDERSTUDY, "events", "--admin", cl.admin, "--json",
                                 "--kind", "notify"], timeout=20)
                expect(r.rc == 0, "understudy events failed", r)
                notes = [json.loads(l)["cause"] for l in r.out.splitlines() if l.strip()]
                if len(notes) >= 3:
                    break
                time.sleep(0.1)
            log("notify outcomes: %s" % notes)
            expect(any(" backup: exit status 0" in n for n in notes), "no backup outcome: %s" % notes)
            expect(any(" fenced: killed after the timeout" in n for n in notes),
                   "the hung hook was not reported killed: %s" % notes)
            expect(any(" primary: exit status 0" in n for n in notes),
                   "no primary outcome: %s" % notes)
            with open(cl.log_path("understudyd"), "rb") as f:
                dlog = f.read().decode(errors="replace")
            expect("notify hook %s primary: exit status 0" % hook in dlog,
                   "the daemon log does not show the hook's exit status")
            r = harness.run([harness.UNDERSTUDY, "events", "--admin", cl.admin, "--json",
                             "--kind", "fence"], timeout=20)
            expect(r.rc == 0 and "confirmed the fence" in r.out,
                   "the history lacks the fence", r)


if __name__ == "__main__":
    run_main(main)
