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
# SCALE=tiny: the same stages, flags and files on tiny offline models (tiny-gpt, tiny-bert) and a few
# records of ../shared/data, with small counts (about a minute on 2 CPU cores; CI runs it). The last stage,
# `rlhfkit report`, writes OUT/summary.json and prints the paper's headline table beside the paper's
# numbers. Run again with the same OUT, the recipe skips the stages that finished (recipes/_common.sh).
#   SCALE=tiny bash recipes/reward_collapse.sh
set -euo pipefail
source "$(dirname "$0")/_common.sh"
OUT=${OUT:-runs/reward_collapse}
MODEL=${MODEL:-$(at_scale microsoft/deberta-v3-base tiny-bert)}
# records with a question and a long answer; the tiny scale reads AlpacaEval's ranked answers (../shared/data)
RANKED=hf:$SHARED_DATA/alpacaeval-tulu2dpo13b-ranked11.jsonl.gz:train
SOURCE=${SOURCE:-$(at_scale hf:akoksal/LongForm:train "$RANKED[:400]")}
TEST_SOURCE=${TEST_SOURCE:-$(at_scale hf:akoksal/LongForm:test "$RANKED[400:]")}
STEPS=${STEPS:-$(at_scale 1000 4)}
LIMIT=${LIMIT:-$(at_scale 20000 16)}
TEST_LIMIT=${TEST_LIMIT:-$(at_scale 500 16)}
# the paper's batch: 8 prompts per update (1 per step x 8 accumulation); with P processes P per step x 8/P
P=$(procs)
TRAIN_FLAGS=${TRAIN_FLAGS:---lr $(at_scale 1e-5 1e-3) --batch-size $P --grad-accum $((P < 8 ? 8 / P : 1)) --warmup-ratio 0.1 --max-length $(at_scale 512 128) --max-pairs 45 --save-steps $(at_scale 200 2)}

run mkdir -p "$OUT"
run rlhfkit prompts "$SOURCE" --kind prefix-rankings --prompt-field input,instruction,prompt --text-field output,response \
  --min-words 100 --limit "$LIMIT" --out "$OUT/train.jsonl"
run rlhfkit prompts "$TEST_SOURCE" --kind prefix-rankings --prompt-field input,instruction,prompt --text-field output,response \
  --min-words 100 --limit "$TEST_LIMIT" --out "$OUT/test.jsonl"
for utility in x log x_inv logsigmoid adaptive; do
  launch train-rm "$OUT/train.jsonl" --loss ranking --utility "$utility" --model "$MODEL" --max-steps "$STEPS" \
    $TRAIN_FLAGS --out "$OUT/rm-$utility"
  run_to "$OUT/reward-dist-$utility.json" rlhfkit metrics reward-dist "$OUT/test.jsonl" --reward "$OUT/rm-$utility" --group-field open_ended \
    --plot "$OUT/reward-dist-$utility.png"
done
run rlhfkit report reward-collapse "$OUT" --scale "$SCALE" --out "$OUT/summary.json"
