"""Issue 26: a user's own data reads right: label tests compare numbers and say when they match all
or none; a pair whose label says the rejected response is better is read as its swap, in every stage."""

import json

import pytest

from rlhfkit import synth

from conftest import cli, last_json_line, read_jsonl, write_jsonl


def alpacaeval(tmp_path, preferences):
    rows = [{"instruction": f"q{i}", "output_1": f"a{i}", "output_2": f"b{i}", "preference": p}
            for i, p in enumerate(preferences)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(rows))
    return path


AE_FIELDS = "prompt=instruction,chosen=output_1,rejected=output_2,label=preference==1"


def test_label_test_compares_numbers_as_numbers(tmp_path):
    """AlpacaEval writes preference 1.0 / 2.0: `preference==1` must match 1.0 (it compared the
    strings '1.0' and '1' and gave label 0 on every row)."""
    r = cli("validate", alpacaeval(tmp_path, [1.0, 2.0, 1, 2, "1", True]), "--fields", AE_FIELDS)
    assert r.exit_code == 0, r.stderr
    # label 0 (output_2 better) is then read as the swap (see the orientation rule below)
    matched = [x["chosen"] == f"a{i}" for i, x in enumerate(read_jsonl(r.stdout))]
    assert matched == [True, False, True, False, True, False]


def test_label_test_that_matches_every_row_or_none_is_reported(tmp_path):
    data = alpacaeval(tmp_path, [2.0, 2.0, 2.0])
    r = cli("validate", data, "--fields", AE_FIELDS)
    assert r.exit_code == 0, r.stderr
    assert "--fields label=preference==1 matched none of the 3 records" in r.stderr
    r = cli("validate", data, "--fields", AE_FIELDS.replace("==1", "==2"))
    assert "--fields label=preference==2 matched all 3 records" in r.stderr
    r = cli("validate", alpacaeval(tmp_path, [1.0, 2.0]), "--fields", AE_FIELDS)
    assert "matched" not in r.stderr


# ---------------------------------------------------------------- 2. one orientation rule: label < 0.5 is the swap

def stated_both_ways(rows):
    """The same preferences, every other pair stated the other way round with label 1 - p."""
    out = []
    for i, r in enumerate(rows):
        r = dict(r, id=f"p{i}")
        if i % 2:
            r = dict(r, chosen=r["rejected"], rejected=r["chosen"], gold_chosen=r["gold_rejected"],
                     gold_rejected=r["gold_chosen"], label=1.0 - r.get("label", 1.0))
        out.append(r)
    return out


def by_id(text):
    return {x["id"]: x for x in read_jsonl(text)}


def test_validate_reads_a_label_below_half_as_the_swap(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [
        {"id": "a", "prompt": "q", "chosen": "x", "rejected": "y", "label": 0.2, "gold_chosen": 1, "gold_rejected": 4},
        {"id": "b", "prompt": "q", "chosen": "x", "rejected": "y", "label": 0.7},
        {"id": "c", "prompt": "q", "chosen": "x", "rejected": "y", "label": 0.5}])
    r = cli("validate", data)
    assert r.exit_code == 0, r.stderr
    out = by_id(r.stdout)
    assert (out["a"]["chosen"], out["a"]["rejected"], out["a"]["gold_chosen"], out["a"]["gold_rejected"]) == ("y", "x", 4, 1)
    assert out["a"]["label"] == pytest.approx(0.8)
    assert (out["b"]["chosen"], out["b"]["label"]) == ("x", 0.7) and (out["c"]["chosen"], out["c"]["label"]) == ("x", 0.5)
    assert "1 pair(s) with label < 0.5" in r.stderr


def test_alpacaeval_preference_two_means_output_2_is_preferred_after_mapping(tmp_path):
    r = cli("validate", alpacaeval(tmp_path, [1.0, 2.0]), "--fields", AE_FIELDS)
    out = read_jsonl(r.stdout)
    assert [(x["chosen"], x["rejected"], x["label"]) for x in out] == [("a0", "b0", 1.0), ("b1", "a1", 1.0)]


