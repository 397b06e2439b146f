#!/usr/bin/env bash
# Allreduce latency and bus bandwidth, side by side from one run: ember's
# backends (bench_allreduce), torch.distributed gloo (bench_gloo.py, PyTorch
# 1.13) and MPI_Allreduce over Open MPI's TCP and shared-memory transports
# (bench_mpi_allreduce.c, compiled here with mpicc: the CMake build never
# needs MPI).
#
#   bench/bench_allreduce.sh [-B build-dir] [-b ember-backends] [-n ranks] [-s bytes,...] [-t seconds]
#                            [-r rounds] [-N nice]
#
# Defaults: -B build, -b tcp,shm (auto also exists: shm within a host),
# -n 2,4, -s 4096,65536,1048576,16777216,67108864, -t 0.15 (seconds per
# repetition; each number is the median of 5), -r 3 (rounds: every
# implementation runs once per round, in turn, and the table shows the
# median over the rounds, so a machine that drifts during the run weighs
# on all of them alike). A reference that cannot run
# (no PyTorch, no mpicc) is left out with a note. Prints the RESULT lines,
# then a table with the ratios of each ember backend to gloo and to MPI
# (TCP for tcp, shared memory for shm/auto), bandwidth ratios and latency
# ratios (the reference's time / ember's: > 1 means ember is faster), and
# rank 0's CPU time per op, which says how much work an op costs even when
# other jobs share the machine. -N runs everything under `nice -n N` (a
# negative N, as root, keeps a busy shared machine from distorting the
# comparison; every implementation gets the same).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build="$root/build"
backends=tcp,shm
ranks=2,4
rounds=3
sizes=4096,65536,1048576,16777216,67108864
secs=0.15
nice_n=0
while getopts "B:b:n:s:t:r:N:h" opt; do
  case $opt in
    B) build=$OPTARG ;;
    b) backends=$OPTARG ;;
    n) ranks=$OPTARG ;;
    s) sizes=$OPTARG ;;
    t) secs=$OPTARG ;;
    r) rounds=$OPTARG ;;
    N) nice_n=$OPTARG ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
