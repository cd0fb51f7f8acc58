#!/usr/bin/env bash
# scripts/demo.sh -- understudy's main job, on one machine, as root (~60-90 s).
#
# Three "machines" as network namespaces on a private bridge:
#   node A  10.77.X.1   redis-server under `understudy run` (the primary),
#                       holding the service address VIP = 10.77.X.100
#   node B  10.77.X.2   understudyd: receives the journal, replays redis live
#   node C  10.77.X.3   a client writing SET/INCR to the VIP (tests/e2e/jepsen_client.py)
# Mid-stream, `understudy failover` moves the service to B.  Then node A comes
# back as B's backup (understudyd on A, `understudy backup add A:7700` asked of
# B: B streams its journal from seq 1, A's shadow replays it, B's outputs wait
# for A's acks) and a second `understudy failover` moves the service back to
# A.  The client reconnects to the VIP each time, reads every key back at the
# end and the demo prints acked / survived / lost for the whole run and both
# switchover times (failover command -> first reply from the new node).  Everything it creates (namespaces, processes, temp dir) is
# removed on exit, success or not; it kills only the pids it started and
# whatever runs inside the namespaces it created.
#
# Exit status: 0 no acknowledged write lost; 1 a write was lost or a step
# failed; 2 not runnable here (not root, or understudyd not built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${UNDERSTUDY_BUILD:-$ROOT/build}
US=$BUILD/bin/understudy
USD=$BUILD/bin/understudyd
CLIENT=$ROOT/tests/e2e/jepsen_client.py
WRITES=${DEMO_WRITES:-16000}   # at 2000/s; the stream ends after the second failover (stop file)

say()  { printf '\n== %s\n' "$*"; }
die()  { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)"; exit 2; }
for b in "$US" "$USD"; do
  [ -x "$b" ] || { echo "demo: $b is not built; run 'bash scripts/build.sh'"; exit 2; }
done
HELP=$("$US" --help)   # once: 'grep -q' on a pipe can end it early (SIGPIPE under pipefail)
for sub in keygen run status failover backup; do   # ('understudy X --help' exits 0 for any X)
  grep -q "^  $sub " <<<"$HELP" || { echo "demo: 'understudy $sub' is not built yet"; exit 2; }
done
command -v redis-server >/dev/null || { echo "demo: redis-server missing; run 'bash scripts/setup.sh'"; exit 2; }

ID=$$
X=$((1 + ID % 250))
NET=10.77.$X
VIP=$NET.100
NS_BR=usbr-$ID NS_A=usA-$ID NS_B=usB-$ID NS_C=usC-$ID
WORK=$(mktemp -d /tmp/understudy-demo-XXXXXX)
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
  for ns in "$NS_A" "$NS_B" "$NS_C" "$NS_BR"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "demo: logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'KEEP=1; exit 1' INT TERM

