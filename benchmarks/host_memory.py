"""Peak host memory per process of sharded PPO, against the byte count that explains it.

Two processes on the CPU (tests/sharded_cpu.py lets accelerate pick ZeRO-3 / FSDP2 without a GPU),
`--dtype bf16`, one PPO step, at two policy sizes of the same Llama shape but for the layer count.
Each process records its peak resident memory in rlhfkit.json (`sharding.peak_host_rss_bytes_per_process`,
and by phase: at the start, with every model loaded, after the engine's `prepare`, after the first
step, at the end with the final save); the difference between the two sizes, divided by the
difference in parameters, is the peak's cost per policy parameter, free of the interpreter's and
libraries' fixed share. DDP (`cpu-2proc`) is the unsharded reference.

What it should be, per policy parameter: the policy loads whole in fp32 (4 bytes) on every process
before the engine shards it; the reference is a frozen bf16 copy made tensor by tensor (2 bytes;
on a GPU it lives on the device, here the device is the host). `deepcopy(policy)` before the cast,
as rlhfkit did until issue 33, held a second fp32 copy: 4 more. The engines' own shards (fp32
weights, gradients, AdamW moments: 16 bytes over the processes) come after the whole copy is freed.

    python benchmarks/host_memory.py --out benchmarks/results/host_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {"cpu-2proc": "MULTI_CPU", "zero3": "DEEPSPEED-ZeRO3", "fsdp": "FSDP2"}
SHAPE = dict(hidden_size=512, intermediate_size=1376, num_attention_heads=8, num_key_value_heads=8,
             vocab_size=261, max_position_embeddings=512)


def build(layers: int, directory: Path) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfkit.models import byte_tokenizer

    tok = byte_tokenizer()
    cfg = LlamaConfig(**SHAPE, num_hidden_layers=layers, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def peak_rss(config: str, policy: Path, work: Path) -> list[int]:
    prompts = work / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(4)))
    out = work / f"{config}-{policy.name}"
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / f"{config}.yaml"), "--num_processes", "2", "--main_process_port",
           port(), str(ROOT / "tests" / "sharded_cpu.py"), "ppo", "--policy", str(policy), "--reward",
           f"{ROOT / 'tests' / 'scripted_rewards.py'}:e_count", "--prompts", str(prompts), "--steps", "1",
           "--batch-size", "4", "--mini-batch-size", "4", "--max-new-tokens", "4", "--dtype", "bf16",
           "--save-steps", "0", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    sharding = json.loads((out / "rlhfkit.json").read_text())["sharding"]
    if sharding["engine"] != ENGINES[config]:  # a run that quietly fell back to DDP measures nothing here
        raise SystemExit(f"{config}: ran as {sharding['engine']}, not {ENGINES[config]}")
    return {**sharding["peak_host_rss_bytes_per_process_by_phase"], "end": sharding["peak_host_rss_bytes_per_process"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, nargs=2, default=[2, 14])
    ap.add_argument("--configs", nargs="+", default=["cpu-2proc", "zero3", "fsdp"])
    args = ap.parse_args()
    report: dict = {"command": " ".join(["python", *sys.argv]), "shape": SHAPE, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes = {}
        for layers in args.layers:
            sizes[layers] = build(layers, work / f"policy-{layers}")
        report["parameters"] = {str(k): v for k, v in sizes.items()}
        small, big = args.layers
        for config in args.configs:
            rss = {layers: peak_rss(config, work / f"policy-{layers}", work) for layers in args.layers}
            # the peak so far after each phase, per extra policy parameter, per process
            slope = {phase: [round((b - a) / (sizes[big] - sizes[small]), 2)
                             for a, b in zip(rss[small][phase], rss[big][phase])] for phase in rss[small]}
            report["runs"][config] = {"peak_host_rss_bytes_per_process": {str(k): v for k, v in rss.items()},
                                      "peak_bytes_per_policy_parameter_per_process": slope}
            print(config, slope, file=sys.stderr)
    report["expected_bytes_per_policy_parameter"] = {"policy loaded whole, fp32": 4, "bf16 reference": 2,
                                                     "deepcopy before the cast (before issue 33)": 4}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["runs"]))


if __name__ == "__main__":
    main()
