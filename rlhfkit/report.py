"""The last stage of every paper recipe: the run's own metric files read back into the paper's
headline quantities, each beside the number the paper reports (../shared/METHODS.md) and whether
this run points the same way.

Nothing is measured here: `metrics`, `judge` and `strength` wrote every number; a report only
gathers them (means and variances across policies are the one arithmetic it adds). A file a stage
should have written and did not is an error naming it, so a report never fills a row with a null.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Callable

from .io import InputError

SECRETS_VARIANTS = ("raw", "flip", "margin", "flip-margin", "soft-margin", "simcse", "swav")


def read_json(path: Path) -> dict:
    """One metrics file (`rlhfkit metrics ... > FILE`): its last JSON line."""
    if not path.is_file():
        raise InputError(str(path), None, "missing: the recipe stage that writes it has not finished")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InputError(str(path), None, "empty: the recipe stage that writes it has not finished")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise InputError(str(path), len(lines), f"not JSON: {e}") from None


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(str(path), None, "missing: the recipe stage that writes it has not finished")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def numbered(run: Path, pattern: str) -> list[tuple[tuple[int, ...], Path]]:
    """Files matching ``pattern`` (a regex with integer groups), sorted by those integers."""
    found = []
    for p in run.iterdir() if run.is_dir() else []:
        m = re.fullmatch(pattern, p.name)
        if m:
            found.append((tuple(int(g) for g in m.groups()), p))
    return sorted(found)


def row(quantity: str, value: float | str, paper: str, agrees: bool | None = None) -> dict:
    return {"quantity": quantity, "run": value, "paper": paper, "same_direction": agrees}


def variance(values: list[float]) -> float:
    """Sample variance across policies (0 for a single policy: no spread to see)."""
    return statistics.variance(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------- one function per paper

def secrets_rm(run: Path) -> tuple[dict, list[dict]]:
    """Secrets of RLHF II: share of pairs with strength mean < 0; accuracy per training-data variant;
    win rate of each variant's policy against the raw-data policy; MetaRM's accuracy per round."""
    means = [r["strength_mean"] for r in read_jsonl(run / "strength.jsonl")]
    negative = sum(m < 0 for m in means) / len(means)
    accuracy = {v: read_json(run / f"accuracy-{v}.json")["overall"] for v in SECRETS_VARIANTS}
    winrate = {}
    for v in SECRETS_VARIANTS[1:]:
        w = read_json(run / f"winrate-{v}.json")
        winrate[v] = {"win_rate": w["win_rate"], "ci95": w["ci95"], "n": w["n"]}
    metarm_values, metarm_rows = metarm(run / "metarm")
    values = {"pairs": len(means), "share_strength_mean_below_0": negative, "accuracy": accuracy,
              "winrate_vs_raw": winrate, "metarm": metarm_values}
    rows = [row("pairs with strength mean < 0", negative, "~25% of HH-RLHF train pairs")]
    rows += [row(f"reward-model accuracy, {v} data", a,
                 "(raw: the baseline)" if v == "raw" else "at or above raw (no number in METHODS.md)",
                 None if v == "raw" else a >= accuracy["raw"]) for v, a in accuracy.items()]
    rows += [row(f"win rate vs raw, {v} policy", w["win_rate"], "> 0.5 (GPT-4 judge; no number in METHODS.md)",
                 w["win_rate"] > 0.5) for v, w in winrate.items()]
    rows += [dict(r, quantity="MetaRM " + r["quantity"]) for r in metarm_rows]
    return values, rows


def metarm(run: Path) -> tuple[dict, list[dict]]:
    """MetaRM rounds: the reward model's accuracy after each round (round 0: before MetaRM)."""
    found = numbered(run, r"accuracy-rm-(\d+)\.json")
    if not found:
        raise InputError(str(run / "accuracy-rm-0.json"), None, "missing: the recipe stage that writes it has not finished")
    accuracy = {k[0]: read_json(p)["overall"] for k, p in found}
    first = accuracy[min(accuracy)]
    rows = [row(f"accuracy after round {k}", a, "—" if k == 0 else "at or above round 0 (no number in METHODS.md)",
                None if k == 0 else a >= first) for k, a in accuracy.items()]
    return {"accuracy_by_round": accuracy}, rows


def uncertainty(run: Path) -> tuple[dict, list[dict]]:
    """Uncertainty-aware RLHF: per method, the judge's mean reward over its policies, the variance of the
    policies' mean rewards across policies (the paper's quantity), and the mean KL to the reference."""
    judged = read_jsonl(run / "judged.jsonl")
    by_file: dict[str, list[float]] = {}
    for r in judged:
        by_file.setdefault(Path(r["source"]).name, []).append(r["reward"])
    if "gens-reference.jsonl" not in by_file:
        raise InputError(str(run / "judged.jsonl"), None, "no judged generations of the reference (gens-reference.jsonl)")
    reference = statistics.fmean(by_file["gens-reference.jsonl"])
    methods: dict[str, dict] = {}
    for method in ("vanilla", "varaware"):
        policies = numbered(run, rf"gens-{method}-h(\d+)-r(\d+)\.jsonl")
        if not policies:
            raise InputError(str(run), None, f"no gens-{method}-h*-r*.jsonl: the recipe's policies have not finished")
        rewards, kls = [], []
        for (head, r), path in policies:
            if path.name not in by_file:
                raise InputError(str(run / "judged.jsonl"), None, f"{path.name} was not judged")
            rewards.append(statistics.fmean(by_file[path.name]))
            kls.append(read_json(run / f"generation-{method}-h{head}-r{r}.json")["kl"])
        methods[method] = {"policies": len(rewards), "reward_mean": statistics.fmean(rewards),
                           "reward_variance": variance(rewards), "kl_mean": statistics.fmean(kls),
                           "policy_rewards": rewards, "policy_kls": kls}
    v, u = methods["vanilla"], methods["varaware"]
    rows = [
        row("judged reward, reference", reference, "0.19"),
        row("judged reward mean, vanilla KL", v["reward_mean"], "0.34"),
        row("judged reward mean, variance-aware", u["reward_mean"], "0.22", u["reward_mean"] < v["reward_mean"]),
        row("variance across policies, vanilla KL", v["reward_variance"], "0.06"),
        row("variance across policies, variance-aware", u["reward_variance"], "0.012",
            u["reward_variance"] < v["reward_variance"]),
        row("KL to the reference, vanilla", v["kl_mean"], "1.2-1.4 (beta tuned to match)"),
        row("KL to the reference, variance-aware", u["kl_mean"], "1.2-1.4 (beta tuned to match)"),
    ]
    return {"reference_reward": reference, **methods}, rows


