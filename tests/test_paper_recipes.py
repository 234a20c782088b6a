"""The paper recipes run for real at SCALE=tiny (issue 34): every stage, on tiny offline models and a few
records of ../shared/data, ending with the paper's table in summary.json; the tiny plan is the full plan
with other values; a recipe stopped in a middle stage finishes when run again, without redoing the
stages that had finished.

`make test` runs the plan tests and the stop-and-resume run; the nine whole runs (marker `recipe_run`,
about 12 minutes on 2 cores) run in `make test-recipes`, which CI runs after `make test`.

The runs check plumbing, not the papers' findings: tiny random models on 64 pairs say nothing about
them (the summary says so). What they catch is a stage that no longer runs, a file one stage hands
the next under another name, a flag a stage no longer takes, and a report that cannot read its run.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SHARED_DATA = ROOT.parent / "shared" / "data"
PAPERS = {"reward_collapse.sh": "reward-collapse", "uncertainty_rlhf.sh": "uncertainty", "pm_rlhf.sh": "pm-rlhf",
          "secrets_rm.sh": "secrets-rm", "metarm_rounds.sh": "metarm"}
# a recipe's tiny run takes 1-7 minutes on 2 busy cores; the guard is far above that
GUARD = 2400

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the tiny scale reads ../shared/data beside the checkout")


def _env(**extra):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    env.pop("RECIPE_RERUN", None)
    return {**env, **extra}


def plan(name, tmp_path, **env):
    p = subprocess.run(["bash", str(RECIPES / name)], env=_env(**{"DRY_RUN": "1", "OUT": str(tmp_path / "out"), **env}),
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line[2:] for line in p.stderr.splitlines() if line.startswith("+ ")]


def outputs(lines):
    """Every file or directory the plan's stages write: --out values and `> FILE` redirections."""
    found = []
    for line in lines:
        words = line.split()
        found += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]
        if " > " in line:
            found.append(line.rsplit(" > ", 1)[1].strip())
        found += [w.split("=", 1)[1] for w in words if w.startswith("OUT=")]  # a nested recipe's directory
    return found


def template(line):
    """A plan line with its values blanked: the command, its flags, and nothing the switch sets."""
    words = line.split()
    head = [w for w in words[:3] if not w.startswith(("-", "/", "hf:")) and "=" not in w]
    flags = [w for w in words if w.startswith("--")]
    flags = [f for k, f in enumerate(flags) if k == 0 or f != flags[k - 1]]  # --members per member: a count
    return " ".join(head + flags)


# ---------------------------------------------------------------- the plans: tiny is full with other values

@pytest.mark.parametrize("name", sorted(PAPERS))
def test_the_tiny_plan_is_the_full_plan_with_other_values(tmp_path, name):
    """SCALE=tiny keeps every stage, its order, its flags and the files stages hand on; only values
    (models, data, counts) change, and a loop may run fewer times."""
    # secrets_rm.sh's JUDGE holds the judge's flags (GPT-4 through the API, or the tiny scale's own
    # ensemble as a pairwise judge): the one value that is flags; both are compared under one JUDGE
    same = {"JUDGE": "--judge-model J"} if name == "secrets_rm.sh" else {}
    full, tiny = plan(name, tmp_path, **same), plan(name, tmp_path, SCALE="tiny", **same)
    assert full != tiny  # the switch changes something
    full_t, tiny_t = [template(line) for line in full], [template(line) for line in tiny]
    assert set(full_t) == set(tiny_t), set(full_t) ^ set(tiny_t)
    first = lambda ts: list(dict.fromkeys(ts))  # noqa: E731 - each template at its first appearance
    assert first(full_t) == first(tiny_t)
    # the tiny run's files are among the full run's: the same names, fewer of them
    assert set(outputs(tiny)) <= set(outputs(full)), set(outputs(tiny)) - set(outputs(full))
    # the report stage closes both
    assert full[-1].startswith(f"rlhfkit report {PAPERS[name]} ") and tiny[-1].startswith(f"rlhfkit report {PAPERS[name]} ")
    assert "--scale full" in full[-1] and "--scale tiny" in tiny[-1]


def test_the_judge_is_gpt4_at_full_scale_and_the_recipes_own_ensemble_at_tiny(tmp_path):
    judge = [line for line in plan("secrets_rm.sh", tmp_path) if line.startswith("rlhfkit judge")]
    tiny = [line for line in plan("secrets_rm.sh", tmp_path, SCALE="tiny") if line.startswith("rlhfkit judge")]
    assert len(judge) == len(tiny) == 6
    assert all("--judge-model gpt-4 " in line for line in judge)
    assert all(f"--reward {tmp_path}/out/ensemble --pairwise " in line for line in tiny)


