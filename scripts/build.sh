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
  opts=(-DCMAKE_BUILD_TYPE=Debug -DEMBER_SANITIZE=ON)
fi
scripts/deps.sh
cmake -S . -B "$dir" "${opts[@]}" "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
