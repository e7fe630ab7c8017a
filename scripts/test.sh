#!/usr/bin/env bash
# Runs the whole test suite: unit tests of every crate and the integration
# tests, which start the real `meridian` binary (built first) as processes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
source scripts/env.sh
# Build every target with the same feature set as `cargo test --workspace` and
# `cargo clippy --workspace --all-targets`: a narrower build (`-p meridian-cli`)
# resolves features differently and would compile RocksDB's C++ a second time.
cargo build --workspace --all-targets
# The official RocketMQ Python client's virtualenv, for tests/python/.
TEST_PYTHON="$(scripts/python-env.sh)"
export TEST_PYTHON
# The official RocketMQ Node.js client's node_modules, for tests/nodejs/.
TEST_NODEJS_MODULES="$(scripts/nodejs-env.sh)/node_modules"
export TEST_NODEJS_MODULES
cargo test --workspace "$@"
