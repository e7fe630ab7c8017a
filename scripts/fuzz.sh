#!/usr/bin/env bash
# Runs a cargo-fuzz target (fuzz/fuzz_targets/) for a number of seconds:
#
#   scripts/fuzz.sh stomp_frame 600     # ten minutes of the STOMP frame decoder
#   scripts/fuzz.sh http_xml 600        # the Aliyun MQ HTTP API's XML parsers
#   scripts/fuzz.sh --list              # the targets
#
# Installs cargo-fuzz from crates.io on first use. libFuzzer builds need
# nightly-only compiler flags; the machine's stable toolchain accepts them
# with RUSTC_BOOTSTRAP=1, so no second toolchain is needed. The run starts
# from the checked-in corpus fuzz/corpus/<target>/ and grows a working copy
# outside the clone ($CARGO_TARGET_DIR/fuzz/corpus/<target>); a crash is
# written to fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# The fuzz builds (sanitizer flags) must not mix with the workspace's.
export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"

if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

if [ "${1:-}" = "--list" ]; then
  cargo fuzz list
  exit 0
fi
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS (or --list)}"
seconds="${2:-60}"
work="$CARGO_TARGET_DIR/corpus/$target"
mkdir -p "$work" "fuzz/corpus/$target"
# -rss_limit_mb: a decoder that buffers without bound fails the run.
exec cargo fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
