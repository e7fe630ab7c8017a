#!/usr/bin/env bash
# Installs, idempotently, the official RocketMQ Node.js client
# (npm `rocketmq-client-nodejs`, pinned in tests/nodejs/package-lock.json) that
# the integration tests drive through the scripts in tests/nodejs/, and prints
# the directory holding its node_modules.
#
#   TEST_NODEJS_MODULES="$(scripts/nodejs-env.sh)/node_modules" \
#     cargo test -p meridian-tests --test integration nodejs_client
#
# The directory is ${NODEJS_ENV_DIR:-$HOME/.cache/meridian/nodejs-env}
# (outside the clone, like the cargo target dir, so clones share it). `npm ci`
# runs only when tests/nodejs/package.json, package-lock.json or the Node.js
# version changed since the last install (a stamp file holds their hash).
# Progress goes to stderr; stdout is only the path.
#
# Nothing named MERIDIAN_* is exported: such variables override topology
# settings in Meridian processes, which refuse unknown ones. The tests get
# the modules directory as TEST_NODEJS_MODULES.
set -euo pipefail
cd "$(dirname "$0")/.."

env_dir="${NODEJS_ENV_DIR:-$HOME/.cache/meridian/nodejs-env}"
source_dir="tests/nodejs"
stamp="$env_dir/.lock.sha256"

log() { echo "nodejs-env: $*" >&2; }

command -v node >/dev/null || { log "node not found; install Node.js (16 or newer)"; exit 1; }
command -v npm >/dev/null || { log "npm not found; install npm"; exit 1; }

mkdir -p "$env_dir"
# One installer at a time: concurrent test runs share the directory.
if command -v flock >/dev/null; then
  exec 9>"$env_dir.lock"
  flock 9
fi

wanted="$(
  {
    sha256sum "$source_dir/package.json" "$source_dir/package-lock.json" | cut -d' ' -f1
    node --version
  } | sha256sum | cut -d' ' -f1
)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ] \
  || [ ! -d "$env_dir/node_modules/rocketmq-client-nodejs" ]; then
  log "installing $source_dir/package-lock.json into $env_dir"
  rm -f "$stamp"
  cp "$source_dir/package.json" "$source_dir/package-lock.json" "$env_dir/"
  # --ignore-scripts: nothing the client needs is built at install time.
  (cd "$env_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  (cd "$env_dir" && node -e 'require("rocketmq-client-nodejs")') \
    || { log "the client does not load after npm ci"; exit 1; }
  echo "$wanted" >"$stamp"
fi

echo "$env_dir"
