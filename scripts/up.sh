#!/usr/bin/env bash
# Builds Meridian and runs `meridian up` in the current directory: the built-in
# three-region demo (routers on 127.0.0.1:8081, :8181 and :8281, data under
# ./meridian-data). Extra arguments go to `meridian up`, e.g. --topology FILE.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
source "$root/scripts/env.sh"
# All targets, as scripts/test.sh builds them: one feature set, so RocksDB's C++
# is compiled once for both scripts.
cargo build --manifest-path "$root/Cargo.toml" --workspace --all-targets
exec "$CARGO_TARGET_DIR/debug/meridian" up "$@"