def test_strength_and_its_noise_estimate_do_not_depend_on_how_a_pair_is_stated(tmp_path):
    rows = list(synth.pairs(24, 0.25, seed=0))
    plain = write_jsonl(tmp_path / "plain.jsonl", [dict(r, id=f"p{i}") for i, r in enumerate(rows)])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", stated_both_ways(rows))
    flags = ["--model", "tiny-bert", "--folds", 3, "--member-epochs", 1, "--heads", 3]
    a, b = cli("strength", plain, *flags), cli("strength", mixed, *flags)
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    sa, sb = by_id(a.stdout), by_id(b.stdout)
    for key, x in sa.items():
        y = sb[key]
        assert (y["chosen"], y["rejected"], y["gold_chosen"]) == (x["chosen"], x["rejected"], x["gold_chosen"])
        assert y["strength_margins"] == pytest.approx(x["strength_margins"], abs=1e-5)
    assert last_json_line(b.stderr)["noise_rate_estimate"] == last_json_line(a.stderr)["noise_rate_estimate"]


def test_clean_reads_strength_against_the_label_the_pair_states(tmp_path):
    """Members preferring x on a pair whose label says y is better: the label is the suspect, so the
    flip restores x first; members preferring y there agree with the label (nothing to flip)."""
    data = write_jsonl(tmp_path / "s.jsonl", [
        {"id": "against", "prompt": "q", "chosen": "x", "rejected": "y", "label": 0.0, "strength_mean": 3.0,
         "strength_margins": [2.5, 3.5]},
        {"id": "agrees", "prompt": "q", "chosen": "x", "rejected": "y", "label": 0.0, "strength_mean": -3.0,
         "strength_margins": [-2.5, -3.5]}])
    r = cli("clean", data, "--flip-below", 0)
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("read as their swap") == 1  # clean reads the file twice, says it once
    out = by_id(r.stdout)
    assert out["against"]["clean_action"] == "flip" and out["against"]["chosen"] == "x"
    assert out["against"]["label"] == 1.0 and out["against"]["strength_margins"] == [2.5, 3.5]
    assert out["agrees"]["clean_action"] == "keep" and out["agrees"]["chosen"] == "y"
    assert out["agrees"]["strength_mean"] == 3.0


def test_reward_model_accuracy_counts_the_preferred_response_by_the_label(tmp_path):
    rows = list(synth.pairs(20, 0.0, seed=0))
    plain = write_jsonl(tmp_path / "plain.jsonl", [dict(r, id=f"p{i}") for i, r in enumerate(rows)])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", stated_both_ways(rows))
    assert cli("train-rm", plain, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 2,
               "--save-steps", 0).exit_code == 0
    a = read_jsonl(cli("metrics", "accuracy", plain, "--reward", tmp_path / "rm").stdout)[0]
    b = read_jsonl(cli("metrics", "accuracy", mixed, "--reward", tmp_path / "rm").stdout)[0]
    assert b["overall"] == pytest.approx(a["overall"])


# ---------------------------------------------------------------- 3. hf: specs with split slices and data_dir / subsets

def test_hf_specs_take_split_slices_and_a_data_dir(tmp_path):
    import datasets

    rows = [dict(r, id=f"p{i}") for i, r in enumerate(synth.pairs(6, 0.0, seed=0))]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    r = cli("validate", f"hf:{tmp_path / 'saved'}:train[:2]")
    assert r.exit_code == 0, r.stderr
    assert [x["id"] for x in read_jsonl(r.stdout)] == ["p0", "p1"]
    assert [x["id"] for x in read_jsonl(cli("validate", f"hf:{tmp_path / 'saved'}:train[-50%:]").stdout)] == ["p3", "p4", "p5"]

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "pairs.parquet"))
    r = cli("validate", f"hf:{tmp_path / 'pairs.parquet'}:train[2:4]")
    assert [x["id"] for x in read_jsonl(r.stdout)] == ["p2", "p3"]

    # a repository laid out like Anthropic/hh-rlhf: one folder per subset, named with data_dir=
    for sub, part in (("harmless-base", rows[:4]), ("helpful-base", rows[4:])):
        (tmp_path / "hh" / sub).mkdir(parents=True)
        write_jsonl(tmp_path / "hh" / sub / "test.jsonl", part)
    r = cli("validate", f"hf:{tmp_path / 'hh'}:data_dir=harmless-base:test[1:]")
    assert r.exit_code == 0, r.stderr
    assert [x["id"] for x in read_jsonl(r.stdout)] == ["p1", "p2", "p3"]

    r = cli("validate", f"hf:{tmp_path / 'saved'}:train[:x]")
    assert r.exit_code == 2 and "bad dataset spec" in r.stderr


# ---------------------------------------------------------------- 7. a global batch smaller than the process count

