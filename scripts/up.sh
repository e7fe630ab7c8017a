#!/usr/bin/env bash
# Builds Meridian and runs `meridian up` in the current directory: the built-in
# three-region demo (routers on 127.0.0.1:8081, :8181 and :8281, data under
# ./meridian-data). Extra arguments go to `meridian up`, e.g. --topology FILE.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
source "$root/scripts/env.sh"
cargo build --manifest-path "$root/Cargo.toml" -p meridian-cli --bin meridian
exec "$CARGO_TARGET_DIR/debug/meridian" up "$@"
