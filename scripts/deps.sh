#!/usr/bin/env bash
# Installs the Debian packages ember needs to build and test, only those
# missing (idempotent: no apt-get at all when everything is there).
# Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail

PACKAGES=(
  gcc g++ make cmake pkg-config
  libopenblas-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler
  libsodium-dev libjansson-dev zlib1g-dev libyaml-dev
  python3-dev python3-numpy
  openmpi-bin libopenmpi-dev
  dataset-fashion-mnist
  iproute2 procps psmisc
  slurmctld slurmd slurm-client munge
  "$@"
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ember: installing missing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "ember: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
