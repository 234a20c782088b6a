# Sourced by the recipes: `run` prints each command and, unless DRY_RUN is set, runs it.
# DRY_RUN=1 bash recipes/X.sh prints the whole plan and touches nothing.
run() {
  echo "+ $*" >&2
  if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}
# `launch` runs a training stage under accelerate when LAUNCH is set (e.g. LAUNCH="accelerate launch
# --num_processes 8 -m"), else as a plain rlhfkit command.
launch() {
  if [ -n "${LAUNCH:-}" ]; then run $LAUNCH rlhfkit "$@"; else run rlhfkit "$@"; fi
}
# `run_to FILE cmd...` runs a command with its stdout saved to FILE (only printed under DRY_RUN).
run_to() {
  local dest=$1
  shift
  echo "+ $* > $dest" >&2
  if [ -z "${DRY_RUN:-}" ]; then "$@" > "$dest"; fi
}
