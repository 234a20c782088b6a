#!/usr/bin/env bash
# Every rlhfkit stage chained on tiny, randomly initialised models: a CPU smoke run of the whole
# toolkit in a couple of minutes (`make test` runs it). It checks plumbing, not quality.
#   bash recipes/cpu_smoke.sh                  DRY_RUN=1 bash recipes/cpu_smoke.sh
set -euo pipefail
source "$(dirname "$0")/_common.sh"
OUT=${OUT:-smoke-out}
ENC=${ENC:-tiny-bert}
DEC=${DEC:-tiny-gpt}
TINY_PPO="--steps 2 $(ppo_batches 4 2) --max-new-tokens 6 --save-steps 0"

run mkdir -p "$OUT"
note "policy: $DEC (tiny and random: this checks plumbing, there is no SFT)"
run rlhfkit synth --n 80 --noise 0.2 --seed 0 --out "$OUT/pairs.jsonl"
run rlhfkit synth --n 12 --kind rankings --responses 4 --out "$OUT/rankings.jsonl"
run rlhfkit validate "$OUT/pairs.jsonl" --out "$OUT/validated.jsonl"
run rlhfkit prompts "$OUT/pairs.jsonl" --kind extract --limit 8 --out "$OUT/prompts.jsonl"

# reward models
SAVE=2
launch train-rm "$OUT/pairs.jsonl" --model "$DEC" --out "$OUT/rm" --max-steps 4 --save-steps "$SAVE" --lr 1e-3
if [ "$SAVE" != 0 ]; then
  launch train-rm "$OUT/pairs.jsonl" --model "$DEC" --out "$OUT/rm" --max-steps 4 --save-steps "$SAVE" --lr 1e-3 --resume
fi
launch train-rm "$OUT/rankings.jsonl" --loss ranking --utility adaptive --model "$DEC" --out "$OUT/rm-rank" --max-steps 2 --save-steps 0
launch train-rm "$OUT/pairs.jsonl" --contrastive swav --model "$DEC" --out "$OUT/rm-swav" --max-steps 2 --save-steps 0
run rlhfkit score "$OUT/pairs.jsonl" --reward "$OUT/rm" --out "$OUT/scored.jsonl"

# ensembles, strength, cleaning
run rlhfkit ensemble "$OUT/pairs.jsonl" --model "$ENC" --heads 4 --out "$OUT/ensemble"
run rlhfkit ensemble --members "$OUT/rm" --members "$OUT/rm-swav" --out "$OUT/members"
run rlhfkit strength "$OUT/pairs.jsonl" --model "$ENC" --folds 2 --plot "$OUT/strength.png" --out "$OUT/strength.jsonl"
run rlhfkit strength "$OUT/pairs.jsonl" --in-sample --model "$ENC" --heads 4 --out "$OUT/strength-in-sample.jsonl"
run rlhfkit clean "$OUT/strength.jsonl" --flip --margin --rejects "$OUT/dropped.jsonl" --out "$OUT/clean.jsonl"
run rlhfkit clean "$OUT/strength-in-sample.jsonl" --flip-below 0 --drop-ambiguous -0.01:0.01 --rejects "$OUT/dropped-in-sample.jsonl" --out "$OUT/clean-in-sample.jsonl"
launch train-rm "$OUT/clean.jsonl" --model "$DEC" --out "$OUT/rm-clean" --max-steps 2 --save-steps 0

# policies
launch ppo --policy "$DEC" --reward "$OUT/rm" --prompts "$OUT/prompts.jsonl" --regularizer kl $TINY_PPO --out "$OUT/ppo-kl"
launch ppo --policy "$DEC" --reward "$OUT/ensemble" --reward-head 0 --prompts "$OUT/prompts.jsonl" --regularizer var-kl $TINY_PPO --out "$OUT/ppo-varkl"
launch ppo --policy "$DEC" --reward "$OUT/rm" --prompts "$OUT/prompts.jsonl" --regularizer cpm --alpha 0.3 --beta 1 $TINY_PPO --out "$OUT/ppo-cpm"
run rlhfkit generate "$OUT/prompts.jsonl" --policy "$DEC" --max-new-tokens 6 --out "$OUT/gens-ref.jsonl"
run rlhfkit generate "$OUT/prompts.jsonl" --policy "$OUT/ppo-kl" --max-new-tokens 6 --out "$OUT/gens-ppo.jsonl"

# judges and metrics (the LLM judge talks to rlhfkit's scripted local server)
run rlhfkit judge "$OUT/gens-ref.jsonl" "$OUT/gens-ppo.jsonl" --reward "$OUT/rm" --out "$OUT/rm-judged.jsonl"
if [ -z "${DRY_RUN:-}" ]; then
  python3 -c "
import sys, time
from rlhfkit.judge.testing import FakeJudgeServer
with FakeJudgeServer() as s:
    print(s.base_url, flush=True)
    time.sleep(600)
" > "$OUT/judge-url.txt" &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 50); do [ -s "$OUT/judge-url.txt" ] && break; sleep 0.2; done
  url=$(cat "$OUT/judge-url.txt")
else
  url=http://127.0.0.1:PORT/v1
fi
run rlhfkit judge "$OUT/gens-ref.jsonl" "$OUT/gens-ppo.jsonl" --judge-model fake --base-url "$url" --cache none --out "$OUT/llm-judged.jsonl"
run rlhfkit metrics winrate "$OUT/llm-judged.jsonl" --bootstrap 200
run rlhfkit metrics accuracy "$OUT/pairs.jsonl" --reward "$OUT/rm"
run rlhfkit metrics reward-dist "$OUT/rankings.jsonl" --reward "$OUT/rm-rank" --plot "$OUT/reward-dist.png"
run rlhfkit metrics pm-divergence --policy "$OUT/ppo-cpm" --reward "$OUT/rm" --prompts "$OUT/prompts.jsonl" --max-new-tokens 6
run rlhfkit metrics generation --policy "$OUT/ppo-kl" --ref "$DEC" --prompts "$OUT/prompts.jsonl" --max-new-tokens 6
run rlhfkit simulate variance-aware --draws 200
run rlhfkit simulate pm-bias
echo "cpu smoke run finished: $OUT/" >&2
