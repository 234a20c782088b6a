# Sourced by the recipes: `run` prints each command and, unless DRY_RUN is set, runs it.
# DRY_RUN=1 bash recipes/X.sh prints the whole plan and touches nothing.
#
# SCALE=full (the paper's models, data and counts) or SCALE=tiny (tiny offline models, ../shared/data
# or files the recipe makes, small counts): the same stages, flags and files either way; a recipe
# sets its values with `at_scale FULL TINY`, and nothing else reads SCALE.
SCALE=${SCALE:-full}
case $SCALE in
  full | tiny) ;;
  *) echo "SCALE must be full or tiny, got '$SCALE'" >&2; exit 2 ;;
esac
at_scale() {
  if [ "$SCALE" = tiny ]; then echo "$2"; else echo "$1"; fi
}
# The real data the tiny scale reads (the project's ../shared/data, beside the checkout).
SHARED_DATA=${SHARED_DATA:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/data}

# Resuming: a stage that finished leaves a stamp, $OUT/.stages/<hash of its command line>. Run again
# with the same OUT, a recipe skips every stamped stage whose --out (or stdout file) is still there,
# up to the first stage that runs; that stage gets --resume if it is a training stage (train-rm, ppo)
# that had started, and every stage after it runs (its inputs may have changed). A changed flag
# changes the command line, so that stage and the rest run again. RECIPE_RERUN=1 runs everything.
_stage() {
  local dest=$1
  shift
  local line="$*" key stamp
  [ -n "$dest" ] && line="$line > $dest"
  if [ -n "${DRY_RUN:-}" ]; then
    echo "+ $line" >&2
    return 0
  fi
  key=$(printf '%s' "$line" | sha1sum | cut -c1-16)
  stamp="$OUT/.stages/$key"
  if [ -z "${RECIPE_RERUN:-}" ] && [ -f "$stamp" ] && _outputs_exist "$dest" "$@"; then
    echo "+ $line   # done in an earlier run: skipped" >&2
    return 0
  fi
  local cmd=("$@")
  if [ -z "${RECIPE_RERUN:-}" ] && [ -f "$stamp.started" ] && _trains "$@"; then
    cmd+=(--resume)
    echo "+ $line --resume   # stopped in an earlier run: resumed" >&2
  else
    echo "+ $line" >&2
  fi
  mkdir -p "$OUT/.stages"
  printf '%s\n' "$line" > "$stamp.started"
  local t0=$SECONDS
  if [ -n "$dest" ]; then
    "${cmd[@]}" > "$dest.partial"
    mv "$dest.partial" "$dest"
  else
    "${cmd[@]}"
  fi
  mv "$stamp.started" "$stamp"
  echo "# done in $((SECONDS - t0)) s" >&2
  export RECIPE_RERUN=1
}
_outputs_exist() {
  local dest=$1 prev=""
  shift
  [ -z "$dest" ] || [ -e "$dest" ] || return 1
  for a in "$@"; do
    if [ "$prev" = "--out" ] && [ ! -e "$a" ]; then return 1; fi
    prev=$a
  done
}
_trains() {
  for a in "$@"; do
    case $a in train-rm | ppo) return 0 ;; esac
  done
  return 1
}
run() {
  _stage "" "$@"
}
# `launch` runs a training stage (train-rm, ppo) under accelerate when LAUNCH is set, e.g.
#   LAUNCH="accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 8 -m"
# else as a plain rlhfkit command. Every recipe sends every training stage through it.
launch() {
  if [ -n "${LAUNCH:-}" ]; then run $LAUNCH rlhfkit "$@"; else run rlhfkit "$@"; fi
}
# `run_to FILE cmd...` runs a command with its stdout saved to FILE (only printed under DRY_RUN); the
# file appears when the command has finished.
run_to() {
  local dest=$1
  shift
  _stage "$dest" "$@"
}
# `note TEXT`: a line of the plan that is not a command (where the SFT policy comes from, memory).
note() {
  echo "# $*" >&2
}
# `may_shard`: true when LAUNCH may run a sharded engine (a zero*/fsdp config, or accelerate's
# default config, which the recipe cannot see); DDP configs and torchrun do not.
may_shard() {
  case "${LAUNCH:-}" in
    "" | *ddp.yaml* | *cpu-2proc.yaml* | *torchrun*) return 1 ;;
    *) return 0 ;;
  esac
}
# `critic_flag [TRAINING FLAGS]`: the paper's separate critic, except where LAUNCH may shard (DeepSpeed
# wraps one model per engine and accelerate's FSDP2 prepares one, so ppo refuses a separate critic
# there) and with --lora among the flags given (the adapters and the value head train on the one policy):
# there the value head on the policy (--critic shared) takes its place, and the plan says so.
critic_flag() {
  local a
  for a in "$@"; do
    if [ "$a" = --lora ]; then
      note "--lora: --critic shared (ppo trains the adapters and a value head on the one policy)"
      echo "--critic shared"
      return
    fi
  done
  if may_shard; then
    note "LAUNCH may shard: --critic shared (a separate critic is refused under DeepSpeed and FSDP2)"
    echo "--critic shared"
  else
    echo "--critic separate"
  fi
}
# `refuse_deepspeed_for_metarm`: MetaRM (train-rm --meta-data) does not run under DeepSpeed (its inner
# step moves gradients the engine keeps); stop before the first stage rather than after hours of them.
refuse_deepspeed_for_metarm() {
  case "${LAUNCH:-}" in
    *zero*) echo "MetaRM does not run under DeepSpeed (train-rm refuses it): set LAUNCH with" \
                 "recipes/accelerate/ddp.yaml or fsdp.yaml" >&2; exit 2 ;;
  esac
}
# `procs`: the process count LAUNCH asks for: --num_processes / --nproc_per_node N (or =N) on the
# command line, else `num_processes:` in the accelerate YAML that --config_file names, else 1.
procs() {
  local words=(${LAUNCH:-}) i w config="" n
  for ((i = 0; i < ${#words[@]}; i++)); do
    w=${words[i]}
    case $w in
      --num_processes=* | --nproc_per_node=* | --nproc-per-node=*) echo "${w#*=}"; return ;;
      --num_processes | --nproc_per_node | --nproc-per-node) echo "${words[i + 1]:-1}"; return ;;
      --config_file=* | --config-file=*) config=${w#*=} ;;
      --config_file | --config-file) config=${words[i + 1]:-} ;;
    esac
  done
  if [ -n "$config" ] && [ -f "$config" ]; then
    n=$(sed -n 's/^num_processes:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$config" | head -n 1)
    if [ -n "$n" ]; then echo "$n"; return; fi
  fi
  echo 1
}
# `at_least N`: N rounded up to a multiple of the process count (a global batch needs an equal share
# per process).
at_least() {
  local p
  p=$(procs)
  echo $(((($1 + p - 1) / p) * p))
}
# `ppo_batches B M`: --batch-size and --mini-batch-size for ppo, each a multiple of the process count
# and the batch a multiple of the mini-batch.
ppo_batches() {
  local mini batch
  mini=$(at_least "$2")
  batch=$(at_least "$1")
  batch=$((((batch + mini - 1) / mini) * mini))
  echo "--batch-size $batch --mini-batch-size $mini"
}
