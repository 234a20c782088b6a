#!/usr/bin/env bash
# Reproduces "On the Algorithmic Bias of Aligning LLMs with RLHF: Preference Collapse and Matching
# Regularization" (Xiao et al., 2024): KL-RLHF vs conditional preference matching (cpm) over the
# grid beta in {0.1, 0.5, 1}, alpha in {0.1, 0.3, 0.5}; PM divergence and generation metrics.
# Paper settings: OPT-1.3B (and Llama-2-7B) on full-hh-rlhf, PPO lr 1e-6, top-p 0.9, temperature 1,
# prompt and answer <= 256 tokens.
# Hardware: 8x A100 for OPT-1.3B in the paper. One 80 GB GPU holds an OPT-1.3B run (docs/scaling.md:
# ~30 GB + activations). Time per PPO run is ESTIMATED, not measured (no GPU this round): ~1.5-2 hours
# (500 steps x 10-15 s: 256 decode steps of a 1.3B model at batch 64 with HF generate, ~20-30 ms each,
# plus 4 epochs of 8 mini-batches of 8 x 512 tokens); 12 runs, about a day. Measure it with
# `python benchmarks/ppo.py --policy facebook/opt-1.3b --batch-size 64 --max-new-tokens 256` (seconds_* per phase).
# SFT policy: the paper starts PPO from OPT-1.3B fine-tuned on HH (DeepSpeed-Chat's step 1), not
# released; POLICY defaults to the base model. SFT_FROM=facebook/opt-1.3b makes that SFT policy first
# with TRL's `trl sft` on HH-RLHF's chosen transcripts and uses it (SFT_FROM=meta-llama/Llama-2-7b-hf
# with SIZE=7b, under a multi-GPU launcher as TRL's docs describe). HH prompts are "Human: ...
# Assistant:" transcripts, passed as they are (--no-chat-template).
# SIZE=7b: Llama-2-7B (the paper's second model) on 8 x 80 GB: DDP with LoRA for the reward model
# and every policy, bf16 compute; per GPU about 13.5 GB of bf16 policy weights, 13.5 GB for the
# reward model, adapters and activations at 512 tokens (~40-55 GB: an estimate from byte counts, not
# measured). LAUNCH="accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 8 -m".
# beta: one convention everywhere (README, `ppo --beta`): the KL weight beta against the reward model's
# score, r - beta * KL, whose optimum pi_ref * exp(r / beta) is what PM divergence (`--beta beta`)
# compares with. (The paper's r/beta - KL has the same optimum; PPO's whitened advantages make the
# two runs alike.)
#   bash recipes/pm_rlhf.sh                    DRY_RUN=1 bash recipes/pm_rlhf.sh
# SCALE=tiny: the same stages, flags and files on tiny offline models (tiny-gpt, tiny-bert) and a few
# records of ../shared/data, with small counts (about a minute on 2 CPU cores; CI runs it). The last stage,
# `rlhfkit report`, writes OUT/summary.json and prints the paper's headline table beside the paper's
# numbers. Run again with the same OUT, the recipe skips the stages that finished (recipes/_common.sh).
#   SCALE=tiny bash recipes/pm_rlhf.sh
set -euo pipefail
source "$(dirname "$0")/_common.sh"
OUT=${OUT:-runs/pm_rlhf}
HH=hf:$SHARED_DATA/hh-rlhf-harmless-base-test.jsonl.gz:train
SIZE=${SIZE:-1.3b}
case $SIZE in
  1.3b) BASE=facebook/opt-1.3b; MODE_FLAGS="" ;;
  7b) BASE=meta-llama/Llama-2-7b-hf; MODE_FLAGS="--lora --dtype bf16" ;;
  *) echo "SIZE must be 1.3b or 7b" >&2; exit 2 ;;
esac
SFT_FROM=${SFT_FROM:-}
POLICY=${POLICY:-$(at_scale "$BASE" tiny-gpt)}
DATA=${DATA:-$(at_scale hf:Dahoas/full-hh-rlhf:train "$HH[:64]")}
TEST=${TEST:-$(at_scale hf:Dahoas/full-hh-rlhf:test "$HH[2280:]")}
STEPS=${STEPS:-$(at_scale 500 2)}
BETAS=${BETAS:-$(at_scale "0.1 0.5 1" "1")}
ALPHAS=${ALPHAS:-$(at_scale "0.1 0.3 0.5" "0.3")}
TOKENS=${TOKENS:-$(at_scale 256 8)}  # new tokens per response, in PPO and in the metrics
PROMPTS_TEST=${PROMPTS_TEST:-$(at_scale 500 8)}
PPO_COMMON=${PPO_COMMON:---lr $(at_scale 1e-6 1e-4) --top-p 0.9 --temperature 1 --max-prompt-length 256 --max-new-tokens $TOKENS --batch-size $(at_scale 64 4) --mini-batch-size $(at_scale 8 2) --no-chat-template --save-steps $(at_scale 100 1) $MODE_FLAGS}

run mkdir -p "$OUT"
if [ -n "$SFT_FROM" ]; then
  run trl sft --model_name_or_path "$SFT_FROM" --dataset_name Anthropic/hh-rlhf --dataset_text_field chosen \
    --bf16 true --output_dir "$OUT/sft"
  POLICY="$OUT/sft"
fi
note "SFT policy: $POLICY"
launch train-rm "$DATA" --model "$POLICY" --out "$OUT/rm" --lr $(at_scale 5e-6 1e-3) --batch-size 8 --grad-accum $(at_scale 4 1) \
  --max-length $(at_scale 512 256) --epochs 1 --save-steps $(at_scale 500 4) $MODE_FLAGS
run rlhfkit prompts "$TEST" --kind extract --limit "$PROMPTS_TEST" --out "$OUT/test-prompts.jsonl"
runs=()
for beta in $BETAS; do
  launch ppo --policy "$POLICY" --reward "$OUT/rm" --prompts "$DATA" --regularizer kl --beta "$beta" \
    --steps "$STEPS" $PPO_COMMON --out "$OUT/kl-b$beta"
  runs+=("kl-b$beta:$beta")
  for alpha in $ALPHAS; do
    launch ppo --policy "$POLICY" --reward "$OUT/rm" --prompts "$DATA" --regularizer cpm --beta "$beta" --alpha "$alpha" \
      --steps "$STEPS" $PPO_COMMON --out "$OUT/cpm-b$beta-a$alpha"
    runs+=("cpm-b$beta-a$alpha:$beta")
  done
done
for entry in "${runs[@]}"; do
  name=${entry%%:*}
  beta=${entry##*:}
  run_to "$OUT/pm-$name.json" rlhfkit metrics pm-divergence --policy "$OUT/$name" --reward "$OUT/rm" --prompts "$OUT/test-prompts.jsonl" \
    --beta "$beta" --top-p 0.9 --max-new-tokens "$TOKENS" --no-chat-template --plot "$OUT/pm-$name.png"
  run_to "$OUT/generation-$name.json" rlhfkit metrics generation --policy "$OUT/$name" --ref "$POLICY" --prompts "$OUT/test-prompts.jsonl" \
    --max-new-tokens "$TOKENS" --no-chat-template
done
run rlhfkit report pm-rlhf "$OUT" --scale "$SCALE" --out "$OUT/summary.json"
