#!/usr/bin/env bash
# The CPU demo on the embedded synthetic data; `make demo` runs it inside .venv.
# synth -> strength -> clean --flip -> train-rm -> ppo (a few steps) -> judge (reward model) -> metrics
# About five minutes on 2 CPU cores (the first use of smollm2-135m adds ~30 s to dequantise it).
# MODEL=tiny-bert POLICY=tiny-gpt makes it faster and meaningless.
set -euo pipefail
OUT=${OUT:-demo-out}
N=${N:-600}
MODEL=${MODEL:-minilm}
POLICY=${POLICY:-smollm2-135m}
mkdir -p "$OUT"

echo "== synth: $N film-review pairs, 20% of labels flipped (marked noisy: true)" >&2
rlhfkit synth --n "$N" --noise 0.2 --seed 0 --out "$OUT/pairs.jsonl"
rlhfkit synth --n 300 --noise 0 --seed 99 --out "$OUT/heldout.jsonl"
head -n 16 "$OUT/heldout.jsonl" > "$OUT/prompts.jsonl"

echo "== strength | clean --flip: find the flipped labels with a $MODEL ensemble (K = 10)" >&2
rlhfkit strength "$OUT/pairs.jsonl" --model "$MODEL" --plot "$OUT/strength.png" \
  | rlhfkit clean --flip --out "$OUT/clean.jsonl"

echo "== train-rm on the cleaned pairs" >&2
rlhfkit train-rm "$OUT/clean.jsonl" --model "$MODEL" --out "$OUT/rm" --lr 5e-5 --batch-size 16 \
  --warmup-ratio 0.1 --save-steps 0 --eval "$OUT/heldout.jsonl"

echo "== metrics accuracy of the reward model on clean held-out pairs" >&2
rlhfkit metrics accuracy "$OUT/heldout.jsonl" --reward "$OUT/rm" > "$OUT/accuracy.json"

echo "== ppo: a few steps of $POLICY against the reward model (KL regulariser)" >&2
rlhfkit ppo --policy "$POLICY" --reward "$OUT/rm" --prompts "$OUT/prompts.jsonl" --out "$OUT/policy" \
  --steps 3 --batch-size 4 --mini-batch-size 2 --max-new-tokens 24 --lr 1e-5 --beta 0.05 --save-steps 0

echo "== generate from the reference and the PPO policy; the reward model judges both" >&2
rlhfkit generate "$OUT/prompts.jsonl" --policy "$POLICY" --max-new-tokens 24 --out "$OUT/gens-ref.jsonl"
rlhfkit generate "$OUT/prompts.jsonl" --policy "$OUT/policy" --max-new-tokens 24 --out "$OUT/gens-ppo.jsonl"
rlhfkit judge "$OUT/gens-ref.jsonl" "$OUT/gens-ppo.jsonl" --reward "$OUT/rm" --out "$OUT/judged.jsonl"

echo "== metrics generation: the PPO policy against its reference" >&2
rlhfkit metrics generation --policy "$OUT/policy" --ref "$POLICY" --prompts "$OUT/prompts.jsonl" \
  --max-new-tokens 24 > "$OUT/generation.json"

echo "demo finished; outputs in $OUT/ (strength.png, clean.jsonl, rm/, policy/, judged.jsonl, *.json)" >&2
