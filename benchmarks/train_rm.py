"""train-rm vs TRL's RewardTrainer, same model/data/batch/length: the training loop alone (pairs/s and
peak memory), and with --whole-process the whole command as a user runs it (interpreter start,
imports, model load, tokenisation, training, saving), timed from outside.

Each trainer runs in its own subprocess (so peak RSS is its own), alternating, best of --repeats.

    python benchmarks/train_rm.py                        # loop: minilm, 256 synth pairs, batch 16
    python benchmarks/train_rm.py --whole-process        # process: 64 real HH pairs, batch 8, length 256, 1 epoch
    python benchmarks/train_rm.py --model smollm2-135m --pairs 512 --max-length 256   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def peak_memory_mb() -> float:
    if torch_cuda():
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def examples(n: int):
    from rlhfkit import synth
    from rlhfkit.records import parse_record

    return [parse_record(r) for r in synth.pairs(n, 0.0, seed=0)]


def run_rlhfkit(args) -> dict:
    from rlhfkit.rewards import train as T

    exs = examples(args.pairs)
    cfg = T.TrainConfig(model=args.model, out=tempfile.mkdtemp(), batch_size=args.batch_size, max_length=args.max_length,
                        lr=1e-5, epochs=1, save_steps=0, logging_steps=10**9, warmup_ratio=0.0)
    timings = {}
    original = T.save_reward_model  # imported into the loop's module from rewards.persist

    def timed_save(*a, **k):  # the loop ends where saving starts
        timings["end"] = time.perf_counter()
        return original(*a, **k)

    T.save_reward_model = timed_save
    original_prepare = T.epoch_order

    def timed_order(*a, **k):  # the loop starts with the first epoch's batches
        timings.setdefault("start", time.perf_counter())
        return original_prepare(*a, **k)

    T.epoch_order = timed_order
    T.train_reward_model(cfg, exs, progress=False)
    return {"seconds": timings["end"] - timings["start"], "peak_mb": peak_memory_mb()}


def run_trl(args) -> dict:
    import datasets
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from rlhfkit.models import load_model, load_tokenizer
    from rlhfkit.rewards.model import render

    tok = load_tokenizer(args.model)
    model = load_model(args.model, "reward").train()
    exs = examples(args.pairs)
    ds = datasets.Dataset.from_list([{"chosen": render(tok, e.prompt, e.chosen), "rejected": render(tok, e.prompt, e.rejected)}
                                     for e in exs])
    cfg = RewardConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_length=args.max_length,
                       num_train_epochs=1, learning_rate=1e-5, save_strategy="no", report_to=[], logging_steps=10**9,
                       disable_tqdm=True, dataloader_num_workers=0, lr_scheduler_type="cosine",
                       bf16=torch_cuda(), use_cpu=not torch_cuda(), eos_token=tok.eos_token or tok.sep_token)
    timings = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            timings["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            timings["end"] = time.perf_counter()

    trainer = RewardTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    return {"seconds": timings["end"] - timings["start"], "peak_mb": peak_memory_mb()}


TRL_SCRIPT = r"""
import sys, time, datasets
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer
data, model_dir, out, batch, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
ds = datasets.load_dataset("json", data_files=data, split="train")
cfg = RewardConfig(output_dir=out, per_device_train_batch_size=batch, max_length=length, num_train_epochs=1,
                   learning_rate=1e-5, save_strategy="no", report_to=[], logging_steps=10**9, disable_tqdm=True,
                   lr_scheduler_type="cosine", use_cpu=True, eos_token=tok.eos_token or tok.sep_token)
trainer = RewardTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok)
trainer.train()
trainer.save_model(out)
"""


def whole_process(args) -> None:
    """Both trainers as whole commands on the same real pairs (HH-RLHF harmless-base, explicit prompt)."""
    import gzip
    import os
    from pathlib import Path

    from rlhfkit.models import resolve
    from rlhfkit.records import parse_record

    from rlhfkit.models import load_tokenizer
    from rlhfkit.rewards.model import render

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
    if not shared.exists():
        raise SystemExit(f"{shared} not found (it lies beside the project's checkout)")
    tmp = Path(tempfile.mkdtemp())
    tok = load_tokenizer(args.model)
    rows = []
    with gzip.open(shared, "rt") as fh:
        for line in fh:
            ex = parse_record(json.loads(line))
            # pairs that fit in --max-length as both trainers tokenise them: TRL's RewardTrainer silently
            # drops longer pairs (rlhfkit truncates), so longer pairs would give the two different data
            fits = all(len(tok(render(tok, ex.prompt, r))["input_ids"]) <= args.max_length - 2 and
                       len(tok(ex.prompt + r)["input_ids"]) <= args.max_length - 2 for r in (ex.chosen, ex.rejected))
            if ex.prompt and fits:  # TRL's explicit-prompt format: prompt / chosen / rejected strings
                rows.append({"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected})
            if len(rows) == args.pairs:
                break
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model_dir = resolve(args.model).path
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    commands = {
        "rlhfkit": [sys.executable, "-m", "rlhfkit", "train-rm", str(data), "--model", args.model, "--batch-size",
                    str(args.batch_size), "--max-length", str(args.max_length), "--epochs", "1", "--lr", "1e-5",
                    "--save-steps", "0", "--dtype", "fp32", "--out", str(tmp / "rlhfkit-out")],
        "trl": [sys.executable, "-c", TRL_SCRIPT, str(data), model_dir, str(tmp / "trl-out"), str(args.batch_size),
                str(args.max_length)],
    }
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    print(json.dumps({"mode": "whole process", "model": args.model, "pairs": len(rows), "batch_size": args.batch_size,
                      "max_length": args.max_length, "rlhfkit_s": round(best["rlhfkit"], 2),
                      "trl_s": round(best["trl"], 2), "speed_ratio": round(best["trl"] / best["rlhfkit"], 3)}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm")
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", choices=["rlhfkit", "trl"])
    p.add_argument("--whole-process", action="store_true", help="time both as whole commands on real HH pairs")
    args = p.parse_args()
    if args.whole_process:
        if "--pairs" not in sys.argv:
            args.pairs = 64
        if "--batch-size" not in sys.argv:
            args.batch_size = 8
        if "--max-length" not in sys.argv:
            args.max_length = 256
        whole_process(args)
        return
    if args.worker:
        result = (run_rlhfkit if args.worker == "rlhfkit" else run_trl)(args)
        result["pairs_per_s"] = args.pairs / result["seconds"]
        print(json.dumps(result))
        return
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for worker in ("trl", "rlhfkit"):
            cmd = [sys.executable, __file__, "--worker", worker, "--model", args.model, "--pairs", str(args.pairs),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            if worker not in best or r["pairs_per_s"] > best[worker]["pairs_per_s"]:
                best[worker] = r
    ratio = best["rlhfkit"]["pairs_per_s"] / best["trl"]["pairs_per_s"]
    mem = best["rlhfkit"]["peak_mb"] / best["trl"]["peak_mb"]
    print(json.dumps({"model": args.model, "pairs": args.pairs, "batch_size": args.batch_size, "max_length": args.max_length,
                      "rlhfkit": best["rlhfkit"], "trl": best["trl"], "speed_ratio": round(ratio, 3),
                      "peak_memory_ratio": round(mem, 3)}, indent=1))


if __name__ == "__main__":
    main()
