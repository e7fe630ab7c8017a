#!/usr/bin/env bash
# Builds Meridian and runs `meridian up`: the built-in three-region demo
# (routers on 127.0.0.1:8081, :8181 and :8281). Extra arguments go to `meridian up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cargo build -p meridian-cli --bin meridian
exec "$CARGO_TARGET_DIR/debug/meridian" up "$@"
