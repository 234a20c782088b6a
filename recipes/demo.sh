#!/usr/bin/env bash
# The CPU demo on the embedded synthetic data; `make demo` runs it inside .venv.
# synth -> strength | clean --flip -> train-rm -> metrics accuracy -> sft (the synth world's small policy)
# -> ppo -> generate -> judge (reward model) -> metrics generation
# 161 s on 2 quiet CPU cores (python benchmarks/recipes_tiny.py --only demo). The PPO stage trains the synth
# world's policy (GPT-2 shapes, 2 layers, 64 wide, one token per word), made here by a short SFT on
# synth's reviews; `make demo-smollm2` (POLICY=smollm2-135m) runs PPO on SmolLM2-135M instead, a
# real instruction-tuned model, in about 15 minutes more.
set -euo pipefail
OUT=${OUT:-demo-out}
N=${N:-300}
MODEL=${MODEL:-minilm}
POLICY=${POLICY:-world}  # world: the synth world's policy, trained here; or a model name (smollm2-135m)
STEPS=${STEPS:-8}
mkdir -p "$OUT"
SECONDS=0

echo "== synth: $N film-review pairs, 20% of labels flipped (marked noisy: true)" >&2
rlhfkit synth --n "$N" --noise 0.2 --seed 0 --out "$OUT/pairs.jsonl"
rlhfkit synth --n 300 --noise 0 --seed 99 --out "$OUT/heldout.jsonl"
rlhfkit prompts "$OUT/heldout.jsonl" --kind extract --limit 32 --out "$OUT/prompts.jsonl"

echo "== strength | clean --flip: find the flipped labels (cross-fitted $MODEL members)" >&2
rlhfkit strength "$OUT/pairs.jsonl" --model "$MODEL" --plot "$OUT/strength.png" \
  | rlhfkit clean --flip --out "$OUT/clean.jsonl"

echo "== train-rm on the cleaned pairs" >&2
rlhfkit train-rm "$OUT/clean.jsonl" --model "$MODEL" --out "$OUT/rm" --lr 5e-5 --batch-size 16 \
  --warmup-ratio 0.1 --save-steps 0 --eval "$OUT/heldout.jsonl"

echo "== metrics accuracy of the reward model on clean held-out pairs" >&2
rlhfkit metrics accuracy "$OUT/heldout.jsonl" --reward "$OUT/rm" > "$OUT/accuracy.json"

if [ "$POLICY" = world ]; then
  echo "== sft: the synth world's policy learns to write film reviews" >&2
  rlhfkit synth --kind reviews --n 3000 --seed 0 --out "$OUT/reviews.jsonl"
  rlhfkit sft "$OUT/reviews.jsonl" --model synth-world --out "$OUT/sft" --epochs 2 --lr 3e-3 --batch-size 64
  POLICY="$OUT/sft"
fi

echo "== ppo: $STEPS steps of $POLICY against the reward model (KL regulariser)" >&2
rlhfkit ppo --policy "$POLICY" --reward "$OUT/rm" --prompts "$OUT/prompts.jsonl" --out "$OUT/policy" \
  --steps "$STEPS" --batch-size 16 --mini-batch-size 8 --max-new-tokens 24 --lr 1e-4 --beta 0.05 --save-steps 0

echo "== generate from the reference and the PPO policy; the reward model judges both" >&2
rlhfkit generate "$OUT/prompts.jsonl" --policy "$POLICY" --max-new-tokens 24 --out "$OUT/gens-ref.jsonl"
rlhfkit generate "$OUT/prompts.jsonl" --policy "$OUT/policy" --max-new-tokens 24 --out "$OUT/gens-ppo.jsonl"
rlhfkit judge "$OUT/gens-ref.jsonl" "$OUT/gens-ppo.jsonl" --reward "$OUT/rm" --out "$OUT/judged.jsonl"

echo "== metrics generation: the PPO policy against its reference" >&2
rlhfkit metrics generation --policy "$OUT/policy" --ref "$POLICY" --prompts "$OUT/prompts.jsonl" \
  --max-new-tokens 24 > "$OUT/generation.json"

echo "demo finished in $SECONDS s; outputs in $OUT/ (strength.png, clean.jsonl, rm/, policy/, judged.jsonl, *.json)" >&2
