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
# `critic_flag`: the paper's separate critic, except where LAUNCH may shard: DeepSpeed wraps one model
# per engine and accelerate's FSDP2 prepares one, so ppo refuses a separate critic there; the value
# head on the policy (--critic shared) takes its place, and the plan says so.
critic_flag() {
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
