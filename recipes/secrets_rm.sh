#!/usr/bin/env bash
# Reproduces "Secrets of RLHF in Large Language Models Part II: Reward Modeling" (Wang et al., 2024):
# preference strength from an ensemble of M = 10 reward models trained on the same data in
# different orders; reward models trained on raw / Flip / Margin / Flip+Margin / Soft+Margin data;
# contrastive (SimCSE, SwAV) reward models; MetaRM rounds; GPT-4 as pairwise judge.
# Paper settings: Llama-2-7B reward models on Anthropic HH-RLHF; PPO actor lr 5e-7, critic lr
# 1.5e-6, batch 32, temperature 0.8, top-p 0.9, no KL; 100 prompts per judged set.
# SFT policy: the paper's own SFT model of Llama-2-7B was not released; POLICY defaults to
# Llama-2-7b-chat-hf as a stand-in. SFT_FROM=meta-llama/Llama-2-7b-hf makes one first with TRL's
# `trl sft` on HH-RLHF's chosen transcripts and uses it (at 7B, under a
# multi-GPU launcher as TRL's docs describe).
# Hardware: 8x A100 80 GB; about 2 hours per 7B reward model (~40 hours in all). OPENAI_API_KEY for the judge.
# 7B on 8 x 80 GB, the preset (TRAIN_MODE=lora, the default): DDP with LoRA for every reward model
# and policy, bf16 compute: each GPU holds a 7B model's bf16 weights (13.5 GB) plus adapters, and
# for PPO the reward model's (13.5 GB) too; about 45-60 GB per GPU with activations at 1,024 tokens
# (an estimate from the byte counts, not measured: no GPU run yet).
#   LAUNCH="accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 8 -m" bash recipes/secrets_rm.sh
# TRAIN_MODE=full fine-tunes everything as the paper did; fp32 masters and Adam state need ~112 GB
# per 7B model, so only with a sharded LAUNCH (recipes/accelerate/zero3.yaml: not yet run; docs/scaling.md).
# Strength: the paper's construction is kept on purpose (M members trained on all of TRAIN vote on
# the pairs they trained on), because this recipe reproduces the paper's numbers; to clean your own
# data use the cross-fitted default, `rlhfkit strength DATA`, which the README recommends. The
# members are loaded one at a time to score, in the compute dtype.
#   bash recipes/secrets_rm.sh                 DRY_RUN=1 bash recipes/secrets_rm.sh
# SCALE=tiny: the same stages, flags and files on tiny offline models (tiny-gpt, tiny-bert) and a few
# records of ../shared/data, with small counts (about 6 minutes on 2 CPU cores; CI runs it). The last stage,
# `rlhfkit report`, writes OUT/summary.json and prints the paper's headline table beside the paper's
# numbers. Run again with the same OUT, the recipe skips the stages that finished (recipes/_common.sh).
#   SCALE=tiny bash recipes/secrets_rm.sh
set -euo pipefail
source "$(dirname "$0")/_common.sh"
refuse_deepspeed_for_metarm  # its last part runs metarm_rounds.sh
OUT=${OUT:-runs/secrets_rm}
HH=hf:$SHARED_DATA/hh-rlhf-harmless-base-test.jsonl.gz:train
MODEL=${MODEL:-$(at_scale meta-llama/Llama-2-7b-hf tiny-gpt)}
SFT_FROM=${SFT_FROM:-}
POLICY=${POLICY:-$(at_scale meta-llama/Llama-2-7b-chat-hf tiny-gpt)}
TRAIN=${TRAIN:-$(at_scale hf:Anthropic/hh-rlhf:train "$HH[:64]")}
TEST=${TEST:-$(at_scale hf:Anthropic/hh-rlhf:test "$HH[2280:]")}
MEMBERS=${MEMBERS:-$(at_scale 10 2)}
JUDGED=${JUDGED:-$(at_scale 100 8)}  # prompts per judged set
TOKENS=${TOKENS:-$(at_scale 256 8)}  # new tokens per response
# the judge's flags: GPT-4 through the API; the tiny stand-in is the recipe's own ensemble, as a pairwise judge
JUDGE=${JUDGE:-$(at_scale "--judge-model gpt-4 --concurrency 16" "--reward $OUT/ensemble --pairwise")}
TRAIN_MODE=${TRAIN_MODE:-lora}
DTYPE=${DTYPE:-$(at_scale bf16 fp32)}
case $TRAIN_MODE in
  lora) MODE_FLAGS="--lora --dtype $DTYPE" ;;
  full) MODE_FLAGS="--dtype $DTYPE" ;;
  *) echo "TRAIN_MODE must be lora or full" >&2; exit 2 ;;
