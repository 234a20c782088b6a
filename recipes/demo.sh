#!/usr/bin/env bash
# The CPU demo on the embedded synthetic data; `make demo` runs it inside .venv.
# synth -> strength -> clean --flip -> train-rm -> score (ppo, judge, metrics join as they land).
# A few minutes on 2 CPU cores. MODEL=tiny-bert makes it faster (and far less accurate).
set -euo pipefail
OUT=${OUT:-demo-out}
N=${N:-600}
MODEL=${MODEL:-minilm}
mkdir -p "$OUT"

echo "== synth: $N film-review pairs, 20% of labels flipped (marked noisy: true)" >&2
rlhfkit synth --n "$N" --noise 0.2 --seed 0 --out "$OUT/pairs.jsonl"
rlhfkit synth --n 300 --noise 0 --seed 99 --out "$OUT/heldout.jsonl"

echo "== strength | clean --flip: find the flipped labels with a $MODEL ensemble (K = 10)" >&2
rlhfkit strength "$OUT/pairs.jsonl" --model "$MODEL" --plot "$OUT/strength.png" \
  | rlhfkit clean --flip --out "$OUT/clean.jsonl"

echo "== train-rm on the cleaned pairs, held-out accuracy" >&2
rlhfkit train-rm "$OUT/clean.jsonl" --model "$MODEL" --out "$OUT/rm" --lr 5e-5 --batch-size 16 \
  --warmup-ratio 0.1 --save-steps 0 --eval "$OUT/heldout.jsonl"

echo "== score the held-out chosen responses" >&2
rlhfkit score "$OUT/heldout.jsonl" --reward "$OUT/rm" --out "$OUT/heldout.scored.jsonl"

echo "demo finished; outputs in $OUT/ (strength.png, clean.jsonl, rm/, heldout.scored.jsonl)" >&2
