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