esac
RM_FLAGS=${RM_FLAGS:---lr $(at_scale 5e-6 1e-3) --batch-size 8 --grad-accum $(at_scale 4 1) --max-length $(at_scale 1024 256) --epochs 1 --save-steps $(at_scale 500 4) $MODE_FLAGS}
PPO_FLAGS=${PPO_FLAGS:---regularizer none --lr $(at_scale 5e-7 1e-4) $(critic_flag $MODE_FLAGS) --critic-lr $(at_scale 1.5e-6 1e-4) $(ppo_batches $(at_scale 32 4) $(at_scale 8 2)) --temperature 0.8 --top-p 0.9 --max-new-tokens $TOKENS --save-steps $(at_scale 50 1) $MODE_FLAGS}
PPO_STEPS=${PPO_STEPS:-$(at_scale 400 2)}
# MetaRM trains on one batch per step (no --grad-accum): the same 32 pairs per update in one batch
META_RM_FLAGS=${META_RM_FLAGS:---lr $(at_scale 5e-6 1e-3) --batch-size $(at_scale 32 8) --max-length $(at_scale 1024 256) --epochs 1 --save-steps $(at_scale 500 4) $MODE_FLAGS}
META_ROUNDS=${META_ROUNDS:-$(at_scale 3 1)}

run mkdir -p "$OUT"
if [ -n "$SFT_FROM" ]; then
  run trl sft --model_name_or_path "$SFT_FROM" --dataset_name Anthropic/hh-rlhf --dataset_text_field chosen \
    --bf16 true --output_dir "$OUT/sft"
  POLICY="$OUT/sft"
fi
note "SFT policy: $POLICY"
members=()
for m in $(seq 0 $((MEMBERS - 1))); do
  launch train-rm "$TRAIN" --model "$MODEL" --seed "$m" $RM_FLAGS --out "$OUT/member-$m"
  members+=(--members "$OUT/member-$m")
done
run rlhfkit ensemble "${members[@]}" --out "$OUT/ensemble"
run rlhfkit strength "$TRAIN" --ensemble "$OUT/ensemble" --plot "$OUT/strength.png" --out "$OUT/strength.jsonl"
run rlhfkit clean "$OUT/strength.jsonl" --flip --out "$OUT/flip.jsonl"
run rlhfkit clean "$OUT/strength.jsonl" --margin --out "$OUT/margin.jsonl"
run rlhfkit clean "$OUT/strength.jsonl" --flip --margin --out "$OUT/flip-margin.jsonl"
run rlhfkit clean "$OUT/strength.jsonl" --smooth 0.3 --margin --out "$OUT/soft-margin.jsonl"
run rlhfkit prompts "$TEST" --kind extract --limit "$JUDGED" --out "$OUT/judge-prompts.jsonl"
for variant in raw flip margin flip-margin soft-margin simcse swav; do
  case $variant in
    raw) data="$TRAIN"; extra="" ;;
    simcse) data="$TRAIN"; extra="--contrastive simcse --contrastive-features diff --batch-size 16" ;;
    swav) data="$TRAIN"; extra="--contrastive swav --contrastive-features diff --batch-size 16" ;;
    *) data="$OUT/$variant.jsonl"; extra="" ;;
  esac
  launch train-rm "$data" --model "$MODEL" $RM_FLAGS $extra --out "$OUT/rm-$variant"
  run_to "$OUT/accuracy-$variant.json" rlhfkit metrics accuracy "$TEST" --reward "$OUT/rm-$variant"
  launch ppo --policy "$POLICY" --reward "$OUT/rm-$variant" --prompts "$TRAIN" --steps "$PPO_STEPS" $PPO_FLAGS --out "$OUT/policy-$variant"
  run rlhfkit generate "$OUT/judge-prompts.jsonl" --policy "$OUT/policy-$variant" --max-new-tokens "$TOKENS" \
    --temperature 0.8 --top-p 0.9 --out "$OUT/gens-$variant.jsonl"
done
run env SCALE="$SCALE" OUT="$OUT/metarm" PAIRS="$OUT/flip.jsonl" PROMPTS="$OUT/judge-prompts.jsonl" TEST="$TEST" POLICY="$POLICY" \
  RM_BASE="$MODEL" ROUNDS="$META_ROUNDS" TOKENS="$TOKENS" RM_FLAGS="$META_RM_FLAGS" PPO_FLAGS="$PPO_FLAGS" \
  PPO_STEPS="$PPO_STEPS" bash "$(dirname "$0")/metarm_rounds.sh"
for variant in flip margin flip-margin soft-margin simcse swav; do
  run rlhfkit judge "$OUT/gens-$variant.jsonl" "$OUT/gens-raw.jsonl" $JUDGE --out "$OUT/judged-$variant.jsonl"
  run_to "$OUT/winrate-$variant.json" rlhfkit metrics winrate "$OUT/judged-$variant.jsonl"
done
run rlhfkit report secrets-rm "$OUT" --scale "$SCALE" --out "$OUT/summary.json"
