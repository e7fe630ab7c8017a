# Sourced by the scripts: one build directory shared by every command (and by CI
# runs on the same machine), outside the clone so a fresh clone reuses builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meridian/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
