"""`rlhfkit metrics ...`: evaluation numbers, a table on stderr and JSON on stdout."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from .common import CHAT_TEMPLATE, DTYPE, FIELDS, SEED, err_console, handle_errors, positive, unit_left_open

metrics_app = typer.Typer(help="PM divergence, generation statistics, RM accuracy, reward distributions, win rates.",
                          no_args_is_help=True, rich_markup_mode=None)


def field_map(spec):
    from ..io import field_map as make

    return make(spec)


def _emit(result: dict, title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_edge=False, show_header=False)
    for k, v in rows:
        table.add_row(k, v)
    err_console.print(table)
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


@metrics_app.command("pm-divergence", short_help="KL(p_llm || p_reward) per prompt (PM RLHF 6.1).")
@handle_errors
def pm_divergence_cmd(
    policy: str = typer.Option(..., "--policy", metavar="MODEL", help="Policy: alias, directory or hub id."),
    reward: str = typer.Option(..., "--reward", metavar="DIR|FN", help="Reward-model/ensemble dir or module:function."),
    prompts: str = typer.Option(..., "--prompts", metavar="FILE", help="Records with a prompt, or plain text lines."),
    beta: float = typer.Option(1.0, "--beta", callback=positive, metavar="X", help="p_reward = softmax(r / beta)."),
    samples: int = typer.Option(2, "--samples", min=1, metavar="N", help="Responses per prompt (the paper: 2)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, metavar="N", help="Longest response, in tokens."),
    temperature: float = typer.Option(1.0, "--temperature", callback=positive, metavar="X", help="Sampling temperature only: log-probs, KL, entropy and perplexity are the policy's own (temperature 1)."),
    top_p: float = typer.Option(1.0, "--top-p", callback=unit_left_open, metavar="X", help="Nucleus sampling: keep the smallest set of tokens with this total probability (1 = off)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, metavar="N", help="Texts (or prompts) per forward pass; memory grows with it."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="PNG", help="PNG: histogram and CDF of the per-prompt values."),
    chat_template: Optional[bool] = CHAT_TEMPLATE,
    dtype: str = DTYPE,
    seed: int = SEED,
    fields: Optional[str] = FIELDS,
) -> None:
    """Preference-matching divergence KL(p_llm || p_reward) per prompt (PM RLHF 6.1)."""
    import torch

    from ..io import UsageError
    from ..metrics.core import pm_divergence
    from ..metrics.sampling import sample_with_logprobs
    from ..models import resolve_dtype
    from ..ppo.rewards import load_reward
    from ..progress import task_progress
    from ..prompts import read_prompts

    from ..io import check_file_output

    if samples < 2:
        raise UsageError("--samples must be at least 2")
    check_file_output(plot, "--plot")
    prompt_list = read_prompts(prompts, field_map(fields))
    reward_fn = load_reward(reward, dtype=resolve_dtype(dtype))
    with task_progress("pm-divergence", len(prompt_list) * samples) as advance:
        drawn = sample_with_logprobs(policy, prompt_list, samples, None, batch_size, max_new_tokens, temperature, top_p,
                                     seed, progress=advance, chat_template=chat_template, dtype=dtype)
    scores, _ = reward_fn([d["prompt"] for d in drawn], [d["response"] for d in drawn])
    logp = torch.tensor([d["logp"] for d in drawn]).view(-1, samples)
    values = pm_divergence(logp, scores.view(-1, samples), beta)
    v = values.tolist()
    q = torch.quantile(values, torch.tensor([0.5, 0.9], dtype=values.dtype)).tolist()
    result = {"metric": "pm-divergence", "policy": policy, "reward": reward, "beta": beta, "prompts": len(v),
              "samples": samples, "mean": sum(v) / len(v), "median": q[0], "p90": q[1], "values": v}
    if plot:
        from ..plots import distribution_figure

        distribution_figure(plot, {policy: v}, "KL(p_llm || p_reward) per prompt (nats)",
                            f"PM divergence, {samples} samples per prompt, beta = {beta:g}")
    _emit(result, "PM divergence", [("prompts", str(len(v))), ("mean", f"{result['mean']:.4f}"),
                                     ("median", f"{q[0]:.4f}"), ("90th percentile", f"{q[1]:.4f}")])


@metrics_app.command("generation", short_help="Length, perplexity, entropy and KL of sampled responses.")
@handle_errors
def generation_cmd(
    policy: str = typer.Option(..., "--policy", metavar="MODEL", help="Policy: alias, directory or hub id."),
    ref: str = typer.Option(..., "--ref", metavar="MODEL", help="Reference policy for the KL."),
    prompts: str = typer.Option(..., "--prompts", metavar="FILE", help="Prompt records (or plain text lines, one prompt each)."),
    samples: int = typer.Option(1, "--samples", min=1, metavar="N", help="Responses per prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, metavar="N", help="Longest response, in tokens."),
    temperature: float = typer.Option(1.0, "--temperature", callback=positive, metavar="X", help="Sampling temperature only: log-probs, KL, entropy and perplexity are the policy's own (temperature 1)."),
    top_p: float = typer.Option(1.0, "--top-p", callback=unit_left_open, metavar="X", help="Nucleus sampling: keep the smallest set of tokens with this total probability (1 = off)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, metavar="N", help="Texts (or prompts) per forward pass; memory grows with it."),
    chat_template: Optional[bool] = CHAT_TEMPLATE,
    dtype: str = DTYPE,
    seed: int = SEED,
    fields: Optional[str] = FIELDS,
) -> None:
    """Length, perplexity, entropy E[-log pi(y|x)] and KL E[log pi - log pi_ref] of sampled responses."""
    from ..metrics.core import generation_stats
    from ..metrics.sampling import sample_with_logprobs
    from ..progress import task_progress
    from ..prompts import read_prompts

    prompt_list = read_prompts(prompts, field_map(fields))
    with task_progress("generation", len(prompt_list) * samples) as advance:
        drawn = sample_with_logprobs(policy, prompt_list, samples, ref, batch_size, max_new_tokens, temperature, top_p,
                                     seed, progress=advance, chat_template=chat_template, dtype=dtype)
    stats = generation_stats([d["logp"] for d in drawn], [d["ref_logp"] for d in drawn], [d["length"] for d in drawn])
    result = {"metric": "generation", "policy": policy, "ref": ref, **stats}
    _emit(result, "generation", [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in stats.items()])


@metrics_app.command("accuracy", short_help="Reward-model accuracy per subset and section (RewardBench style).")
@handle_errors
def accuracy_cmd(
    data: str = typer.Argument(..., metavar="FILE", help="Pair records (chosen is the better one)."),
    reward: str = typer.Option(..., "--reward", metavar="DIR|FN", help="Reward-model or ensemble directory, or module:function / file.py:function."),
    subset_field: str = typer.Option("subset", "--subset-field", metavar="FIELD", help="Field naming each record's subset."),
    section: Optional[List[str]] = typer.Option(None, "--section", metavar="NAME=SUBSETS", help="NAME=subset1,subset2 (repeat): example-weighted section scores."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="Texts (or prompts) per forward pass; memory grows with it."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, metavar="N", help="Tokens per text (default: what the reward model was trained with)."),
    dtype: str = DTYPE,
    fields: Optional[str] = FIELDS,
) -> None:
    """Strict reward-model accuracy (r_chosen > r_rejected), per subset and section (RewardBench style)."""
    from ..io import UsageError, read_records
    from ..metrics.core import accuracy_by_subset
    from ..progress import task_progress
    from ..cleaning.scoring import load_scorer
    from ..cleaning.strength import pair_margins

    sections = {}
    for spec in section or []:
        name, _, members = spec.partition("=")
        if not name or not members:
            raise UsageError(f"--section must be NAME=subset1,subset2, got {spec!r}")
        sections[name] = [m for m in members.split(",") if m]
    examples, _ = read_records(data, ("pair",), fields=field_map(fields))
    scorer = load_scorer(reward, max_length=max_length, dtype=dtype, one_at_a_time=True)
    with task_progress("accuracy", 2 * len(examples)) as advance:
        margins = pair_margins(scorer, examples, batch_size, advance).mean(dim=1)
    subsets = [str(e.raw.get(subset_field, "all")) for e in examples]
    try:
        result = accuracy_by_subset((margins > 0).tolist(), subsets, sections or None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    result = {"metric": "accuracy", "reward": reward, **result}
    rows = [("overall", f"{result['overall']:.4f} (n={result['n']})")]
    rows += [(f"subset {s}", f"{v['accuracy']:.4f} (n={v['n']})") for s, v in result["subsets"].items()]
    rows += [(f"section {s}", f"{v['accuracy']:.4f} (n={v['n']})") for s, v in result.get("sections", {}).items()]
    _emit(result, "reward-model accuracy", rows)


@metrics_app.command("reward-dist", short_help="Reward distributions by rank and prompt group (Reward Collapse).")
@handle_errors
def reward_dist_cmd(
    data: str = typer.Argument(..., metavar="FILE", help="Ranking records (responses best first, or with scores)."),
    reward: str = typer.Option(..., "--reward", metavar="DIR|FN", help="Reward-model or ensemble directory, or module:function / file.py:function."),
    group_field: str = typer.Option("open_ended", "--group-field", metavar="FIELD", help="Field splitting prompts into groups."),
    squash: str = typer.Option("sigmoid", "--squash", metavar="sigmoid|none", help="sigmoid (as the ranking loss reads rewards) or none."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="Texts (or prompts) per forward pass; memory grows with it."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, metavar="N", help="Tokens per text (default: what the reward model was trained with)."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="PNG", help="PNG: reward histograms and mean reward by rank per group."),
    dtype: str = DTYPE,
    fields: Optional[str] = FIELDS,
) -> None:
    """Reward distributions per prompt group (Reward Collapse): by rank, and the groups' distance."""
    import torch

    from ..io import UsageError, read_records
    from ..metrics.core import ks_statistic, mean_by_rank, wasserstein_1d
    from ..cleaning.scoring import load_scorer

    from ..io import check_file_output

    check_file_output(plot, "--plot")
    examples, _ = read_records(data, ("ranking",), fields=field_map(fields))
    scorer = load_scorer(reward, max_length=max_length, dtype=dtype, one_at_a_time=True)
    prompts = [e.prompt for e in examples for _ in e.responses]
    responses = [r for e in examples for r in e.responses]
    rewards = scorer.score(prompts, responses, batch_size).mean(dim=1)
    if squash == "sigmoid":
        rewards = torch.sigmoid(rewards)
    elif squash != "none":
        raise UsageError("--squash must be sigmoid or none")
    groups: dict[str, list[list[float]]] = {}
    pos = 0
    for e in examples:
        n = len(e.responses)
        groups.setdefault(str(e.raw.get(group_field)), []).append(rewards[pos : pos + n].tolist())
        pos += n
    result = {"metric": "reward-dist", "reward": reward, "group_field": group_field, "squash": squash, "groups": {}}
    for g, rows in groups.items():
        pooled = [x for r in rows for x in r]
        result["groups"][g] = {"prompts": len(rows), "mean_by_rank": mean_by_rank(rows),
                               "mean": sum(pooled) / len(pooled),
                               "std": float(torch.tensor(pooled).std()) if len(pooled) > 1 else 0.0}
    names = sorted(groups)
    if len(names) == 2:
        a = [x for r in groups[names[0]] for x in r]
        b = [x for r in groups[names[1]] for x in r]
        result["distance"] = {"groups": names, "wasserstein": wasserstein_1d(a, b), "ks": ks_statistic(a, b)}
    if plot:
        from ..plots import reward_dist_figure

        reward_dist_figure(plot, {g: [x for r in rows for x in r] for g, rows in groups.items()},
                           {g: v["mean_by_rank"] for g, v in result["groups"].items()}, f"{group_field}",
                           "reward, sigmoid-squashed (0-1)" if squash == "sigmoid" else "reward (model units)",
                           f"reward distribution by {group_field}")
    rows_out = [(f"{group_field}={g}", f"mean {v['mean']:.3f}, std {v['std']:.3f}, prompts {v['prompts']}")
                for g, v in result["groups"].items()]
    if "distance" in result:
        rows_out.append(("distance", f"W1 {result['distance']['wasserstein']:.4f}, KS {result['distance']['ks']:.4f}"))
    _emit(result, "reward distribution", rows_out)


