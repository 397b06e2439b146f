#!/usr/bin/env bash
# Two-node trainrun jobs on one machine: each "host" is a network namespace,
# joined by a veth pair (10.77.0.1 <-> 10.77.0.2). Needs root and iproute2;
# otherwise it skips (exit 77). Everything it creates is removed on every
# exit path.
#
# usage: test_netns.sh TRAINRUN TR_WORKER
set -u
TRAINRUN=$1
WORKER=$2

skip() { echo "skipped: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "creating network namespaces needs root"
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) is not installed"

ns1=trn$$a
ns2=trn$$b
va=trv$$a
vb=trv$$b
tmp=$(mktemp -d /tmp/trtest_netns.XXXXXX)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  ip netns del "$ns1" 2>/dev/null
  ip netns del "$ns2" 2>/dev/null
  ip link del "$va" 2>/dev/null
  [ -n "${TRTEST_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

ip netns add "$ns1" 2>"$tmp/err" || skip "ip netns add failed: $(cat "$tmp/err")"
ip netns add "$ns2" || exit 1
ip link add "$va" type veth peer name "$vb" || skip "cannot create a veth pair"
ip link set "$va" netns "$ns1" && ip link set "$vb" netns "$ns2" || exit 1
ip -n "$ns1" addr add 10.77.0.1/24 dev "$va" && ip -n "$ns1" link set "$va" up &&
  ip -n "$ns1" link set lo up || exit 1
ip -n "$ns2" addr add 10.77.0.2/24 dev "$vb" && ip -n "$ns2" link set "$vb" up &&
  ip -n "$ns2" link set lo up || exit 1

export EMBER_STORE_SECRET="netns-test-secret-$$"
COMMON=(--nnodes 2 --rdzv 10.77.0.1:29400 --nproc 2 --monitor-interval 0.1
        --heartbeat-timeout 1 --grace-period 1 --rdzv-timeout 20)
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
show() { for f in "$@"; do echo "--- $f"; cat "$f"; done; }

# start NAME NS ARGS... : trainrun in namespace NS, output in $tmp/NAME.{out,err}.
# The files are emptied here, before the job starts: the job's own
# redirection runs later, in its subshell, and until then wait_ready would
# count the "ready" lines of the scenario before.
start() {
  local name=$1 ns=$2
  shift 2
  : >"$tmp/$name.out"
  : >"$tmp/$name.err"
  ip netns exec "$ns" "$TRAINRUN" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  last=$!
}

# finish PID SECONDS : exit code of PID, or 124 after SECONDS (then killed)
finish() {
  local pid=$1 limit=$2 i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt $((limit * 20)) ]; do
    sleep 0.05
    i=$((i + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    return 124
  fi
  wait "$pid"
}

# wait_ready FILE N : until FILE has N "ready" lines (10 s at most)
count_ready() {
  local n
  n=$(grep -c ready "$1" 2>/dev/null)
  echo "${n:-0}"
}
wait_ready() {
  local i=0
  while [ "$(count_ready "$1")" -lt "$2" ] && [ $i -lt 200 ]; do
    sleep 0.05
    i=$((i + 1))
  done
  [ "$(count_ready "$1")" -ge "$2" ]
}

# none_left MARKER : no process mentions MARKER (3 s at most)
none_left() {
  local i=0
  while pgrep -f "$1" >/dev/null && [ $i -lt 60 ]; do
    sleep 0.05
    i=$((i + 1))
  done
  ! pgrep -f "$1" >/dev/null
}

echo "== a full rendezvous with fixed node ranks: environments"
mkdir -p "$tmp/env"
start n1 "$ns2" "${COMMON[@]}" --node-rank 1 "$WORKER" env "$tmp/env"
p1=$last
start n0 "$ns1" "${COMMON[@]}" --node-rank 0 "$WORKER" env "$tmp/env"
p0=$last
finish $p0 30; rc0=$?
finish $p1 30; rc1=$?
if [ $rc0 -ne 0 ] || [ $rc1 -ne 0 ]; then
  fail "exit codes $rc0 and $rc1"
  show "$tmp"/n0.* "$tmp"/n1.*
fi
for r in 0 1 2 3; do
  f="$tmp/env/rank$r.env"
  want_group=$((r / 2))
  for kv in "RANK=$r" "LOCAL_RANK=$((r % 2))" "WORLD_SIZE=4" "LOCAL_WORLD_SIZE=2" \
            "GROUP_RANK=$want_group" "GROUP_WORLD_SIZE=2" "MASTER_ADDR=10.77.0.1" \
            "MASTER_PORT=29400" "EMBER_STORE_SECRET=$EMBER_STORE_SECRET" \
            "TRAINRUN_RESTART_COUNT=0"; do
    grep -qx "$kv" "$f" 2>/dev/null || fail "rank $r: $kv missing in $f"
  done
done

echo "== node ranks assigned at the rendezvous; workers use the store across hosts"
start n1 "$ns2" "${COMMON[@]}" "$WORKER" store
p1=$last
sleep 0.2 # node 1 first: it waits for node 0's store to come up
start n0 "$ns1" "${COMMON[@]}" "$WORKER" store
p0=$last
finish $p0 30; rc0=$?
finish $p1 30; rc1=$?
[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] || { fail "store job: exit codes $rc0 and $rc1"; show "$tmp"/n0.* "$tmp"/n1.*; }
[ "$(cat "$tmp"/n0.out "$tmp"/n1.out | grep -c 'store ok')" -eq 4 ] ||
  { fail "not every rank reached the store"; show "$tmp"/n0.* "$tmp"/n1.*; }
grep -q "round 0: node rank 1 of 2" "$tmp/n1.err" || fail "node 1 was not given node rank 1"

echo "== a failing rank on node 1 stops node 0; both exit with its code"
m=trtest-netns-$$-fail
start n0 "$ns1" "${COMMON[@]}" --node-rank 0 "$WORKER" fail 3 5 300 "marker=$m"
p0=$last
start n1 "$ns2" "${COMMON[@]}" --node-rank 1 "$WORKER" fail 3 5 300 "marker=$m"
p1=$last
finish $p0 20; rc0=$?
finish $p1 20; rc1=$?
[ $rc0 -eq 5 ] && [ $rc1 -eq 5 ] || { fail "failing rank: exit codes $rc0 and $rc1 (want 5)"; show "$tmp"/n0.* "$tmp"/n1.*; }
grep -q "job failed: rank 3" "$tmp/n1.err" || fail "node 1 did not print the summary"
grep -q "stopping: rank 3" "$tmp/n0.err" || { fail "node 0 did not name rank 3"; show "$tmp/n0.err"; }
none_left "$m" || fail "workers survived the failure"

echo "== a restart takes both nodes through a new rendezvous"
mkdir -p "$tmp/restart"
start n0 "$ns1" "${COMMON[@]}" --node-rank 0 --max-restarts 1 "$WORKER" restart 1 "$tmp/restart"
p0=$last
start n1 "$ns2" "${COMMON[@]}" --node-rank 1 --max-restarts 1 "$WORKER" restart 1 "$tmp/restart"
p1=$last
finish $p0 30; rc0=$?
finish $p1 30; rc1=$?
[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] || { fail "restart: exit codes $rc0 and $rc1"; show "$tmp"/n0.* "$tmp"/n1.*; }
for r in 0 1 2 3; do
  [ "$(cut -d' ' -f1 "$tmp/restart/rank$r.restarts" 2>/dev/null | tr '\n' ' ')" = "0 1 " ] ||
    fail "rank $r attempts: $(cat "$tmp/restart/rank$r.restarts" 2>/dev/null)"
done

echo "== node 1 dies mid-run: node 0 notices (heartbeat) and stops its workers"
m=trtest-netns-$$-n1
start n0 "$ns1" "${COMMON[@]}" --node-rank 0 "$WORKER" sleep "marker=$m"
p0=$last
start n1 "$ns2" "${COMMON[@]}" --node-rank 1 "$WORKER" sleep "marker=$m"
p1=$last
if wait_ready "$tmp/n0.out" 2 && wait_ready "$tmp/n1.out" 2; then
  t0=$(date +%s.%N)
  kill -9 $p1
  finish $p0 20; rc0=$?
  t1=$(date +%s.%N)
  [ $rc0 -ne 0 ] && [ $rc0 -ne 124 ] || fail "node 0 exited with $rc0 after node 1 died"
  grep -q "node 1 (host .*) is lost: no heartbeat" "$tmp/n0.err" || { fail "no lost-node message"; show "$tmp/n0.err"; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 5) }' || fail "node 0 took $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}') s"
  none_left "$m" || fail "workers survived a lost node"
