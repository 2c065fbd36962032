#!/usr/bin/env bash
# Installs what maskps needs from Debian 12 packages (only what is missing),
# then configures and builds one build tree.
#
#   scripts/setup.sh [BUILD_DIR] [extra cmake args...]
#
# Root runs apt-get directly; anyone else through sudo. Nothing is downloaded
# from anywhere but Debian's archive.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
shift || true

packages=(
  build-essential cmake ninja-build pkg-config
  libzmq3-dev libmsgpack-dev libopenblas-dev librocksdb-dev
  libyaml-dev libxxhash-dev libcmocka-dev
  clang libclang-rt-14-dev          # libFuzzer and sanitizer runtimes
  python3                           # the launcher's helper scripts
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
      echo "setup: need root or sudo to install: ${missing[*]}" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
ninja -C "$build" -j"$(nproc)"