def test_the_plan_diff_catches_a_stage_only_one_scale_runs(tmp_path):
    """The template comparison above would fail on a recipe whose tiny plan drops a stage or a flag."""
    full = plan("reward_collapse.sh", tmp_path)
    assert set(template(line) for line in full) != set(template(line) for line in full[:-1])
    dropped = [line.replace(" --warmup-ratio 0.1", "") for line in full]
    assert set(template(line) for line in full) != set(template(line) for line in dropped)


def test_an_unknown_scale_is_refused_before_any_stage(tmp_path):
    p = subprocess.run(["bash", str(RECIPES / "pm_rlhf.sh")], env=_env(SCALE="small", OUT=str(tmp_path / "out")),
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "SCALE must be full or tiny" in p.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the tiny runs

LAUNCHES = {
    # two processes through torchrun (DDP on gloo); the port is the run's own, so no other launch collides
    "torchrun": "torchrun --nproc_per_node 2 --master-port {port} -m",
    # FSDP2 on two CPU processes through the tests' shim (accelerate turns FSDP off without a GPU)
    "fsdp": f"accelerate launch --config_file {RECIPES}/accelerate/fsdp.yaml --num_processes 2 --main_process_port {{port}} "
            f"{ROOT}/tests/sharded_cpu.py",
}


def _job(name, launch=None, port=0):
    extra = {"SCALE": "tiny"}
    if launch:
        extra["LAUNCH"] = LAUNCHES[launch].format(port=port)
    return RECIPES / name, _env(**extra), GUARD


# Every paper recipe with no LAUNCH, and the set under a two-process LAUNCH (metarm_rounds.sh runs
# inside secrets_rm.sh under it; pm_rlhf.sh under FSDP2): the background lanes (conftest.py) take them
# in this order, the longest first. `make test-recipes` runs them (CI too, after `make test`).
RECIPE_JOBS = {} if not SHARED_DATA.is_dir() else {
    "launch-secrets_rm": _job("secrets_rm.sh", "torchrun", 29734),
    "plain-secrets_rm": _job("secrets_rm.sh"),
    "launch-uncertainty_rlhf": _job("uncertainty_rlhf.sh", "torchrun", 29732),
    "plain-uncertainty_rlhf": _job("uncertainty_rlhf.sh"),
    "launch-reward_collapse": _job("reward_collapse.sh", "torchrun", 29731),
    "plain-reward_collapse": _job("reward_collapse.sh"),
    "launch-pm_rlhf": _job("pm_rlhf.sh", "fsdp", 29733),
    "plain-pm_rlhf": _job("pm_rlhf.sh"),
    "plain-metarm_rounds": _job("metarm_rounds.sh"),
}


def finished_run(lanes, key):
    proc, out, seconds = lanes.wait(key, GUARD * len(RECIPE_JOBS))
    assert proc is not None, f"{key}: stopped after {seconds:.0f} s (guard {GUARD} s)"
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, out


def check_run(name, out, tmp_path, **env):
    """Every stage's output exists and summary.json holds the paper's quantities as numbers."""
    missing = [f for f in outputs(plan(name, tmp_path, SCALE="tiny", OUT=str(out), **env)) if not Path(f).exists()]
    assert not missing, missing
    summary = json.loads((out / "summary.json").read_text())
    assert summary["paper"] == PAPERS[name] and summary["scale"] == "tiny"
    assert summary["rows"], summary
    for row in summary["rows"]:
        assert isinstance(row["run"], float) and row["run"] == row["run"], row  # a number, not null or NaN
        assert row["paper"], row
    return summary


def values_of(summary, prefix):
    return [r["run"] for r in summary["rows"] if r["quantity"].startswith(prefix)]


def check_paper(name, out, summary):
    """What each paper's table must hold, read back from the run's own files."""
    if name == "secrets_rm.sh":
        strength = [json.loads(line)["strength_mean"] for line in (out / "strength.jsonl").read_text().splitlines()]
        assert summary["values"]["share_strength_mean_below_0"] == pytest.approx(
            sum(m < 0 for m in strength) / len(strength))
        assert set(summary["values"]["accuracy"]) == {"raw", "flip", "margin", "flip-margin", "soft-margin", "simcse", "swav"}
        assert len(values_of(summary, "win rate vs raw")) == 6
        assert len(values_of(summary, "MetaRM accuracy after round")) == 2
        metarm = json.loads((out / "metarm" / "summary.json").read_text())
        assert metarm["paper"] == "metarm" and len(metarm["rows"]) == 2
    if name == "metarm_rounds.sh":
        assert len(values_of(summary, "accuracy after round")) == 2
        assert all(len(r["responses"]) == 4 for r in map(json.loads, (out / "meta-1.jsonl").read_text().splitlines()))
    if name == "uncertainty_rlhf.sh":
        judged = [json.loads(line) for line in (out / "judged.jsonl").read_text().splitlines()]
        policy = [r["reward"] for r in judged if Path(r["source"]).name == "gens-vanilla-h1-r1.jsonl"]
        assert summary["values"]["vanilla"]["policies"] == 2 and summary["values"]["varaware"]["policies"] == 2
        assert summary["values"]["vanilla"]["policy_rewards"][1] == pytest.approx(sum(policy) / len(policy))
    if name == "pm_rlhf.sh":
        pm = json.loads((out / "pm-cpm-b1-a0.3.json").read_text())["mean"]
        assert values_of(summary, "PM divergence, cPM-RLHF") == [pytest.approx(pm)]
    if name == "reward_collapse.sh":
        assert len(values_of(summary, "W1(open, closed)")) == 5


def lane_params(prefix, names):
    return [pytest.param(n, marks=pytest.mark.recipe_run(f"{prefix}-{Path(n).stem}")) for n in names]


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("name", lane_params("plain", sorted(PAPERS)))
def test_paper_recipe_runs_at_tiny_scale(tmp_path, name, recipe_lanes):
    proc, out = finished_run(recipe_lanes, f"plain-{Path(name).stem}")
    check_paper(name, out, check_run(name, out, tmp_path))


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("name", lane_params("launch", ["reward_collapse.sh", "uncertainty_rlhf.sh", "pm_rlhf.sh",
                                                       "secrets_rm.sh"]))
def test_paper_recipe_runs_under_a_two_process_launch(tmp_path, name, recipe_lanes):
    key = f"launch-{Path(name).stem}"
    proc, out = finished_run(recipe_lanes, key)
    launch = RECIPE_JOBS[key][1]["LAUNCH"]
    summary = check_run(name, out, tmp_path, LAUNCH=launch)
    check_paper(name, out, summary)
    # every training stage ran on two processes, under the engine LAUNCH names
    trained = [json.loads((d / "rlhfkit.json").read_text()) for d in out.rglob("*") if (d / "rlhfkit.json").is_file()
               and json.loads((d / "rlhfkit.json").read_text()).get("type") in ("reward-model", "policy")]
    assert trained
    assert {m["world_size"] for m in trained} == {2}
    engines = {m.get("engine") for m in trained}
    assert engines == ({"FSDP2"} if "fsdp" in launch else {"MULTI_CPU"}), engines


# ---------------------------------------------------------------- resuming

def stamps(out):
    d = out / ".stages"
    return [p for p in d.iterdir() if not p.name.endswith(".started")] if d.is_dir() else []


@needs_data
@pytest.mark.slow
def test_a_recipe_stopped_in_a_middle_stage_finishes_without_redoing_finished_stages(tmp_path):
    """Kill reward_collapse.sh while its third reward model trains (after seven stages finished); run it
    again with the same OUT: the finished stages' outputs keep their modification times, the
    interrupted stage resumes from its checkpoint, and the run ends with its table."""
    out = tmp_path / "run"
    env = _env(SCALE="tiny", OUT=str(out), STEPS="16")  # 16 steps, a checkpoint every 2: time to stop it mid-way
    proc = subprocess.Popen(["bash", str(RECIPES / "reward_collapse.sh")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + GUARD
    try:
        while not list((out / "rm-x_inv").glob("checkpoints/step-*/trainer_state.json")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(stamps(out)) == 7 and not (out / "summary.json").exists()
    assert not (out / "rm-x_inv" / "rlhfkit.json").exists()
    finished = [out / f for f in ("train.jsonl", "test.jsonl", "reward-dist-x.json", "reward-dist-log.json")]
    finished += [f for d in ("rm-x", "rm-log") for f in (out / d).rglob("*") if f.is_file()]
    before = {f: f.stat().st_mtime_ns for f in finished}
    time.sleep(0.05)
    p = subprocess.run(["bash", str(RECIPES / "reward_collapse.sh")], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=GUARD)
    assert p.returncode == 0, p.stderr[-4000:]
    assert {f: f.stat().st_mtime_ns for f in finished} == before
    lines = p.stderr.splitlines()
    skipped = [line for line in lines if line.endswith("# done in an earlier run: skipped")]
    assert len(skipped) == 7, p.stderr[-3000:]
    resumed = [line for line in lines if line.endswith("# stopped in an earlier run: resumed")]
    assert len(resumed) == 1 and "--utility x_inv" in resumed[0], p.stderr[-3000:]
    assert "--resume" in resumed[0].split("#")[0].split() and "train-rm: resumed at step" in p.stderr
    check_run("reward_collapse.sh", out, tmp_path, STEPS="16")
    # a third run with nothing left to do runs nothing
    again = subprocess.run(["bash", str(RECIPES / "reward_collapse.sh")], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=GUARD)
    assert again.returncode == 0
    plan_lines = [line for line in again.stderr.splitlines() if line.startswith("+ ")]
    assert len(plan_lines) == 14 and all(line.endswith("skipped") for line in plan_lines), again.stderr[-2000:]