def pm_rlhf(run: Path) -> tuple[dict, list[dict]]:
    """PM RLHF: mean PM divergence and KL of every run; per beta, KL-RLHF against the mean over cPM's alphas."""
    runs = {}
    for p in sorted(run.glob("pm-*.json")):
        name = p.name[3:-5]
        pm = read_json(p)
        runs[name] = {"beta": pm["beta"], "pm_divergence": pm["mean"],
                      "kl": read_json(run / f"generation-{name}.json")["kl"]}
    if not any(n.startswith("kl-") for n in runs) or not any(n.startswith("cpm-") for n in runs):
        raise InputError(str(run), None, "needs pm-kl-*.json and pm-cpm-*.json: the recipe's metrics stages have not finished")
    rows, by_beta = [], {}
    for beta in sorted({v["beta"] for v in runs.values()}):
        kl_runs = [v for n, v in runs.items() if n.startswith("kl-") and v["beta"] == beta]
        cpm_runs = [v for n, v in runs.items() if n.startswith("cpm-") and v["beta"] == beta]
        if not kl_runs or not cpm_runs:
            continue
        kl_pm = statistics.fmean(v["pm_divergence"] for v in kl_runs)
        cpm_pm = statistics.fmean(v["pm_divergence"] for v in cpm_runs)
        by_beta[beta] = {"kl_rlhf": kl_pm, "cpm_rlhf": cpm_pm}
        rows.append(row(f"PM divergence, KL-RLHF, beta {beta:g}", kl_pm, "1.16 (OPT-1.3B), 2.23 (Llama-2-7B)"))
        rows.append(row(f"PM divergence, cPM-RLHF (mean over alpha), beta {beta:g}", cpm_pm,
                        "0.68 (OPT-1.3B), 1.57 (Llama-2-7B)", cpm_pm < kl_pm))
    rows += [row(f"KL to the reference, {n}", v["kl"], "—") for n, v in sorted(runs.items())]
    return {"runs": runs, "by_beta": by_beta}, rows


def reward_collapse(run: Path) -> tuple[dict, list[dict]]:
    """Reward Collapse: per utility, the distance between the reward distributions of open- and
    closed-ended prompts; prompt-agnostic utilities collapse them, the prompt-aware one keeps them apart."""
    found = {p.name[len("reward-dist-"):-5]: read_json(p) for p in sorted(run.glob("reward-dist-*.json"))}
    if "adaptive" not in found or len(found) < 2:
        raise InputError(str(run / "reward-dist-adaptive.json"), None,
                         "missing (with at least one prompt-agnostic utility): the metrics stages have not finished")
    values = {}
    for utility, d in found.items():
        if "distance" not in d:
            raise InputError(str(run / f"reward-dist-{utility}.json"), None,
                             "no distance: the test rankings hold only one of open- and closed-ended prompts")
        values[utility] = {"wasserstein": d["distance"]["wasserstein"], "ks": d["distance"]["ks"],
                           "group_means": {g: v["mean"] for g, v in d["groups"].items()}}
    agnostic = max(v["wasserstein"] for u, v in values.items() if u != "adaptive")
    rows = [row(f"W1(open, closed), {u}", v["wasserstein"],
                "larger than every prompt-agnostic utility's" if u == "adaptive" else "near 0: one shape for every prompt",
                v["wasserstein"] > agnostic if u == "adaptive" else None) for u, v in values.items()]
    return values, rows


PAPERS: dict[str, tuple[str, Callable[[Path], tuple[dict, list[dict]]]]] = {
    "secrets-rm": ("Secrets of RLHF II: reward modeling (Wang et al., 2024)", secrets_rm),
    "metarm": ("MetaRM rounds (Secrets of RLHF II, section 3.2)", metarm),
    "uncertainty": ("Uncertainty-aware RLHF (Banerjee & Gopalan, 2024)", uncertainty),
    "pm-rlhf": ("Preference matching RLHF (Xiao et al., 2024)", pm_rlhf),
    "reward-collapse": ("Reward Collapse (Song et al., 2023)", reward_collapse),
}


def summarise(paper: str, run: Path, scale: str) -> dict:
    title, read = PAPERS[paper]
    values, rows = read(run)
    checked = [r["same_direction"] for r in rows if r["same_direction"] is not None]
    return {"paper": paper, "title": title, "run": str(run), "scale": scale, "rows": rows, "values": values,
            "same_direction": f"{sum(checked)} of {len(checked)}",
            "note": ("tiny scale: random tiny models on a few records; these numbers check the pipeline, they are "
                     "not evidence about the paper") if scale == "tiny" else
                    "paper numbers: ../shared/METHODS.md (the paper's models and data; compare directions at other scales)"}
