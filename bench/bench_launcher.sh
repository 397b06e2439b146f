#!/usr/bin/env bash
# trainrun against torchrun and mpirun, side by side from one run:
#   1. start-up + teardown: N workers that exit at once (a C executable,
#      /bin/true, and an empty Python script), N = 2 and 4;
#   2. failure to exit: rank 1 fails 0.3 s in while the others sleep; the
#      time from its failure (a timestamp it takes as it exits) to the
#      launcher's exit.
# Each cell is the median of REPS runs (torchrun: TORCH_REPS). torchrun runs
# with --standalone and its fast --monitor_interval 0.1 (its default of 5 s
# alone costs seconds; one row shows that too) and --redirects 9:1 --tee 9:1,
# without which Debian's torchrun crashes on Python 3.11. mpirun runs with
# --allow-run-as-root --oversubscribe when root.
#
# usage: bench/bench_launcher.sh [BUILD_DIR]      (default: build)
# env:   REPS (5), TORCH_REPS (3), NS ("2 4"), PYTHON (/usr/bin/python3)
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
TRAINRUN=$build/bin/trainrun
[ -x "$TRAINRUN" ] || { echo "no $TRAINRUN: build first (cmake --build $build)" >&2; exit 1; }
REPS=${REPS:-5}
TORCH_REPS=${TORCH_REPS:-3}
NS=${NS:-"2 4"}
PYTHON=${PYTHON:-/usr/bin/python3}
have_torchrun=0
command -v torchrun >/dev/null 2>&1 && have_torchrun=1
have_mpirun=0
command -v mpirun >/dev/null 2>&1 && have_mpirun=1
MPI=(mpirun)
[ "$(id -u)" = 0 ] && MPI+=(--allow-run-as-root)
MPI+=(--oversubscribe)
TORCH=(torchrun --standalone --redirects 9:1 --tee 9:1 --monitor_interval 0.1)

tmp=$(mktemp -d /tmp/bench_launcher.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "pass" >"$tmp/empty.py"
# the failing worker: rank 1 fails after 0.3 s, the others sleep (and die
# of SIGTERM, as workers do)
cat >"$tmp/fail.sh" <<'EOF'
#!/usr/bin/env bash
rank=${RANK:-${OMPI_COMM_WORLD_RANK:-0}}
if [ "$rank" = 1 ]; then
  sleep 0.3
  echo "$EPOCHREALTIME" >"$BENCH_STAMP"
  exit 1
fi
exec sleep 30
EOF
chmod +x "$tmp/fail.sh"

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

# elapsed REPS CMD... : median wall seconds of CMD (its output discarded)
elapsed() {
  local reps=$1
  shift
  for _ in $(seq "$reps"); do
    local t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1 </dev/null
    local t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
  done | median
}

# to_exit REPS CMD... : median seconds from the worker's failure stamp to
# the launcher's exit
to_exit() {
  local reps=$1
  shift
  for _ in $(seq "$reps"); do
    rm -f "$tmp/stamp"
    BENCH_STAMP=$tmp/stamp "$@" >/dev/null 2>&1 </dev/null
    local t1=$EPOCHREALTIME
    [ -s "$tmp/stamp" ] && awk -v a="$(cat "$tmp/stamp")" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
  done | median
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || a + 0 == 0) print "-"; else printf "%.1fx\n", b / a }'; }
fmt() { awk -v v="$1" 'BEGIN { if (v == "nan") print "-"; else printf "%.3f\n", v }'; }

echo "trainrun vs torchrun vs mpirun on $(hostname -s), $(nproc) CPUs; $(date -u +%FT%TZ)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
[ $have_torchrun = 1 ] || echo "(torchrun not found: its columns are empty)"
[ $have_mpirun = 1 ] || echo "(mpirun not found: its columns are empty)"
echo
echo "start-up + teardown of N workers that exit at once: median of $REPS runs (torchrun: $TORCH_REPS), seconds"
printf "%-8s %3s %10s %10s %10s %12s %12s\n" worker N trainrun torchrun mpirun torch/train mpi/train
for n in $NS; do
  for kind in C python; do
    if [ $kind = C ]; then
      tr=$(elapsed "$REPS" "$TRAINRUN" --nproc "$n" /bin/true)
      th=nan
      [ $have_torchrun = 1 ] && th=$(elapsed "$TORCH_REPS" "${TORCH[@]}" --nproc_per_node "$n" --no_python /bin/true)
      mp=nan
      [ $have_mpirun = 1 ] && mp=$(elapsed "$REPS" "${MPI[@]}" -np "$n" /bin/true)
    else
      tr=$(elapsed "$REPS" "$TRAINRUN" --nproc "$n" "$tmp/empty.py")
      th=nan
      [ $have_torchrun = 1 ] && th=$(elapsed "$TORCH_REPS" "${TORCH[@]}" --nproc_per_node "$n" "$tmp/empty.py")
      mp=nan
      [ $have_mpirun = 1 ] && mp=$(elapsed "$REPS" "${MPI[@]}" -np "$n" "$PYTHON" "$tmp/empty.py")
    fi
    printf "%-8s %3s %10s %10s %10s %12s %12s\n" $kind "$n" "$(fmt "$tr")" "$(fmt "$th")" \
      "$(fmt "$mp")" "$(ratio "$tr" "$th")" "$(ratio "$tr" "$mp")"
  done
done
if [ $have_torchrun = 1 ]; then
  th=$(elapsed 1 torchrun --standalone --redirects 9:1 --tee 9:1 --nproc_per_node 2 --no_python /bin/true)
  echo "(torchrun with its default --monitor_interval 5, N=2, C, one run: $(fmt "$th") s)"
fi
echo
echo "time from a worker's failure to the launcher's exit: median of $REPS runs (torchrun: $TORCH_REPS), seconds"
printf "%-8s %3s %10s %10s %10s %12s %12s\n" worker N trainrun torchrun mpirun torch/train mpi/train
for n in $NS; do
  tr=$(to_exit "$REPS" "$TRAINRUN" --nproc "$n" "$tmp/fail.sh")
  th=nan
  [ $have_torchrun = 1 ] && th=$(to_exit "$TORCH_REPS" "${TORCH[@]}" --nproc_per_node "$n" --no_python "$tmp/fail.sh")
  mp=nan
  [ $have_mpirun = 1 ] && mp=$(to_exit "$REPS" "${MPI[@]}" -np "$n" "$tmp/fail.sh")
  printf "%-8s %3s %10s %10s %10s %12s %12s\n" bash "$n" "$(fmt "$tr")" "$(fmt "$th")" \
    "$(fmt "$mp")" "$(ratio "$tr" "$th")" "$(ratio "$tr" "$mp")"
done
echo
echo "targets: trainrun --nproc 2 /bin/true <= 0.1 s (<= 2.5x mpirun); failure noticed and"
echo "the job torn down within 0.2 s (+ the grace period, unused here: the workers die of SIGTERM)"
