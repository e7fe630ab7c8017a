#!/usr/bin/env bash
# Creates, idempotently, the virtualenv in which the integration tests run the
# official RocketMQ Python client (tests/python/), and prints its interpreter.
#
#   TEST_PYTHON="$(scripts/python-env.sh)" cargo test -p meridian-tests --test integration python_client
#
# The env lives in ${PYTHON_ENV_DIR:-$HOME/.cache/meridian/python-env}
# (outside the clone, like the cargo target dir, so clones share it). The
# requirements are installed only when tests/python/requirements.txt or the
# base interpreter changed since the last install (a stamp file in the env
# holds their hash). Progress goes to stderr; stdout is only the path.
#
# Nothing named MERIDIAN_* is exported: such variables override topology
# settings in Meridian processes, which refuse unknown ones. The tests get
# the interpreter as TEST_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

env_dir="${PYTHON_ENV_DIR:-$HOME/.cache/meridian/python-env}"
requirements="tests/python/requirements.txt"
base_python="${TEST_PYTHON_BASE:-python3}"
stamp="$env_dir/.requirements.sha256"

log() { echo "python-env: $*" >&2; }

command -v "$base_python" >/dev/null \
  || { log "$base_python not found; install Python 3 (3.8 or newer)"; exit 1; }

mkdir -p "$(dirname "$env_dir")"
# One creator at a time: concurrent test runs share the env.
if command -v flock >/dev/null; then
  exec 9>"$env_dir.lock"
  flock 9
fi

python="$env_dir/bin/python"

env_works() { [ -x "$python" ] && "$python" -c 'import sys' >/dev/null 2>&1; }

create_env() {
  rm -rf "$env_dir"
  "$base_python" -m venv "$env_dir" >&2
}

install_venv_package() {
  # Debian's python3 ships venv without ensurepip in a separate package.
  if [ "$(id -u)" -ne 0 ]; then
    log "'$base_python -m venv' failed; install python3-venv (needs root), then run this again"
    exit 1
  fi
  local version
  version="$("$base_python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  log "installing python3-venv (python$version-venv) with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends python3-venv >/dev/null
  apt-get install -y --no-install-recommends "python$version-venv" >/dev/null 2>&1 || true
}

if ! env_works; then
  "$base_python" -m venv --help >/dev/null 2>&1 || install_venv_package
  log "creating $env_dir"
  if ! create_env; then
    install_venv_package
    create_env
  fi
fi

wanted="$(
  {
    sha256sum "$requirements" | cut -d' ' -f1
    "$python" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  log "installing $requirements into $env_dir"
  rm -f "$stamp"
  "$python" -m pip install --quiet --disable-pip-version-check --requirement "$requirements" >&2
  "$python" -c 'import rocketmq' \
    || { log "the client does not import after installing $requirements"; exit 1; }
  echo "$wanted" >"$stamp"
fi

echo "$python"
