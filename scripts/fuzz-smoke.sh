#!/usr/bin/env bash
# A short run of every cargo-fuzz target, for CI (see docs/fuzzing.md):
#
#   scripts/fuzz-smoke.sh        # 20 seconds per target
#   scripts/fuzz-smoke.sh 60     # a minute each
#
# Builds every target first (one cargo build, so they compile together),
# then runs each with scripts/fuzz.sh from its checked-in seeds and the
# working corpus earlier runs left on this machine. Prints one line per
# target: runs and seconds from libFuzzer's "Done N runs in S second(s)",
# and the wall time of the whole run. Fails if any target crashed, ran out
# of memory or time, or did not run; a crash's input is in
# fuzz/artifacts/<target>/ and the end of that target's output is shown.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
# (0 would be no limit at all for libFuzzer.)
case "$seconds" in
  '' | *[!0-9]* | 0*) echo "usage: scripts/fuzz-smoke.sh [SECONDS per target, at least 1]" >&2; exit 2 ;;
esac

targets=$(scripts/fuzz.sh --list)
if [ -z "$targets" ]; then
  echo "fuzz-smoke: no targets" >&2
  exit 1
fi

# The environment scripts/fuzz.sh runs cargo-fuzz in, so the build is the
# one its runs reuse.
(
  source scripts/env.sh
  export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" RUSTC_BOOTSTRAP=1
  cargo fuzz build
) || { echo "fuzz-smoke: build failed" >&2; exit 1; }

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
start=$SECONDS
for target in $targets; do
  log="$logs/$target.log"
  status=0
  began=$SECONDS
  scripts/fuzz.sh "$target" "$seconds" >"$log" 2>&1 || status=$?
  wall=$((SECONDS - began))
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
  if [ "$status" -eq 0 ] && [ -n "$done_line" ]; then
    read -r _ runs _ _ took _ <<<"$done_line"
    printf '%-20s %12s runs in %4s s (%s s wall)\n' "$target" "$runs" "$took" "$wall"
  else
    printf '%-20s FAILED (exit %s, %s s wall)\n' "$target" "$status" "$wall"
    failed+=("$target")
    {
      echo "---- $target: what went wrong, then the last lines of its output:"
      grep -E 'panicked at|^SUMMARY|^ERROR|Test unit written' "$log" || true
      echo "...."
      tail -n 40 "$log"
      echo "----"
    } >&2
  fi
done
echo "fuzz-smoke: $(wc -w <<<"$targets") targets, ${seconds} s each: $((SECONDS - start)) s of runs, $SECONDS s in all"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
