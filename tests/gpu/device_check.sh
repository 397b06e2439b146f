#!/usr/bin/env bash
# The one GPU check: run on a machine with a CUDA device (an H200 here) from
# the repository root:
#
#     tests/gpu/device_check.sh [build-dir]      # default: build-device
#
# 1. configures with -DEMBER_CUDA=ON (nvcc must be found) and builds only
#    what the check needs (the GPU tests and bench_gpu) with all cores;
# 2. runs `ctest -L cuda` (every op vs the CPU, gradients, allocator,
#    streams, cuDNN layers, nccl, the DataLoader's pin_memory, ember.cuda
#    from Python when CPython's headers are there) plus the fake-device
#    allocator test;
# 3. runs bench_gpu: GEMM TFLOP/s vs a direct cuBLAS call, elementwise
#    and reduction bandwidth vs a device-to-device copy, a training step of
#    the Fashion-MNIST CNN and of a GPT-style transformer block;
# 4. prints one summary table (the benchmark's, then the test results).
#
# Budget: under 5 minutes on one H200 (build ~2-3 min with 16 cores, tests
# and benchmark ~1 min each). Every step has a timeout (60 + 300 + 120 +
# 110 s at most, under the device tool's 10-minute limit); a failed
# configure or build stops the script, failed tests or benchmark rows are
# reported in the summary and make the exit status non-zero. EMBER_DEVICE_CHECK_QUICK=1 runs a
# shorter benchmark.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-device}
jobs=$(nproc 2>/dev/null || echo 4)
log=$build/device_check.log
start=$(date +%s)

step() { printf '\n== %s (%ds)\n' "$1" "$(( $(date +%s) - start ))"; }
die() { printf '\ndevice_check: FAILED at %s (see %s)\n' "$1" "$log" >&2; exit 1; }

mkdir -p "$build"
: > "$log"

step "GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  echo "nvidia-smi not found (the tests will say whether a device is usable)"
fi

# The Python extension too (for python.test_cuda) when CPython's headers
# are there.
py=OFF
/usr/bin/python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null && py=ON
step "configure (EMBER_CUDA=ON, EMBER_PYTHON=$py)"
timeout 60 cmake -S "$root" -B "$build" -DEMBER_CUDA=ON -DEMBER_PYTHON=$py \
  -DCMAKE_BUILD_TYPE=Release >>"$log" 2>&1 || die "configure"
grep -E "ember: CUDA" "$log" | tail -1 || true

step "build (-j$jobs)"
targets=(gpu_test_caching_alloc bench_gpu)
for f in "$here"/test_cuda_*.c; do targets+=("gpu_$(basename "${f%.c}")"); done
[ "$py" = ON ] && targets+=(ember_py)
timeout 300 cmake --build "$build" -j"$jobs" --target "${targets[@]}" >>"$log" 2>&1 || die "build"

step "ctest -L cuda"
test_rc=0
(cd "$build" && timeout 120 ctest -L cuda --output-on-failure --timeout 110 \
   -j4 >"$build/ctest_cuda.log" 2>&1) || test_rc=$?
tail -n 25 "$build/ctest_cuda.log"

step "benchmark"
bench_rc=0
bench_args=()
[ "${EMBER_DEVICE_CHECK_QUICK:-0}" = 1 ] && bench_args+=(--quick)
timeout 110 "$build/tests/gpu/bench_gpu" ${bench_args[@]+"${bench_args[@]}"} >"$build/bench_gpu.log" 2>&1 || bench_rc=$?

step "summary"
sed -n '/^ember GPU benchmark/,$p' "$build/bench_gpu.log" || true
if [ "$bench_rc" -ne 0 ]; then
  echo "benchmark exit status $bench_rc; its output:"
  tail -n 40 "$build/bench_gpu.log"
fi
echo
grep -E "tests passed|tests failed|Passed|Failed|Not Run|Skipped" "$build/ctest_cuda.log" |
  sed -E 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: //' | tail -n 20 || true
printf '\ndevice_check: tests %s, benchmark %s, %ds in all\n' \
  "$([ "$test_rc" -eq 0 ] && echo ok || echo "FAILED ($test_rc)")" \
  "$([ "$bench_rc" -eq 0 ] && echo ok || echo "FAILED ($bench_rc)")" "$(( $(date +%s) - start ))"
[ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
