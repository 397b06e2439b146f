#!/usr/bin/env bash
# Builds everything and runs the whole test suite through CTest.
# Usage: scripts/test.sh              # release build in build/
#        scripts/test.sh --sanitize   # ASan + UBSan build in build-asan/
# Extra arguments after the optional --sanitize go to ctest (e.g. -L core).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build
build_args=()
if [ "${1:-}" = "--sanitize" ]; then
  shift
  dir=build-asan
  build_args=(--sanitize)
fi
scripts/build.sh "${build_args[@]}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
ctest_args=()
# The sanitizer build runs every unit test; the end-to-end training
# examples (label "examples", tens of seconds each in a release build, many
# minutes under ASan) run only in the release suite.
if [ "$dir" = build-asan ]; then ctest_args=(-LE examples); fi
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" "${ctest_args[@]}" "$@"
