#!/usr/bin/env bash
# The main job: trains the Fashion-MNIST CNN (installs what it needs, builds
# as needed). Arguments go to the trainer (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/examples/train_fashion_mnist "$@"
