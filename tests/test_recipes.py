"""Recipes: every script parses and prints its plan under DRY_RUN=1 (the paper recipes run for real at
SCALE=tiny in tests/test_paper_recipes.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PAPER_RECIPES = ["reward_collapse.sh", "uncertainty_rlhf.sh", "pm_rlhf.sh", "secrets_rm.sh", "metarm_rounds.sh",
                 "demo.sh"]


def _env(**extra):
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra)


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.sh")))
def test_recipe_parses(name):
    assert subprocess.run(["bash", "-n", str(RECIPES / name)]).returncode == 0


@pytest.mark.parametrize("name", [n for n in PAPER_RECIPES if n != "demo.sh"])
def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, name):
    out = tmp_path / "out"
    p = subprocess.run(["bash", str(RECIPES / name)], env=_env(DRY_RUN="1", OUT=str(out)), capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    commands = [line for line in p.stderr.splitlines() if line.startswith("+ ")]
    assert len(commands) >= 5 and any("rlhfkit" in c for c in commands)
    assert not out.exists()


def test_paper_recipes_say_what_they_reproduce():
    for name in ["reward_collapse.sh", "uncertainty_rlhf.sh", "pm_rlhf.sh", "secrets_rm.sh"]:
        header = (RECIPES / name).read_text().split("set -euo")[0]
        assert "Reproduces" in header and "Hardware" in header


def _plan(name, tmp_path):
    p = subprocess.run(["bash", str(RECIPES / name)], env=_env(DRY_RUN="1", OUT=str(tmp_path / "out")),
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line[2:].split() for line in p.stderr.splitlines() if line.startswith("+ ")]


def _flag(words, name, default=None):
    return words[words.index(name) + 1] if name in words else default


def test_pm_recipe_aligns_to_the_distribution_its_divergence_measures(tmp_path):
    """One beta convention (README, `ppo --beta`): r - beta * KL against the unscaled score, whose KL
    optimum pi_ref * exp(r/beta) is what PM divergence at the same beta compares with; so every PPO
    run's beta equals its divergence's beta, with no reward scaling and the usual +-5 clip on r."""
    plan = _plan("pm_rlhf.sh", tmp_path)
    ppo = [w for w in plan if w[:2] == ["rlhfkit", "ppo"]]
    pm = {Path(_flag(w, "--policy")).name: float(_flag(w, "--beta")) for w in plan if w[1:3] == ["metrics", "pm-divergence"]}
    assert len(ppo) == 12 and len(pm) == 12  # beta in {0.1, 0.5, 1} x (kl + alpha in {0.1, 0.3, 0.5})
    for w in ppo:
        name = Path(_flag(w, "--out")).name
        beta = float(_flag(w, "--beta", 0.1))
        scale = float(_flag(w, "--reward-scale", 1.0))
        assert scale == 1.0 and abs(beta - pm[name]) < 1e-9, (name, beta, scale, pm[name])
        assert float(_flag(w, "--score-clip", 5.0)) == 5.0
        # the paper's PPO settings
        assert _flag(w, "--lr") == "1e-6" and _flag(w, "--top-p") == "0.9" and _flag(w, "--temperature") == "1"
        assert _flag(w, "--max-new-tokens") == "256" and _flag(w, "--max-prompt-length") == "256"
    assert sorted({_flag(w, "--alpha") for w in ppo if "cpm" in w}) == ["0.1", "0.3", "0.5"]


def test_uncertainty_recipe_uses_the_papers_ppo_settings(tmp_path):
    plan = _plan("uncertainty_rlhf.sh", tmp_path)
    ppo = [w for w in plan if w[:2] == ["rlhfkit", "ppo"]]
    assert len(ppo) == 2 * 10 * 4  # two methods x 10 heads x 4 runs
    for w in ppo:
        assert _flag(w, "--batch-size") == "128" and _flag(w, "--steps") == "192" and _flag(w, "--max-new-tokens") == "10"
        if _flag(w, "--regularizer") == "kl":
            assert (_flag(w, "--lr"), _flag(w, "--beta")) == ("1.41e-5", "0.2")
        else:
            assert _flag(w, "--regularizer") == "var-kl"
            assert (_flag(w, "--lr"), _flag(w, "--beta"), _flag(w, "--variance-power")) == ("1.5e-5", "0.05", "1")
    heads = {_flag(w, "--reward-head") for w in ppo}
    assert heads == {str(h) for h in range(10)}


# ---------------------------------------------------------------- on a GPU node: LAUNCH reaches every training stage

LAUNCHERS = {"default config": "accelerate launch --num_processes 8 -m",
             "zero3": "accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 8 -m",
             "ddp": "accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 8 -m"}


def _launched_plan(name, tmp_path, launch, **env):
    p = subprocess.run(["bash", str(RECIPES / name)], env=_env(DRY_RUN="1", OUT=str(tmp_path / "out"), LAUNCH=launch, **env),
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stderr.splitlines()


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
@pytest.mark.parametrize("name", [n for n in PAPER_RECIPES if n != "demo.sh"])
def test_every_training_stage_runs_under_launch_with_flags_its_config_takes(tmp_path, name, launcher):
    """Under LAUNCH every train-rm and ppo goes through the launcher (on 8 GPUs a plain `rlhfkit ppo`
    runs on one); no stage passes a separate critic where the config may shard (refused there), none passes a global
    batch smaller than the 8 processes, and the plan names the policy PPO starts from. MetaRM recipes
    refuse a DeepSpeed LAUNCH before the first stage."""
    if launcher == "zero3" and name in ("secrets_rm.sh", "metarm_rounds.sh"):
        # MetaRM does not run under DeepSpeed (train-rm refuses it): said before any stage runs,
        # not after hours of the stages before it
        p = subprocess.run(["bash", str(RECIPES / name)], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                           env=_env(DRY_RUN="1", OUT=str(tmp_path / "out"), LAUNCH=LAUNCHERS[launcher]))
        assert p.returncode == 2 and "MetaRM" in p.stderr, p.stderr
        assert not any(line.startswith("+ ") for line in p.stderr.splitlines()), p.stderr
        return
    lines = _launched_plan(name, tmp_path, LAUNCHERS[launcher])
    commands = [line[2:].split() for line in lines if line.startswith("+ ")]
    for words in commands:
        if "rlhfkit" not in words:
            continue
        stage = words[words.index("rlhfkit") + 1]
        if stage == "ppo" and "--lora" in words:  # ppo refuses --lora with a separate critic
            assert _flag(words, "--critic", "shared") == "shared", " ".join(words)
        if stage in ("train-rm", "ppo"):
            assert words[:2] == ["accelerate", "launch"], " ".join(words)
            if launcher != "ddp":  # a flag the sharded configs refuse
                assert _flag(words, "--critic", "shared") == "shared", " ".join(words)
            assert int(_flag(words, "--batch-size", "16")) >= 8, " ".join(words)
            if stage == "ppo":
                assert int(_flag(words, "--mini-batch-size", "8")) % 8 == 0, " ".join(words)
    if any("ppo" in w for w in commands):
        assert any(line.startswith("# SFT policy:") or line.startswith("# policy:") for line in lines), name


@pytest.mark.parametrize("launch", ["", "accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 8 -m"])
def test_no_lora_ppo_stage_asks_for_a_separate_critic(tmp_path, launch):
    """secrets_rm.sh's preset (TRAIN_MODE=lora) asked ppo for --lora with --critic separate, which ppo
    refuses: the paper-scale run would have stopped at its first PPO stage, after its ten reward models.
    Found by running the recipe at SCALE=tiny (tests/test_paper_recipes.py)."""
    for name in [n for n in PAPER_RECIPES if n != "demo.sh"]:
        for env in ({}, {"SIZE": "7b"} if name == "pm_rlhf.sh" else {}):
            for line in _launched_plan(name, tmp_path, launch, **env):
                words = line[2:].split()
                if line.startswith("+ ") and "ppo" in words and "--lora" in words:
                    assert _flag(words, "--critic", "shared") == "shared", line


def test_recipes_keep_checkpoints_under_every_launcher(tmp_path):
    """Checkpoints hold whole tensors under every engine now (issue 33): no LAUNCH turns them off."""
    for launch in ("", *(LAUNCHERS[k] for k in sorted(LAUNCHERS) if k != "zero3")):
        lines = _launched_plan("secrets_rm.sh", tmp_path, launch)
        steps = [int(_flag(line.split(), "--save-steps")) for line in lines if "--save-steps" in line and "train-rm" in line]
        assert steps and all(s > 0 for s in steps)


def test_sft_from_makes_the_policy_ppo_starts_from(tmp_path):
    lines = _launched_plan("pm_rlhf.sh", tmp_path, LAUNCHERS["ddp"], SFT_FROM="facebook/opt-1.3b")
    commands = [line[2:].split() for line in lines if line.startswith("+ ")]
    sft = [w for w in commands if w[:2] == ["trl", "sft"]]
    assert len(sft) == 1 and _flag(sft[0], "--model_name_or_path") == "facebook/opt-1.3b"
    made = _flag(sft[0], "--output_dir")
    assert all(_flag(w, "--policy") == made for w in commands if "ppo" in w and "rlhfkit" in w)


def test_secrets_recipe_hands_metarm_flags_it_accepts(tmp_path):
    """MetaRM takes one batch per step: the flags secrets_rm.sh passes to metarm_rounds.sh must not
    carry --grad-accum (train-rm --meta-data refuses it), nor a --steps that overrides PPO_STEPS."""
    lines = _launched_plan("secrets_rm.sh", tmp_path, LAUNCHERS["ddp"])
    metarm = next(line for line in lines if "metarm_rounds.sh" in line)
    rm_flags = metarm.split("RM_FLAGS=", 1)[1].split(" PPO_FLAGS=")[0]
    ppo_flags = metarm.split("PPO_FLAGS=", 1)[1].split(" PPO_STEPS=")[0]
    assert "--grad-accum" not in rm_flags and "--steps" not in ppo_flags.split()
