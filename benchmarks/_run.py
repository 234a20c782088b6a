"""Helpers for the reproduction scripts: run an rlhfkit stage and read what it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def rlhfkit(*args) -> tuple[str, dict]:
    """Run `python -m rlhfkit ARGS`; return stdout and the JSON summary on stderr's last line (if any)."""
    p = subprocess.run([sys.executable, "-m", "rlhfkit", *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"rlhfkit {args[0]} failed with status {p.returncode}")
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    return p.stdout, (json.loads(last) if last.startswith("{") else {})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows) -> None:
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def bootstrap_interval(statistic, n_runs: int, n_prompts: int, draws: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `statistic(runs, prompts)` (two index lists) when both the runs (seeds,
    heads) and the held-out prompts are resampled with replacement: the spread a rerun with other
    seeds and other prompts of the same kind would show."""
    import random

    rng = random.Random(seed)
    values = sorted(statistic([rng.randrange(n_runs) for _ in range(n_runs)],
                              [rng.randrange(n_prompts) for _ in range(n_prompts)]) for _ in range(draws))
    lo = values[int((1 - level) / 2 * draws)]
    hi = values[min(draws - 1, int((1 + level) / 2 * draws))]
    return lo, hi


def ppo_until(out: Path, step: int, args: list) -> None:
    """Bring the PPO run in `out` to `step` steps: a new run, or the last checkpoint continued."""
    resume = ["--resume"] if (out / "checkpoints").is_dir() else []
    rlhfkit("ppo", *args, "--steps", step, "--save-steps", step, *resume, "--out", out)


def drop_old_checkpoints(out: Path) -> None:
    """Keep only the newest checkpoint of a run (a 135M policy's is ~1.6 GB with its optimizer)."""
    import shutil

    found = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-1]:
        shutil.rmtree(old)


def save_json(path: Path, obj) -> None:
    """Write JSON through a temporary file, so an interrupted script never leaves half a result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def plot_runs(axes, runs: dict, colours: dict, eval_value, reference_value: float) -> None:
    """Draw each run's training reward and KL against step on axes[0] and axes[1], and its held-out
    metric (`eval_value(evaluation)`, step 0 = the reference) on axes[2]; `runs` maps an arm's label
    to its runs (the first run of an arm carries the legend label)."""
    for arm, arm_runs in runs.items():
        for i, run in enumerate(arm_runs):
            log, label = run.get("log", []), arm if i == 0 else None
            steps = [e["step"] for e in log]
            axes[0].plot(steps, [e["reward_mean"] for e in log], color=colours[arm], alpha=0.6, label=label)
            axes[1].plot(steps, [e["kl"] for e in log], color=colours[arm], alpha=0.6, label=label)
            evals = sorted(run.get("evals", {}), key=int)
            axes[2].plot([0] + [int(k) for k in evals], [reference_value] + [eval_value(run["evals"][k]) for k in evals],
                         "o-", color=colours[arm], alpha=0.6, label=label)
    for ax in axes:
        ax.grid(alpha=0.3)


def last_common_eval(runs: list[dict]) -> str | None:
    """The last evaluation step (a key of each run's `evals`) that every run of an arm has reached."""
    common = set.intersection(*(set(r.get("evals", {})) for r in runs)) if runs else set()
    return max(common, key=int) if common else None


def train_and_evaluate(run: dict, run_dir: Path, steps: int, every: int, ppo_args: list, evaluate, save) -> None:
    """Bring one PPO run to `steps` in segments of `every` steps; after each segment store
    `evaluate(run_dir)` under run["evals"][step] with the training log, and `save()`. Segments the
    run already holds are skipped, so an interrupted script picks up where it stopped."""
    import statistics
    import time

    for step in range(every, steps + 1, every):
        if str(step) in run["evals"]:
            continue
        t0 = time.perf_counter()
        ppo_until(run_dir, step, ppo_args)
        drop_old_checkpoints(run_dir)
        run["seconds"] = run.get("seconds", 0.0) + time.perf_counter() - t0
        run["evals"][str(step)] = evaluate(run_dir)
        run["log"] = [{k: e[k] for k in ("step", "reward_mean", "kl", "entropy", "response_length")}
                      for e in read_jsonl(run_dir / "log.jsonl")]
        run.pop("final", None)
        save()
        values = next(iter(run["evals"][str(step)].values()))
        print(f"{run_dir.name} step {step}: held-out metric {statistics.fmean(values):.3f}", flush=True)
