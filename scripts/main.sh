#!/usr/bin/env bash
# The main job: trains the Fashion-MNIST CNN with DDP on 2 ranks under
# trainrun (examples/train.py), installing and building what it needs.
# Arguments go to the training script (see --help), e.g. --epochs 3.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec build/bin/trainrun --nproc 2 examples/train.py "$@"