def test_train_rm_refuses_a_global_batch_smaller_than_the_process_count(tmp_path):
    """With 2 processes and --batch-size 1, the second process took rank 0's record again (its share
    was empty): a silently different computation. Refused up front, before any model is loaded."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(6, 0.0, seed=0))
    torchrun = Path(sys.executable).parent / "torchrun"
    p = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rlhfkit", "train-rm", str(data),
                        "--model", "tiny-bert", "--out", str(tmp_path / "rm"), "--batch-size", "1", "--save-steps", "0"],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert p.returncode != 0
    assert "--batch-size 1 is the global batch: give at least one pair per process (2 processes)" in p.stderr
    assert not (tmp_path / "rm").exists()


# ---------------------------------------------------------------- 11. prompts already in the policy's format

def test_policies_read_hh_prompts_without_the_chat_template_when_told(tmp_path, monkeypatch):
    """HH prompts ("Human: ... Assistant:") wrapped in another model's chat template are not the
    prompts the papers used: ppo, generate and metrics take --no-chat-template (default: the
    template when the tokenizer has one, as before)."""
    from pathlib import Path

    import transformers

    rendered = []
    real = transformers.PreTrainedTokenizerBase.apply_chat_template

    def spy(self, *args, **kwargs):
        rendered.append(args[0] if args else kwargs.get("conversation"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "apply_chat_template", spy)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"\n\nHuman: say {w}\n\nAssistant:"} for w in "abcd"])
    reward = f"{Path(__file__).with_name('scripted_rewards.py')}:e_count"
    commands = {
        "generate": ["generate", prompts, "--policy", "tiny-gpt", "--max-new-tokens", 3],
        "metrics": ["metrics", "generation", "--policy", "tiny-gpt", "--ref", "tiny-gpt", "--prompts", prompts,
                    "--max-new-tokens", 3],
        "ppo": ["ppo", "--policy", "tiny-gpt", "--reward", reward, "--prompts", prompts, "--steps", 1, "--batch-size", 2,
                "--mini-batch-size", 2, "--max-new-tokens", 3, "--save-steps", 0],
    }
    for name, args in commands.items():
        for flag, templated in (("--no-chat-template", False), (None, True)):
            rendered.clear()
            extra = ["--out", tmp_path / f"{name}-{templated}"] if name == "ppo" else []
            r = cli(*args, *extra, *([flag] if flag else []))
            assert r.exit_code == 0, (name, r.stderr[-2000:])
            assert bool(rendered) == templated, name


# ---------------------------------------------------------------- 10. inference in the compute dtype

def test_inference_stages_take_a_dtype(tmp_path, monkeypatch):
    """score, strength --ensemble, judge --reward, generate and metrics load models in --dtype (a 7B
    reward model scored in fp32 needs twice the memory); bf16 rewards are bf16-rounded fp32 ones."""
    import torch

    rows = [dict(r, id=f"p{i}") for i, r in enumerate(synth.pairs(8, 0.0, seed=0))]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert cli("train-rm", pairs, "--model", "tiny-bert", "--out", tmp_path / "rm", "--max-steps", 2,
               "--save-steps", 0).exit_code == 0
    full = read_jsonl(cli("score", pairs, "--reward", tmp_path / "rm", "--dtype", "fp32").stdout)
    r = cli("score", pairs, "--reward", tmp_path / "rm", "--dtype", "bf16")
    assert r.exit_code == 0, r.stderr
    half = read_jsonl(r.stdout)
    assert last_json_line(r.stderr)["dtype"] == "bf16"
    diffs = [abs(h["reward_chosen"] - f["reward_chosen"]) for h, f in zip(half, full)]
    assert max(diffs) > 0 and all(d <= 0.05 * max(1.0, abs(f["reward_chosen"])) for d, f in zip(diffs, full))
    assert cli("score", pairs, "--reward", tmp_path / "rm", "--dtype", "fp8").exit_code == 2

    # the policy-side stages: the dtype each model is loaded in (tiny aliases are built in fp32 whatever
    # they are asked, so the request itself is what is checked)
    from rlhfkit.metrics import sampling

    asked = []
    real_load = sampling.load_model
    monkeypatch.setattr(sampling, "load_model", lambda name, kind, dtype=None: asked.append(dtype) or real_load(name, kind, dtype))
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "say a"}, {"prompt": "say b"}])
    for args, models in ((["generate", prompts, "--policy", "tiny-gpt", "--max-new-tokens", 2], 1),
                         (["metrics", "generation", "--policy", "tiny-gpt", "--ref", "tiny-gpt", "--prompts", prompts,
                           "--max-new-tokens", 2], 2)):
        asked.clear()
        r = cli(*args, "--dtype", "bf16")
        assert r.exit_code == 0, (args[0], r.stderr[-1500:])
        assert asked == [torch.bfloat16] * models, args[0]
    r = cli("metrics", "accuracy", pairs, "--reward", tmp_path / "rm", "--dtype", "bf16")
    assert r.exit_code == 0, r.stderr[-1500:]


# ---------------------------------------------------------------- 12. PM needs no reference model

def test_ppo_pm_neither_builds_nor_runs_a_reference(tmp_path, monkeypatch):
    """PM's penalty is log π alone: its run builds no reference copy and runs no reference forward
    (memory and time); its log says the KL was not measured. KL runs still build one."""
    from pathlib import Path

    import torch

    from rlhfkit.ppo import trainer

    copies = []
    real_copy = trainer.frozen_copy  # how the reference is made (tensor by tensor, issue 33)
    def spy(obj, *args):
        if isinstance(obj, torch.nn.Module):
            copies.append(type(obj).__name__)
        return real_copy(obj, *args)

    monkeypatch.setattr(trainer, "frozen_copy", spy)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"say {w}"} for w in "abcd"])
    reward = f"{Path(__file__).with_name('scripted_rewards.py')}:e_count"
    for regularizer in ("pm", "kl"):
        copies.clear()
        out = tmp_path / regularizer
        r = cli("ppo", "--policy", "tiny-gpt", "--reward", reward, "--prompts", prompts, "--steps", 1, "--batch-size", 2,
                "--mini-batch-size", 2, "--max-new-tokens", 3, "--save-steps", 0, "--regularizer", regularizer,
                "--out", out)
        assert r.exit_code == 0, r.stderr[-2000:]
        log = read_jsonl(out / "log.jsonl")[0]
        if regularizer == "pm":
            assert copies == [] and log["kl"] is None and "seconds_ref_forward" not in log
        else:
            assert copies and isinstance(log["kl"], float) and "seconds_ref_forward" in log


# ---------------------------------------------------------------- 8. ten 7B members need one model's memory

def test_strength_with_member_models_loads_one_member_at_a_time(tmp_path, monkeypatch):
    import weakref

    from rlhfkit.cleaning import scoring

    rows = [dict(r, id=f"p{i}") for i, r in enumerate(synth.pairs(6, 0.0, seed=0))]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    for seed in (0, 1, 2):
        assert cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / f"rm{seed}", "--max-steps", 1,
                   "--seed", seed, "--save-steps", 0).exit_code == 0
    members = [a for s in (0, 1, 2) for a in ("--members", tmp_path / f"rm{s}")]
    assert cli("ensemble", *members, "--out", tmp_path / "m").exit_code == 0
    alive, most = weakref.WeakSet(), []
    real_init = scoring.RewardModelScorer.__init__

    def counting_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        alive.add(self)
        most.append(len(alive))

    monkeypatch.setattr(scoring.RewardModelScorer, "__init__", counting_init)
    out = read_jsonl(cli("strength", data, "--ensemble", tmp_path / "m").stdout)
    assert len(most) == 3 and max(most) == 1
    one = read_jsonl(cli("score", data, "--reward", tmp_path / "rm2").stdout)
    assert out[0]["strength_margins"][2] == pytest.approx(one[0]["reward_chosen"] - one[0]["reward_rejected"], abs=1e-5)


def test_reading_the_swap_leaves_every_pair_loss_unchanged():
    """label p and margin m on (a, b) must train exactly as label 1 - p, margin -m on (b, a):
    -[p log s(D - m) + (1 - p) log s(m - D)] with D = r(a) - r(b), for any rewards."""
    import torch

    from rlhfkit.records import parse_record
    from rlhfkit.rewards.losses import pair_loss

    given = {"prompt": "q", "chosen": "a", "rejected": "b", "label": 0.2, "margin": 1.0}
    ex = parse_record(given)
    assert (ex.chosen, ex.rejected, ex.label, ex.margin) == ("b", "a", pytest.approx(0.8), -1.0)
    delta = torch.linspace(-4, 4, 17)  # r(a) - r(b)
    as_given = pair_loss(delta, torch.tensor(1.0), torch.tensor(0.2))
    as_read = pair_loss(-delta, torch.tensor(ex.margin), torch.tensor(ex.label))
    assert torch.allclose(as_given, as_read, atol=1e-6)
