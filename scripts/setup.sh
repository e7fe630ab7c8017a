#!/usr/bin/env bash
# Installs what building Meridian needs beyond the Rust toolchain, idempotently:
# libclang (the rocksdb crate generates its bindings with it at build time).
set -euo pipefail

have_libclang() {
  dpkg -s libclang-dev >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null 2>&1
}

if ! have_libclang; then
  echo "setup: installing libclang-dev (needed to build the rocksdb crate)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install libclang-dev" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends libclang-dev >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends libclang-dev; }
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