sizes_sp=${sizes//,/ }
run() { nice -n "$nice_n" "$@"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out="$tmp/results"
: > "$out"

have_iperf=0
if command -v iperf3 >/dev/null; then have_iperf=1; else echo "note: iperf3 unavailable; loopback TCP rate left out" >&2; fi
have_mpi=0
if command -v mpicc >/dev/null && command -v mpirun >/dev/null &&
   mpicc -O2 -o "$tmp/bench_mpi" "$here/bench_mpi_allreduce.c" 2>"$tmp/mpicc.log"; then
  have_mpi=1
  mpi=(nice -n "$nice_n" mpirun --allow-run-as-root --oversubscribe --bind-to none --mca pml ob1)
else
  echo "note: mpicc/mpirun unavailable; MPI left out" >&2
fi
[ -x "$build/bench/bench_allreduce" ] ||
  echo "note: $build/bench/bench_allreduce not built; ember left out" >&2

# Every implementation runs once per round, one after the other; the table
# takes each figure's median over the rounds, so drift of a shared machine
# during the run weighs on all of them alike.
for round in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "== round $round of $rounds"
  if [ -x "$build/bench/bench_allreduce" ]; then
    run "$build/bench/bench_allreduce" -k -b "$backends" -n "$ranks" -s "$sizes" -t "$secs" | tee -a "$out"
  fi
  for w in ${ranks//,/ }; do
    run /usr/bin/python3 "$here/bench_gloo.py" "$w" "$secs" $sizes_sp | tee -a "$out" ||
      echo "note: gloo at $w ranks did not run" >&2
  done
  if [ "$have_mpi" = 1 ]; then
    for w in ${ranks//,/ }; do
      "${mpi[@]}" -np "$w" --mca btl self,tcp --mca btl_tcp_if_include lo \
        "$tmp/bench_mpi" mpi-tcp "$secs" $sizes_sp 2>"$tmp/mpi.err" | tee -a "$out" ||
        { echo "note: MPI over TCP at $w ranks failed:" >&2; tail -3 "$tmp/mpi.err" >&2; }
      "${mpi[@]}" -np "$w" --mca btl self,vader \
        "$tmp/bench_mpi" mpi-shm "$secs" $sizes_sp 2>"$tmp/mpi.err" | tee -a "$out" ||
        { echo "note: MPI over shared memory at $w ranks failed:" >&2; tail -3 "$tmp/mpi.err" >&2; }
    done
    # how fast this machine's loopback TCP is by a standard tool: two
    # streams at once, one each way, as a 2-rank ring runs them
    if [ "$have_iperf" = 1 ] && [[ ",$ranks," == *,2,* ]]; then
      port=$((20000 + RANDOM % 20000))
      timeout 30 iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
      sleep 0.5
      timeout 30 nice -n "$nice_n" iperf3 -c 127.0.0.1 -p "$port" --bidir -t 3 -J >"$tmp/iperf.json" 2>&1 &&
        /usr/bin/python3 -c 'import json, sys
e = json.load(open(sys.argv[1]))["end"]
print("LOOPBACK", e["sum_received"]["bits_per_second"] / 8, e["sum_received_bidir_reverse"]["bits_per_second"] / 8)' \
          "$tmp/iperf.json" | tee -a "$out" ||
        echo "note: iperf3 --bidir did not run" >&2
      wait
    fi
  fi
done

/usr/bin/python3 - "$out" <<'EOF'
import sys
rows = {}
impls = []
loop = []  # iperf3 --bidir: (bytes/s one way, bytes/s the other way) per round
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3 and p[0] == "LOOPBACK":
        loop.append((float(p[1]), float(p[2])))
        continue
    if len(p) < 6 or p[0] != "RESULT":
        continue
    impl, w, b, sec, bw = p[1], int(p[2]), int(p[3]), float(p[4]), float(p[5])
    cpu = float(p[6]) if len(p) > 6 else float("nan")
    if impl not in impls:
        impls.append(impl)
    rows.setdefault((w, b), {}).setdefault(impl, []).append((sec, cpu))
if not rows:
    print("no results"); sys.exit(1)
def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
for (w, b), r in rows.items():  # per implementation: the median over the rounds
    for i, runs in r.items():
        sec = median([x[0] for x in runs])
        r[i] = (sec, 2 * (w - 1) / w * b / sec / 1e9, median([x[1] for x in runs]))
def size(b):
    for u, s in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= s and b % s == 0:
            return f"{b // s} {u}"
    return f"{b} B"
def lat(sec):
    return f"{sec * 1e6:9.1f}" if sec < 0.01 else f"{sec * 1e3:7.2f}ms"
print()
print("allreduce float32 sum: time per op / bus bandwidth GB/s (2(n-1)/n * bytes / time)")
hdr = f"{'ranks':>5} {'size':>8} |" + "|".join(f" {i:^22} " for i in impls)
print(hdr)
print("-" * len(hdr))
for (w, b) in sorted(rows):
    r = rows[(w, b)]
    cells = []
    for i in impls:
        cells.append(f" {lat(r[i][0]):>11} {r[i][1]:8.3f}  " if i in r else f" {'-':^22} ")
    print(f"{w:>5} {size(b):>8} |" + "|".join(cells))
print()
print("rank 0's CPU time per op (user + system, all threads; MPI busy-polls)")
print(f"{'ranks':>5} {'size':>8} |" + "|".join(f" {i:^12} " for i in impls))
for (w, b) in sorted(rows):
    r = rows[(w, b)]
    print(f"{w:>5} {size(b):>8} |" + "|".join(f" {lat(r[i][2]) if i in r else '-':>12} " for i in impls))
ember = [i for i in impls if i.startswith("ember-")]
refs = {"gloo": "gloo"}
print()
print("ratios (ember / reference): bandwidth x, latency x (reference time / ember time)")
for e in ember:
    mref = "mpi-tcp" if e == "ember-tcp" else "mpi-shm"
    print(f"  {e}: vs gloo and vs {mref}")
    for (w, b) in sorted(rows):
        r = rows[(w, b)]
        if e not in r:
            continue
        parts = []
        for ref in ("gloo", mref):
            if ref in r:
                parts.append(f"{ref}: bw {r[e][1] / r[ref][1]:6.2f}x  time {r[ref][0] / r[e][0]:6.2f}x")
        print(f"    {w} ranks {size(b):>8}: " + "   ".join(parts))
if loop:
    tot = median([a + b for a, b in loop])
    print()
    print(f"loopback TCP by iperf3 --bidir (one stream each way at once, median of {len(loop)}): "
          f"{tot / 1e9:.2f} GB/s in all")
    print("  a 2-rank allreduce of B bytes moves B each way (2B through the kernel); the rate each")
    print("  implementation reaches doing so, and what 2x gloo's time would need:")
    for (w, b) in sorted(rows):
        r = rows[(w, b)]
        if w != 2 or b < (1 << 20) or "ember-tcp" not in r:
            continue
        parts = [f"{i} {2 * b / r[i][0] / 1e9:5.2f}" for i in ("ember-tcp", "gloo", "mpi-tcp") if i in r]
        need = f"   2x gloo: {2 * b / (r['gloo'][0] / 2) / 1e9:5.2f}" if "gloo" in r else ""
        print(f"    {size(b):>8}: GB/s " + "  ".join(parts) + f"  iperf3 {tot / 1e9:5.2f}" + need)
EOF