@metrics_app.command("winrate", short_help="Win rate with a bootstrap 95% interval from judge verdicts.")
@handle_errors
def winrate_cmd(
    judgments: str = typer.Argument(..., metavar="FILE", help="Output of `rlhfkit judge` (records with verdict A, B or tie)."),
    player: str = typer.Option("A", "--player", metavar="A|B", help="Whose win rate: A (first file) or B."),
    bootstrap: int = typer.Option(10000, "--bootstrap", min=1, metavar="N", help="Bootstrap resamples for the 95% interval."),
    seed: int = SEED,
) -> None:
    """Win / tie / lose counts, (win + tie/2) / n and a bootstrap 95% interval; failed pairs are counted apart."""
    from ..io import InputError, UsageError, iter_json, source_name
    from ..metrics.core import win_rate

    if player not in ("A", "B"):
        raise UsageError("--player must be A or B")
    verdicts, failed = [], 0
    for lineno, obj, _, err in iter_json(judgments):
        if err is not None or not isinstance(obj, dict) or "verdict" not in obj:
            raise InputError(source_name(judgments), lineno, str(err) if err else "field 'verdict': missing")
        v = obj["verdict"]
        if v is None:
            failed += 1
        elif v in ("A", "B", "tie"):
            verdicts.append(v)
        else:
            raise InputError(source_name(judgments), lineno, f"field 'verdict': expected A, B, tie or null, got {v!r}")
    if not verdicts:
        raise InputError(source_name(judgments), None, "no judged pairs")
    result = {"metric": "winrate", **win_rate(verdicts, player, bootstrap, seed), "failed": failed}
    _emit(result, f"win rate of {player}", [
        ("win / tie / lose", f"{result['wins']} / {result['ties']} / {result['losses']}"),
        ("win rate", f"{result['win_rate']:.4f}"), ("95% interval", f"[{result['ci95'][0]:.4f}, {result['ci95'][1]:.4f}]"),
        ("failed (excluded)", str(failed))])
