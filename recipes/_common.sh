# Sourced by the recipes: `run` prints each command and, unless DRY_RUN is set, runs it.
# DRY_RUN=1 bash recipes/X.sh prints the whole plan and touches nothing.
run() {
  echo "+ $*" >&2
  if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}
# `launch` runs a training stage (train-rm, ppo) under accelerate when LAUNCH is set, e.g.
#   LAUNCH="accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 8 -m"
# else as a plain rlhfkit command. Every recipe sends every training stage through it.
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
# `ckpt_steps N`: --save-steps for a training stage. rlhfkit's checkpoints hold unsharded state, which
# the DeepSpeed and FSDP configs refuse; so where LAUNCH may shard, checkpoints are off (0). Name
# recipes/accelerate/ddp.yaml (or use torchrun) to keep them.
ckpt_steps() {
  if may_shard; then echo 0; else echo "$1"; fi
}
# `eval_flag FILE`: train-rm's --eval FILE, left out where LAUNCH may shard (evaluation runs on the
# main process alone and is refused there); `metrics accuracy` scores the model afterwards anyway.
eval_flag() {
  if may_shard; then echo ""; else echo "--eval $1"; fi
}
# `procs`: the process count LAUNCH asks for (--num_processes / --nproc_per_node N, or =N), else 1.
procs() {
  local words=(${LAUNCH:-}) i w
  for ((i = 0; i < ${#words[@]}; i++)); do
    w=${words[i]}
    case $w in
      --num_processes=* | --nproc_per_node=* | --nproc-per-node=*) echo "${w#*=}"; return ;;
      --num_processes | --nproc_per_node | --nproc-per-node) echo "${words[i + 1]:-1}"; return ;;
    esac
  done
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
