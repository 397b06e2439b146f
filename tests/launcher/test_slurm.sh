#!/usr/bin/env bash
# trainrun under a real single-host Slurm: the test starts munged,
# slurmctld and slurmd with a generated configuration in a temp directory
# (nothing under /etc is used or changed), runs `srun trainrun ...`, and
# stops them again on every exit path. Needs root and Debian's slurmctld,
# slurmd, slurm-client and munge; otherwise it skips (exit 77).
#
# usage: test_slurm.sh TRAINRUN TR_WORKER
set -u
TRAINRUN=$1
WORKER=$2

skip() { echo "skipped: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "starting slurmctld/slurmd needs root"
for b in slurmctld slurmd srun sinfo munged; do
  command -v $b >/dev/null 2>&1 || [ -x /usr/sbin/$b ] ||
    skip "$b is not installed (Debian packages: slurmctld slurmd slurm-client munge)"
done
PATH=$PATH:/usr/sbin

tmp=$(mktemp -d /tmp/trtest_slurm.XXXXXX)
chmod 755 "$tmp"
host=$(hostname -s)
started=()

stop_pidfile() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1" 2>/dev/null)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
}
cleanup() {
  stop_pidfile "$tmp/slurmd.pid"
  stop_pidfile "$tmp/slurmctld.pid"
  stop_pidfile "$tmp/munged.pid"
  [ -n "${TRTEST_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 10000))
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then echo $p; return; fi
  done
  echo 26817
}

# munge, with its own key and socket
dd if=/dev/urandom of="$tmp/munge.key" bs=128 count=1 2>/dev/null
chmod 400 "$tmp/munge.key"
munged -f --key-file="$tmp/munge.key" -S "$tmp/munge.sock" --pid-file="$tmp/munged.pid" \
  --log-file="$tmp/munged.log" --seed-file="$tmp/munged.seed" 2>"$tmp/munged.err" ||
  skip "munged did not start: $(cat "$tmp/munged.err" "$tmp/munged.log" 2>/dev/null | tail -3)"

mkdir -p "$tmp/state" "$tmp/spool"
cpus=$(nproc)
cat >"$tmp/slurm.conf" <<EOF
ClusterName=trtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=trtest Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$tmp/slurm.conf

slurmctld -f "$SLURM_CONF" 2>"$tmp/slurmctld.err" ||
  skip "slurmctld did not start: $(tail -3 "$tmp/slurmctld.err" "$tmp/slurmctld.log" 2>/dev/null)"
slurmd -f "$SLURM_CONF" 2>"$tmp/slurmd.err" ||
  skip "slurmd did not start: $(tail -3 "$tmp/slurmd.err" "$tmp/slurmd.log" 2>/dev/null)"
ready=0
for _ in $(seq 150); do
  state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
  case "$state" in idle*|mix*|alloc*) ready=1; break ;; esac
  sleep 0.1
done
[ $ready = 1 ] || skip "the Slurm node did not come up (state '${state:-none}'): $(tail -3 "$tmp/slurmd.log" 2>/dev/null)"

export EMBER_STORE_SECRET="slurm-test-secret-$$"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
show() { for f in "$@"; do echo "--- $f"; cat "$f"; done; }
TR=(--monitor-interval 0.2 --heartbeat-timeout 2 --grace-period 1 --rdzv-timeout 30)

echo "== srun -N1 -n1 trainrun --nproc 2"
mkdir -p "$tmp/env1"
timeout 60 srun -N1 -n1 "$TRAINRUN" "${TR[@]}" --nproc 2 "$WORKER" env "$tmp/env1" \
  >"$tmp/a.out" 2>"$tmp/a.err"
rc=$?
[ $rc -eq 0 ] || { fail "srun -n1 exited with $rc"; show "$tmp/a.out" "$tmp/a.err"; }
for r in 0 1; do
  f="$tmp/env1/rank$r.env"
  for kv in "RANK=$r" "LOCAL_RANK=$r" "WORLD_SIZE=2" "GROUP_RANK=0" "GROUP_WORLD_SIZE=1"; do
    grep -qx "$kv" "$f" 2>/dev/null || fail "srun -n1, rank $r: $kv missing"
  done
  grep -qx "TRAINRUN_RUN_ID=[0-9][0-9]*" "$f" 2>/dev/null || fail "srun -n1: the run id is not the job id"
done

echo "== srun -N1 -n2: two agents meet through Slurm's variables"
mkdir -p "$tmp/env2"
timeout 60 srun -N1 -n2 "$TRAINRUN" "${TR[@]}" --nproc 2 "$WORKER" env "$tmp/env2" \
  >"$tmp/b.out" 2>"$tmp/b.err"
rc=$?
[ $rc -eq 0 ] || { fail "srun -n2 exited with $rc"; show "$tmp/b.out" "$tmp/b.err"; }
for r in 0 1 2 3; do
  f="$tmp/env2/rank$r.env"
  for kv in "RANK=$r" "LOCAL_RANK=$((r % 2))" "WORLD_SIZE=4" "GROUP_RANK=$((r / 2))" \
            "GROUP_WORLD_SIZE=2" "MASTER_ADDR=$host"; do
    grep -qx "$kv" "$f" 2>/dev/null || fail "srun -n2, rank $r: $kv missing"
  done
done

echo "== srun -N1 -n2: a failing rank stops both agents; srun reports its code"
timeout 60 srun -N1 -n2 "$TRAINRUN" "${TR[@]}" --nproc 2 "$WORKER" fail 2 6 200 \
  >"$tmp/c.out" 2>"$tmp/c.err"
rc=$?
[ $rc -eq 6 ] || { fail "failing job: srun exited with $rc (want 6)"; show "$tmp/c.out" "$tmp/c.err"; }
grep -q "job failed: rank 2" "$tmp/c.err" || { fail "no summary naming rank 2"; show "$tmp/c.err"; }

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all slurm checks passed"
