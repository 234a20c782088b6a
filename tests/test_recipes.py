"""Recipes: every script parses, prints its plan under DRY_RUN=1, and the CPU smoke recipe runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PAPER_RECIPES = ["reward_collapse.sh", "uncertainty_rlhf.sh", "pm_rlhf.sh", "secrets_rm.sh", "metarm_rounds.sh",
                 "cpu_smoke.sh", "demo.sh"]


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


def test_cpu_smoke_recipe_runs_every_stage(tmp_path):
    out = tmp_path / "smoke"
    p = subprocess.run(["bash", str(RECIPES / "cpu_smoke.sh")], env=_env(OUT=str(out)), capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    for f in ["scored.jsonl", "strength.jsonl", "clean.jsonl", "llm-judged.jsonl", "rm-judged.jsonl", "reward-dist.png"]:
        assert (out / f).exists(), f
    for d in ["rm", "rm-rank", "rm-swav", "ensemble", "ppo-kl", "ppo-varkl", "ppo-cpm"]:
        assert (out / d / "rlhfkit.json").exists(), d


def _plan(name, tmp_path):
    p = subprocess.run(["bash", str(RECIPES / name)], env=_env(DRY_RUN="1", OUT=str(tmp_path / "out")),
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line[2:].split() for line in p.stderr.splitlines() if line.startswith("+ ")]


def _flag(words, name, default=None):
    return words[words.index(name) + 1] if name in words else default


def test_pm_recipe_aligns_to_the_distribution_its_divergence_measures(tmp_path):
    """METHODS.md: rewards are used as r/beta against a unit KL (PM RLHF eq. 2.3 rewritten), so the KL
    arm's optimum is pi_ref * exp(r/beta) and PM divergence compares with softmax(r/beta): the effective
    temperature beta_flag / reward_scale of every PPO run must equal the beta its divergence uses."""
    plan = _plan("pm_rlhf.sh", tmp_path)
    ppo = [w for w in plan if w[:2] == ["rlhfkit", "ppo"]]
    pm = {Path(_flag(w, "--policy")).name: float(_flag(w, "--beta")) for w in plan if w[1:3] == ["metrics", "pm-divergence"]}
    assert len(ppo) == 12 and len(pm) == 12  # beta in {0.1, 0.5, 1} x (kl + alpha in {0.1, 0.3, 0.5})
    for w in ppo:
        name = Path(_flag(w, "--out")).name
        beta = float(_flag(w, "--beta", 0.1))
        scale = float(_flag(w, "--reward-scale", 1.0))
        assert abs(beta / scale - pm[name]) < 1e-9, (name, beta, scale, pm[name])
        clip = float(_flag(w, "--score-clip", 5.0))
        assert abs(clip / scale - 5.0) < 1e-9  # the usual +-5 clip on r, whatever the scale
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
