"""Ensemble costs: scoring with K = 10 heads vs one head, and head training vs one backbone pass.

Goals: K = 10 scoring ≤ 1.15x the time of K = 1 on the same data; training 10 heads for 3
epochs on cached features takes less time than one backbone pass over the data.

    python benchmarks/ensemble.py [--model minilm] [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from rlhfkit import synth
    from rlhfkit.cleaning.ensemble import Backbone, HeadTraining, save_ensemble, train_heads
    from rlhfkit.cleaning.scoring import EnsembleScorer
    from rlhfkit.records import parse_record

    examples = [parse_record(r) for r in synth.pairs(args.n, 0.2, seed=0)]
    backbone = Backbone(args.model)
    texts = backbone.texts([e.prompt for e in examples] * 2, [e.chosen for e in examples] + [e.rejected for e in examples])
    backbone.features(texts[:64])  # warm-up

    t = time.perf_counter()
    feats = backbone.features(texts)
    backbone_pass = time.perf_counter() - t

    t = time.perf_counter()
    heads10 = train_heads(feats[: args.n], feats[args.n :], HeadTraining(heads=10, epochs=3))
    train10 = time.perf_counter() - t

    scorers = {}
    for k in (1, 10):
        d = tempfile.mkdtemp()
        h = heads10 if k == 10 else train_heads(feats[: args.n], feats[args.n :], HeadTraining(heads=1, epochs=1))
        save_ensemble(d, h, backbone, {})
        scorers[k] = EnsembleScorer(d)
    prompts, responses = [e.prompt for e in examples], [e.chosen for e in examples]
    best = {1: float("inf"), 10: float("inf")}
    for _ in range(args.repeats):
        for k in (1, 10):
            t = time.perf_counter()
            with torch.inference_mode():
                scorers[k].score(prompts, responses)
            best[k] = min(best[k], time.perf_counter() - t)
    print(json.dumps({
        "model": args.model, "texts_scored": args.n, "device": backbone.device,
        "score_seconds_k1": round(best[1], 3), "score_seconds_k10": round(best[10], 3),
        "score_ratio_k10_over_k1": round(best[10] / best[1], 3),
        "backbone_pass_seconds": round(backbone_pass, 3), "train_10_heads_3_epochs_seconds": round(train10, 3),
        "train_over_backbone_pass": round(train10 / backbone_pass, 3),
    }, indent=1))


if __name__ == "__main__":
    main()
