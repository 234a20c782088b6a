#!/usr/bin/env bash
# Reproduces "Towards Reliable Alignment: Uncertainty-aware RLHF" (Banerjee & Gopalan, 2024):
# a reward model fully fine-tuned and early-stopped at loss ~0.3, an ensemble of K = 10 heads on
# its frozen backbone, then GPT-2 PPO on IMDB prompts of 2-8 words with one head's reward each:
# vanilla KL (lr 1.41e-5, beta 0.2) vs variance-aware KL (lr 1.5e-5, beta 0.05), 4 runs per head,
# 40 policies per method, all judged by FsfairX-LLaMA3-RM-v0.1 on IMDB test prompts.
# Hardware: reward model on 4x A40 in the paper (~51 h for Gemma-2B); PPO on one GPU, ~10 minutes
# per policy (80 policies: ~14 hours). Lower HEADS/RUNS for a quicker pass.
# Policy: GPT-2 itself, as in the paper (no SFT stage: continuing IMDB review openings is what the
# pre-trained model already does). Training stages run under LAUNCH when it is set (_common.sh); at
# these sizes one GPU per policy is enough, and 8 GPUs are better used for 8 policies at once.
# 7B: not in this paper (GPT-2 policies, a Gemma-2B reward model, ~4 GB trainable in fp32 masters:
# fits one 80 GB GPU); for a 7B reward model add --lora to train-rm (secrets_rm.sh's preset).
#   bash recipes/uncertainty_rlhf.sh           DRY_RUN=1 bash recipes/uncertainty_rlhf.sh
# SCALE=tiny: the same stages, flags and files on tiny offline models (tiny-gpt, tiny-bert) and a few
# records of ../shared/data, with small counts (about 2 minutes on 2 CPU cores; CI runs it). The last stage,
# `rlhfkit report`, writes OUT/summary.json and prints the paper's headline table beside the paper's
# numbers. Run again with the same OUT, the recipe skips the stages that finished (recipes/_common.sh).
#   SCALE=tiny bash recipes/uncertainty_rlhf.sh
set -euo pipefail
source "$(dirname "$0")/_common.sh"
OUT=${OUT:-runs/uncertainty_rlhf}
RM_BASE=${RM_BASE:-$(at_scale google/gemma-2b-it tiny-gpt)}
PREFS=${PREFS:-$(at_scale hf:weqweasdas/preference_dataset_mix2:train "hf:$SHARED_DATA/hh-rlhf-harmless-base-test.jsonl.gz:train[:64]")}
POLICY=${POLICY:-$(at_scale gpt2 tiny-gpt)}
TEXTS=${TEXTS:-$(at_scale hf:stanfordnlp/imdb:train "$SHARED_DATA/rt-polarity.pos")}  # prompts: their openings
TEST_TEXTS=${TEST_TEXTS:-$(at_scale hf:stanfordnlp/imdb:test "$SHARED_DATA/rt-polarity.neg")}
TRAIN_PROMPTS=${TRAIN_PROMPTS:-$(at_scale 25000 64)}  # IMDB's train split holds 25,000 reviews: all of them
TEST_PROMPTS=${TEST_PROMPTS:-$(at_scale 2000 8)}
# the judge: the paper's large reward model (from the hub); the tiny stand-in is the recipe's own reward model
JUDGE_RM=${JUDGE_RM:-$(at_scale sfairXC/FsfairX-LLaMA3-RM-v0.1 "$OUT/rm")}
HEADS=${HEADS:-$(at_scale 10 2)}
RUNS=${RUNS:-$(at_scale 4 1)}
STEPS=${STEPS:-$(at_scale 192 2)}
PPO_COMMON=${PPO_COMMON:---batch-size $(at_scale 128 4) --mini-batch-size $(at_scale 32 2) --max-new-tokens 10 --save-steps 0}
note "policy: $POLICY (pre-trained, no SFT, as the paper)"

run mkdir -p "$OUT"
launch train-rm "$PREFS" --model "$RM_BASE" --out "$OUT/rm" --lr $(at_scale 1e-5 1e-3) --batch-size 8 --grad-accum $(at_scale 4 1) \
  --early-stop-loss 0.3 --max-length $(at_scale 1024 256) --save-steps $(at_scale 500 4)
run rlhfkit ensemble "$PREFS" --from-rm "$OUT/rm" --heads "$HEADS" --epochs 3 --out "$OUT/ensemble" --cache "$OUT/features"
run rlhfkit prompts "$TEXTS" --min-words 2 --max-words 8 --limit "$TRAIN_PROMPTS" --out "$OUT/prompts.jsonl"
run rlhfkit prompts "$TEST_TEXTS" --min-words 2 --max-words 8 --limit "$TEST_PROMPTS" --out "$OUT/test-prompts.jsonl"
run rlhfkit generate "$OUT/test-prompts.jsonl" --policy "$POLICY" --max-new-tokens 10 --out "$OUT/gens-reference.jsonl"
for head in $(seq 0 $((HEADS - 1))); do
  for r in $(seq 1 "$RUNS"); do
    seed=$((head * 100 + r))
    launch ppo --policy "$POLICY" --reward "$OUT/ensemble" --reward-head "$head" --prompts "$OUT/prompts.jsonl" \
      --regularizer kl --beta 0.2 --lr 1.41e-5 --steps "$STEPS" --seed "$seed" $PPO_COMMON --out "$OUT/vanilla-h$head-r$r"
    launch ppo --policy "$POLICY" --reward "$OUT/ensemble" --reward-head "$head" --prompts "$OUT/prompts.jsonl" \
      --regularizer var-kl --variance-power 1 --beta 0.05 --lr 1.5e-5 --steps "$STEPS" --seed "$seed" $PPO_COMMON \
      --out "$OUT/varaware-h$head-r$r"
    for method in vanilla varaware; do
      run rlhfkit generate "$OUT/test-prompts.jsonl" --policy "$OUT/$method-h$head-r$r" --max-new-tokens 10 \
        --out "$OUT/gens-$method-h$head-r$r.jsonl"
      run_to "$OUT/generation-$method-h$head-r$r.json" rlhfkit metrics generation --policy "$OUT/$method-h$head-r$r" \
        --ref "$POLICY" --prompts "$OUT/test-prompts.jsonl" --max-new-tokens 10
    done
  done
done
if [ -n "${DRY_RUN:-}" ]; then gens="$OUT/gens-*.jsonl"; else gens=$(ls "$OUT"/gens-*.jsonl); fi
run rlhfkit judge $gens --reward "$JUDGE_RM" --chat-template on --out "$OUT/judged.jsonl"
run rlhfkit report uncertainty "$OUT" --scale "$SCALE" --out "$OUT/summary.json"
