#!/usr/bin/env python3
"""Active-passive, planned: the checkpoint comes from the backup's schedule
(`understudy run --checkpoint-interval 5s`), then `understudy failover`
mid-stream: B restores it, replays the tail, goes live; lost = 0.  The
scenario is test_failover_active_passive.py's (kind 'planned').
Needs: root, network namespaces, CRIU, understudyd + `understudy
run/status/failover`, redis-server, redis-cli."""
import test_failover_active_passive as ap
from harness import run_main

NEEDS = ap.NEEDS

if __name__ == "__main__":
    run_main(lambda: ap.main("planned"))