else
  fail "workers did not start"
  show "$tmp"/n0.* "$tmp"/n1.*
fi
finish $p1 1 >/dev/null

echo "== node 0 dies mid-run: node 1 notices at once and stops its workers"
m=trtest-netns-$$-n0
start n0 "$ns1" "${COMMON[@]}" --node-rank 0 "$WORKER" sleep "marker=$m"
p0=$last
start n1 "$ns2" "${COMMON[@]}" --node-rank 1 "$WORKER" sleep "marker=$m"
p1=$last
if wait_ready "$tmp/n0.out" 2 && wait_ready "$tmp/n1.out" 2; then
  kill -9 $p0
  finish $p1 20; rc1=$?
  [ $rc1 -eq 1 ] || fail "node 1 exited with $rc1 after node 0 died (want 1)"
  grep -q "lost the rendezvous host 10.77.0.1:29400" "$tmp/n1.err" || { fail "no lost-host message"; show "$tmp/n1.err"; }
  none_left "$m" || fail "workers survived a lost rendezvous host"
else
  fail "workers did not start"
  show "$tmp"/n0.* "$tmp"/n1.*
fi
finish $p0 1 >/dev/null

echo "== node rank 0 on a host that is not the rendezvous host is an error"
start n1 "$ns2" "${COMMON[@]}" --node-rank 0 "$WORKER" ok
p1=$last
finish $p1 20; rc1=$?
[ $rc1 -eq 1 ] || fail "a second node rank 0 exited with $rc1 (want 1)"
grep -q "this is node rank 0, which hosts the rendezvous, but the rendezvous host '10.77.0.1' is not an address of this machine" "$tmp/n1.err" ||
  { fail "no message for a misplaced node rank 0"; show "$tmp/n1.err"; }

echo "== a rendezvous that cannot complete names who is missing"
start n0 "$ns1" "${COMMON[@]}" --node-rank 0 --rdzv-timeout 1 "$WORKER" ok
p0=$last
finish $p0 20; rc0=$?
[ $rc0 -eq 1 ] || fail "incomplete rendezvous exited with $rc0 (want 1)"
grep -q "failed after 1 s (--rdzv-timeout): 1 of 2 nodes joined: .* (node 0); missing 1 node (node rank 1)" "$tmp/n0.err" ||
  { fail "no missing-node message"; show "$tmp/n0.err"; }

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all netns checks passed"
