#!/usr/bin/env bash
# Configures and builds ember into build/ (or build-asan/ with --sanitize).
# Usage: scripts/build.sh [--sanitize] [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build
opts=(-DCMAKE_BUILD_TYPE=Release)
if [ "${1:-}" = "--sanitize" ]; then
  shift
  dir=build-asan
  # CUDA code is covered by the release build (it cannot run here, and
  # the sanitizers do not instrument device code): leave it out.
  opts=(-DCMAKE_BUILD_TYPE=Debug -DEMBER_SANITIZE=ON -DEMBER_CUDA=OFF)
fi
scripts/deps.sh
cmake -S . -B "$dir" "${opts[@]}" "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
