#!/usr/bin/env bash
# MetaRM rounds (Secrets of RLHF II §3.2): PPO -> sample a meta set from the new policy ->
# train-rm --meta-data (continuing from the last reward model) -> PPO again, for ROUNDS rounds.
#
# Paper scale: Llama-2-7B policy and reward model, 3-4 rounds, on 8 GPUs: set LAUNCH (see
# recipes/_common.sh) and every train-rm and ppo runs under it; at 7B pass --lora in RM_FLAGS and
# PPO_FLAGS (secrets_rm.sh does). SFT policy: POLICY, an SFT or instruct checkpoint (the default,
# SmolLM2-135M-Instruct, is one). Accuracy per round is measured on TEST (default: PAIRS itself).
# metarm_rounds.sh has no paper numbers of its own: secrets_rm.sh runs it and reports it too.
#
#   PAIRS=pairs.jsonl PROMPTS=prompts.jsonl POLICY=smollm2-135m RM_BASE=minilm bash recipes/metarm_rounds.sh
#   DRY_RUN=1 bash recipes/metarm_rounds.sh     # print the commands only
# SCALE=tiny: the same stages, flags and files on tiny offline models (tiny-gpt, tiny-bert) and a few
# synth pairs the recipe makes, with small counts (about a minute on 2 CPU cores; CI runs it). The last stage,
# `rlhfkit report`, writes OUT/summary.json and prints the paper's headline table beside the paper's
# numbers. Run again with the same OUT, the recipe skips the stages that finished (recipes/_common.sh).
#   SCALE=tiny bash recipes/metarm_rounds.sh
set -euo pipefail
source "$(dirname "$0")/_common.sh"
refuse_deepspeed_for_metarm
OUT=${OUT:-metarm-out}
ROUNDS=${ROUNDS:-$(at_scale 3 1)}
PAIRS=${PAIRS:-$OUT/pairs.jsonl}
PROMPTS=${PROMPTS:-$PAIRS}
TEST=${TEST:-$PAIRS}  # where each round's reward model is scored (in-sample when nothing else is given)
POLICY=${POLICY:-$(at_scale smollm2-135m tiny-gpt)}
RM_BASE=${RM_BASE:-$(at_scale minilm tiny-gpt)}
PPO_STEPS=${PPO_STEPS:-$(at_scale 20 2)}
TOKENS=${TOKENS:-$(at_scale 32 8)}  # new tokens per response (PPO and the meta set)
PPO_FLAGS=${PPO_FLAGS:-$(ppo_batches 8 4) --max-new-tokens $TOKENS --lr 1e-6 --temperature 0.8 --top-p 0.9 --save-steps 0}
RM_FLAGS=${RM_FLAGS:---lr 1e-5 --batch-size $(at_least 8) --save-steps 0}  # MetaRM: --grad-accum 1
META_K=${META_K:-4}

run mkdir -p "$OUT"
note "SFT policy: $POLICY"
if [ ! -f "$PAIRS" ]; then run rlhfkit synth --n "$(at_scale 200 48)" --seed 0 --out "$PAIRS"; fi
launch train-rm "$PAIRS" --model "$RM_BASE" --out "$OUT/rm-0" $RM_FLAGS
run_to "$OUT/accuracy-rm-0.json" rlhfkit metrics accuracy "$TEST" --reward "$OUT/rm-0"
rm_dir="$OUT/rm-0"
policy="$POLICY"
for round in $(seq 1 "$ROUNDS"); do
  launch ppo --policy "$policy" --reward "$rm_dir" --prompts "$PROMPTS" --out "$OUT/policy-$round" \
    --steps "$PPO_STEPS" $PPO_FLAGS
  run rlhfkit generate "$PROMPTS" --policy "$OUT/policy-$round" --n "$META_K" --group --temperature 0.8 \
    --max-new-tokens "$TOKENS" --out "$OUT/meta-$round.jsonl"
  launch train-rm "$PAIRS" --model "$rm_dir" --meta-data "$OUT/meta-$round.jsonl" --out "$OUT/rm-$round" $RM_FLAGS
  run_to "$OUT/accuracy-rm-$round.json" rlhfkit metrics accuracy "$TEST" --reward "$OUT/rm-$round"
  rm_dir="$OUT/rm-$round"
  policy="$OUT/policy-$round"
done
launch ppo --policy "$policy" --reward "$rm_dir" --prompts "$PROMPTS" --out "$OUT/policy-final" --steps "$PPO_STEPS" $PPO_FLAGS
run rlhfkit report metarm "$OUT" --scale "$SCALE" --out "$OUT/summary.json"
