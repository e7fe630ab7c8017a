#!/usr/bin/env bash
# Checks, and installs when missing, what the README's two commands need beyond
# the Rust toolchain. Idempotent: when everything is there it only looks.
#
#   scripts/setup.sh [build|up|test]     check, install what is missing, re-check
#   scripts/setup.sh --check [build|up|test] [--root DIR]
#                                        only report; exit 1 if anything is missing
#
# `build` (the default) is what `cargo build` needs; `up` (what
# `scripts/up.sh` needs) is the same as `build`; `test` (what
# `scripts/test.sh` needs) adds what the integration tests need (Python venv
# for the official Python client, Node.js and npm for the official Node.js
# client).
#
# Each requirement is reported on one line, `NAME: present (WHERE)` or
# `NAME: missing (WHY) - FIX`. The checks look for exactly what the build
# loads, not for a package name:
#   libclang   the C library bindgen loads at build time (the `rocksdb` crate's
#              bindings), found the way clang-sys 1.x searches for it: files
#              libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.* under
#              $LIBCLANG_PATH or /usr/local/llvm*/lib*, /usr/local/lib*[/*[/*]],
#              /usr/lib*[/*[/*]]; never libclang-cpp.so.* (Debian's
#              libclang-cpp14, the C++ interface, which bindgen cannot use).
#   clang headers  clang's builtin headers (stddef.h …) in the library's
#              resource directory, <libdir>/clang/<version>/include; without
#              them bindgen fails on rocksdb's c.h.
# `--root DIR` looks under DIR instead of / (the tests use fake roots); it
# ignores $LIBCLANG_PATH and checks only files, not commands.
set -euo pipefail

check_only=false
root=""
purpose="build"
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=true ;;
    --root) root="${2:?--root needs a directory}"; shift ;;
    build | up) purpose="build" ;;
    test) purpose="test" ;;
    *) echo "setup: unknown argument '$1' (expected --check, --root DIR, and one of build, up or test)" >&2; exit 2 ;;
  esac
  shift
done

missing=()      # names of missing requirements
packages=()     # Debian packages that provide them
# In --check mode every line goes to stdout; otherwise only what is missing,
# to stderr, so that a machine with everything stays quiet.
report() { if $check_only; then echo "$*"; else echo "$*" >&2; fi; }
present() { if $check_only; then echo "$*"; fi; }

# Prints the first libclang that bindgen would load, or nothing.
find_libclang() {
  local dirs=() dir file name
  if [ -z "$root" ] && [ -n "${LIBCLANG_PATH:-}" ]; then
    dirs=("$LIBCLANG_PATH")
  else
    shopt -s nullglob
    dirs=("$root"/usr/local/llvm*/lib* "$root"/usr/local/lib*/*/* "$root"/usr/local/lib*/*
      "$root"/usr/local/lib* "$root"/usr/lib*/*/* "$root"/usr/lib*/* "$root"/usr/lib*)
    shopt -u nullglob
  fi
  for dir in "${dirs[@]}"; do
    [ -d "$dir" ] || continue
    for file in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.*; do
      [ -e "$file" ] || continue
      name="$(basename "$file")"
      case "$name" in *-cpp.*) continue ;; esac
      echo "$file"
      return 0
    done
  done
}

# Prints the builtin-header directory that goes with the libclang at $1.
find_clang_headers() {
  local lib="$1" dir header
  for dir in "$(dirname "$lib")" "$(dirname "$(readlink -f "$lib")")"; do
    for header in "$dir"/clang/*/include/stddef.h; do
      [ -e "$header" ] && { dirname "$header"; return 0; }
    done
  done
}

check_libclang() {
  local lib headers cpp
  lib="$(find_libclang || true)"
  if [ -z "$lib" ]; then
    cpp="$(compgen -G "$root/usr/lib/llvm-*/lib/libclang-cpp.so*" | head -n1 || true)"
    if [ -n "$cpp" ]; then
      report "libclang: missing (only $cpp, the C++ interface, which bindgen cannot load) - installs libclang-dev"
    else
      report "libclang: missing (no libclang.so* for bindgen, which builds the rocksdb crate) - installs libclang-dev"
    fi
    missing+=(libclang)
    packages+=(libclang-dev)
    return
  fi
  present "libclang: present ($lib)"
  headers="$(find_clang_headers "$lib" || true)"
  if [ -z "$headers" ]; then
    report "clang headers: missing (no clang/<version>/include/stddef.h beside $lib) - installs libclang-dev"
    missing+=("clang headers")
    packages+=(libclang-dev)
  else
    present "clang headers: present ($headers)"
  fi
}

check_command() { # NAME PACKAGE WHY
  if [ -n "$root" ]; then return; fi
  if command -v "$1" >/dev/null 2>&1; then
    present "$1: present ($(command -v "$1"))"
  else
    report "$1: missing ($3) - installs $2"
    missing+=("$1")
    packages+=("$2")
  fi
}

check_cargo() {
  if [ -n "$root" ]; then return; fi
  if command -v cargo >/dev/null 2>&1; then
    present "cargo: present ($(command -v cargo))"
  else
    report "cargo: missing - install Rust with rustup (https://rustup.rs), then run this again"
    missing+=(cargo)
  fi
}

check_python_venv() {
  if [ -n "$root" ]; then return; fi
  local python="${TEST_PYTHON_BASE:-python3}"
  if ! command -v "$python" >/dev/null 2>&1; then
    report "$python: missing (runs the official Python client in tests) - installs python3-venv"
    missing+=("$python")
    packages+=(python3 python3-venv)
  elif "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    present "python venv: present ($(command -v "$python"))"
  else
    local version
    version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    report "python venv: missing ($python has no ensurepip) - installs python$version-venv"
    missing+=("python venv")
    packages+=("python$version-venv")
  fi
}

check_all() {
  missing=()
  packages=()
  check_cargo
  check_command c++ g++ "compiles RocksDB's C++"
  check_libclang
  if [ "$purpose" = test ]; then
    check_python_venv
    check_command node nodejs "runs the official Node.js client in tests"
    check_command npm npm "installs the official Node.js client"
  fi
}

check_all
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if $check_only; then exit 1; fi
if [[ " ${missing[*]} " == *" cargo "* ]]; then exit 1; fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { report "setup: need root or sudo to install: ${packages[*]}"; exit 1; }
  sudo="sudo"
fi
command -v apt-get >/dev/null \
  || { report "setup: no apt-get here; install the packages that provide: ${missing[*]}"; exit 1; }
# Unique package names, in order.
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | awk '!seen[$0]++')
report "setup: installing ${packages[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's package lists may be empty or stale: update once, then install.
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null \
  || { report "setup: 'apt-get install ${packages[*]}' failed (run it by hand to see why)"; exit 1; }

check_all
if [ ${#missing[@]} -ne 0 ]; then
  report "setup: still missing after installing: ${missing[*]}"
  exit 1
fi
