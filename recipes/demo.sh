#!/usr/bin/env bash
# The CPU demo on the embedded default data. `make demo` runs it inside .venv.
# It grows as stages land: synth -> strength -> clean -> train-rm -> ppo -> judge -> metrics.
set -euo pipefail
OUT=${OUT:-demo-out}
N=${N:-600}
mkdir -p "$OUT"

echo "== synth: $N film-review pairs, 20% of labels flipped" >&2
rlhfkit synth --n "$N" --noise 0.2 --seed 0 --out "$OUT/pairs.jsonl"

echo "== validate: the record contract" >&2
rlhfkit validate "$OUT/pairs.jsonl" > /dev/null

echo "demo finished; outputs in $OUT/" >&2
