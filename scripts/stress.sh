#!/usr/bin/env bash
# Stress check for the integration suite on a busy machine: runs it RUNS times
# in a row (default 5) while a background load opens and closes loopback
# connections as fast as it can (tests/examples/loopback_churn.rs), so the
# kernel hands out ephemeral ports all the time. Every run must pass.
#
#   ./scripts/stress.sh [RUNS]
#
# Prints one line per run and `N passed, N failed` at the end; exits 1 if any
# run failed (its output is kept in $STRESS_LOG_DIR, default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
scripts/setup.sh test
source scripts/env.sh
cargo build --workspace --all-targets
TEST_PYTHON="$(scripts/python-env.sh)"
TEST_NODEJS_MODULES="$(scripts/nodejs-env.sh)/node_modules"
export TEST_PYTHON TEST_NODEJS_MODULES
log_dir="${STRESS_LOG_DIR:-$(mktemp -d -t meridian-stress-XXXXXX)}"
mkdir -p "$log_dir"
echo "stress: logs in $log_dir"

# The load lasts at most an hour and is stopped when this script ends.
"$CARGO_TARGET_DIR/debug/examples/loopback_churn" 3600 4 >"$log_dir/churn.log" 2>&1 &
churn=$!
trap 'kill "$churn" 2>/dev/null || true' EXIT

passed=0
failed=0
for run in $(seq 1 "$runs"); do
  log="$log_dir/run-$run.log"
  started=$(date +%s)
  if cargo test -p meridian-tests --test integration >"$log" 2>&1; then
    passed=$((passed + 1))
    outcome="passed"
  else
    failed=$((failed + 1))
    outcome="FAILED (see $log)"
  fi
  echo "stress: run $run of $runs $outcome in $(($(date +%s) - started)) s"
done
kill "$churn" 2>/dev/null || true
wait "$churn" 2>/dev/null || true
echo "stress: background load: $(tail -n1 "$log_dir/churn.log" 2>/dev/null || echo "no report")"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