# bg NS LOG CMD...: start CMD in namespace NS, in its own session, logging to LOG.
bg() { local ns=$1 log=$2; shift 2; setsid ip netns exec "$ns" "$@" >"$log" 2>&1 </dev/null & PIDS+=($!); disown; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now() { python3 -c 'import time; print(time.monotonic())'; }

say "1. three nodes on a private bridge: A $NET.1 (primary), B $NET.2 (backup), C $NET.3 (client)"
ip netns add "$NS_BR"
ip -n "$NS_BR" link add br0 type bridge
ip -n "$NS_BR" link set br0 up
i=1
for n in A B C; do
  ns=us$n-$ID
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$NS_BR" link add "v$n" type veth peer name eth0 netns "$ns"
  ip -n "$NS_BR" link set "v$n" master br0 up
  ip -n "$ns" addr add "$NET.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  i=$((i + 1))
done

say "2. node B: understudyd (key from 'understudy keygen')"
"$US" keygen >"$WORK/cluster.key"
chmod 600 "$WORK/cluster.key"
ADMIN=$WORK/admin.sock
bg "$NS_B" "$WORK/understudyd.log" "$USD" --listen "$NET.2:7700" --data "$WORK/backup" \
  --key "$WORK/cluster.key" --admin-socket "$ADMIN" \
  --service-address "$VIP/24" --service-dev eth0 --heartbeat-ms 100 --missed-heartbeats 3
for _ in $(seq 100); do "$US" status --admin "$ADMIN" >/dev/null 2>&1 && break; sleep 0.1; done
"$US" status --admin "$ADMIN" >/dev/null 2>&1 || { KEEP=1; cat "$WORK/understudyd.log"; die "understudyd did not start"; }

say "3. node A: redis-server under 'understudy run --mode active-active', service address $VIP"
bg "$NS_A" "$WORK/run.log" "$US" run --backup "$NET.2:7700" --key "$WORK/cluster.key" \
  --service-address "$VIP" --service-dev eth0 --mode active-active \
  --heartbeat-ms 100 --missed-heartbeats 3 -- \
  redis-server --port 6379 --bind 0.0.0.0 --protected-mode no --save '' --appendonly no \
  --dir "$WORK" --loglevel warning
for _ in $(seq 150); do
  [ "$(in_ns "$NS_C" timeout 2 redis-cli -h "$VIP" PING 2>/dev/null)" = PONG ] && break; sleep 0.2
done
[ "$(in_ns "$NS_C" timeout 2 redis-cli -h "$VIP" PING 2>/dev/null)" = PONG ] \
  || { KEEP=1; cat "$WORK/run.log"; die "redis under 'understudy run' never answered on $VIP"; }
"$US" status --admin "$ADMIN" || true

say "4. node C: client writing $WRITES SETs (+ INCR every 10th), 2000/s, to $VIP:6379"
bg "$NS_C" "$WORK/client.out" python3 "$CLIENT" --host "$VIP" --count 200000 --duration 90 \
  --rate 2000 --progress-every 500 --stop-file "$WORK/client.stop"
CLIENT_PID=${PIDS[-1]}
acked() { grep -o '"progress": [0-9]*' "$WORK/client.out" 2>/dev/null | tail -1 | grep -o '[0-9]*$' || echo 0; }
# wait_acked N: until the client has N writes acknowledged (at most 60 s).
wait_acked() {
  for _ in $(seq 1200); do
    [ "$(acked)" -ge "$1" ] && return 0
    kill -0 "$CLIENT_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
wait_acked $((WRITES / 3)) || { KEEP=1; die "the client did not get going"; }
echo "client: $(acked) writes acknowledged so far"

say "5. planned failover: understudy failover (to node B)"
T0=$(now)
"$US" failover --admin "$ADMIN" || { KEEP=1; tail -20 "$WORK/understudyd.log"; die "understudy failover failed"; }
wait_acked $(( $(acked) + WRITES / 4 )) || { KEEP=1; die "the client made no progress on node B"; }

say "6. node A comes back as B's backup: understudyd on A, then 'understudy backup add A:7700' asked of B"
ADMIN_A=$WORK/admin-a.sock
bg "$NS_A" "$WORK/understudyd-a.log" "$USD" --listen "$NET.1:7700" --data "$WORK/data-a" \
  --key "$WORK/cluster.key" --admin-socket "$ADMIN_A" --node-name nodeA \
  --service-address "$VIP/24" --service-dev eth0 --heartbeat-ms 100 --missed-heartbeats 3
for _ in $(seq 100); do "$US" status --admin "$ADMIN_A" >/dev/null 2>&1 && break; sleep 0.1; done
R0=$(now)
"$US" backup add "$NET.1:7700" --admin "$ADMIN" \
  || { KEEP=1; tail -20 "$WORK/understudyd.log" "$WORK/understudyd-a.log"; die "backup add failed"; }
# A's shadow replays the journal from seq 1 and catches up.
shadow_running() {
  "$US" status --admin "$ADMIN_A" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["state"] == "backup" and d["shadow"]["state"] == "running" else 1)'
}
for _ in $(seq 600); do shadow_running && break; sleep 0.1; done
shadow_running || { KEEP=1; tail -20 "$WORK/understudyd-a.log"; die "node A's shadow did not catch up"; }
echo "re-integration: $(python3 -c "import time; print('%.0f ms' % (1000 * (time.monotonic() - $R0)))") (backup add -> node A's shadow caught up)"
"$US" status --admin "$ADMIN" || true
wait_acked $(( $(acked) + WRITES / 4 )) || { KEEP=1; die "the client made no progress with A as backup"; }

say "7. second planned failover: understudy failover asked of node A (back to A)"
T1=$(now)
"$US" failover --admin "$ADMIN_A" \
  || { KEEP=1; tail -20 "$WORK/understudyd.log" "$WORK/understudyd-a.log"; die "the second failover failed"; }
wait_acked $(( $(acked) + WRITES / 4 )) || { KEEP=1; die "the client made no progress on node A"; }

say "8. the client stops, reads every key back"
touch "$WORK/client.stop"
for _ in $(seq 600); do kill -0 "$CLIENT_PID" 2>/dev/null || break; sleep 0.1; done
"$US" status --admin "$ADMIN_A" || true
python3 - "$WORK/client.out" "$T0" "$ROOT/tests/e2e" "$T1" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[3])
import jepsen_client
reps = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{") and '"acked"' in l]
if not reps:
    sys.exit("demo: the client printed no report")
rep = reps[-1]
print("\n%s   (the whole run: A -> B, A rejoins, B -> A)" % jepsen_client.jepsen_line(rep))
for t, what in ((sys.argv[2], "A -> B: understudy failover -> first reply from node B"),
                (sys.argv[4], "B -> A: understudy failover -> first reply from node A")):
    sw = jepsen_client.switchover(rep, float(t))
    print("switchover: %s (%s)" % ("%.1f ms" % (1000 * sw) if sw is not None else "not observed",
                                   what))
if rep["stopped"] or rep["readback_error"]:
    print("client: %s" % (rep["stopped"] or rep["readback_error"]))
sys.exit(0 if rep["lost"] == 0 and rep["ok"] else 1)
EOF
