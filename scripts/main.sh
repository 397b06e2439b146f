#!/usr/bin/env bash
# The main job. Until the training example lands: a demo of the tensor library.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/examples/tensor_demo "$@"
