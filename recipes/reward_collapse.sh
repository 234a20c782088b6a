#!/usr/bin/env bash
# Reproduces "Reward Collapse in Aligning Large Language Models" (Song et al., 2023):
# ranking-based reward models trained with each utility (x, log, x_inv, logsigmoid) and the
# prompt-aware adaptive utility, on prefix rankings; reward-by-rank distributions of open-ended vs
# closed-ended prompts and the distance between them.
# Paper settings: deberta-v3-base, lr 1e-5, 1 prompt per device batch (28 pairs), grad accumulation
# 8, warmup 0.1, max length 512, 1000 steps; data: LongForm answers cut into 8 prefixes.
# Hardware: one 24 GB GPU; about 15 minutes per utility (1.5 hours in all). No policy: reward models
# only. Training runs under LAUNCH when it is set (_common.sh). DeBERTa-v3's tokenizer is a
# sentencepiece model: `pip install "rlhfkit[sentencepiece]"` (sentencepiece and protobuf) first.
# 7B: not in this paper (deberta-v3-base, 184M: ~3 GB trainable); for a 7B ranking reward model add
# --lora to TRAIN_FLAGS under a DDP LAUNCH (secrets_rm.sh's preset).
#   bash recipes/reward_collapse.sh            DRY_RUN=1 bash recipes/reward_collapse.sh
set -euo pipefail
source "$(dirname "$0")/_common.sh"
OUT=${OUT:-runs/reward_collapse}
MODEL=${MODEL:-microsoft/deberta-v3-base}
SOURCE=${SOURCE:-hf:akoksal/LongForm:train}     # records with input/output text
TEST_SOURCE=${TEST_SOURCE:-hf:akoksal/LongForm:test}
STEPS=${STEPS:-1000}
LIMIT=${LIMIT:-20000}
# the paper's batch: 8 prompts per update (1 per step x 8 accumulation); with P processes P per step x 8/P
P=$(procs)
TRAIN_FLAGS=${TRAIN_FLAGS:---lr 1e-5 --batch-size $P --grad-accum $((P < 8 ? 8 / P : 1)) --warmup-ratio 0.1 --max-length 512 --max-pairs 45 --save-steps 200}

run mkdir -p "$OUT"
run rlhfkit prompts "$SOURCE" --kind prefix-rankings --prompt-field input,instruction,prompt --text-field output,response \
  --min-words 100 --limit "$LIMIT" --out "$OUT/train.jsonl"
run rlhfkit prompts "$TEST_SOURCE" --kind prefix-rankings --prompt-field input,instruction,prompt --text-field output,response \
  --min-words 100 --limit 500 --out "$OUT/test.jsonl"
for utility in x log x_inv logsigmoid adaptive; do
  launch train-rm "$OUT/train.jsonl" --loss ranking --utility "$utility" --model "$MODEL" --max-steps "$STEPS" \
    $TRAIN_FLAGS --out "$OUT/rm-$utility"
  run_to "$OUT/reward-dist-$utility.json" rlhfkit metrics reward-dist "$OUT/test.jsonl" --reward "$OUT/rm-$utility" --group-field open_ended \
    --plot "$OUT/reward-dist-$utility.png"
done
echo "done: $OUT/reward-dist-*.json hold the distances between open- and closed-ended prompts" >&2
