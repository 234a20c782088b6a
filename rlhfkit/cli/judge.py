"""`rlhfkit judge`: pairwise LLM judge (OpenAI-compatible API) or a reward model as judge."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from .common import DTYPE, FIELDS, OUT, REJECTS, err_console, handle_errors, positive

DEFAULT_CACHE = str(Path.home() / ".cache" / "rlhfkit" / "judge-cache.sqlite")


@handle_errors
def judge(
    files: List[str] = typer.Argument(..., metavar="FILE...", help="LLM judge: two generation files A and B. Reward judge: one or more."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", metavar="NAME", help="Judge model name on the API (LLM judge)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", metavar="URL", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", metavar="VAR", help="Environment variable holding the API key (never written anywhere)."),
    template: Optional[str] = typer.Option(None, "--template", metavar="FILE", help="Judge prompt with {question}, {answer_a}, {answer_b}; default: rlhfkit's."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, metavar="N", help="Pairs judged at once (each sends its two orders together)."),
    max_retries: int = typer.Option(5, "--max-retries", min=0, metavar="N", help="Retries on 429, 5xx, timeouts and dropped connections."),
    timeout: float = typer.Option(60.0, "--timeout", callback=positive, metavar="X", help="Seconds per request."),
    backoff: float = typer.Option(1.0, "--backoff", min=0, metavar="X", help="First back-off wait in seconds, doubled on each retry."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, metavar="N", help="Longest judge answer, in tokens."),
    cache: str = typer.Option(DEFAULT_CACHE, "--cache", metavar="FILE", help="SQLite cache of answers ('none' to disable)."),
    reward: Optional[str] = typer.Option(None, "--reward", metavar="DIR|FN", help="Reward-model or ensemble directory (reward-model judge)."),
    chat_template: str = typer.Option("auto", "--chat-template", metavar="auto|on|off", help="Reward judge: auto, on or off."),
    pairwise: bool = typer.Option(False, "--pairwise", help="Reward judge over two files A and B: a verdict per pair (the higher reward wins, equal rewards tie), in the LLM judge's records, so `metrics winrate` reads either."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, metavar="N", help="Texts (or prompts) per forward pass; memory grows with it."),
    dtype: str = DTYPE,
    out: Optional[str] = OUT,
    rejects: Optional[str] = REJECTS,
    fields: Optional[str] = FIELDS,
) -> None:
    """Judge generations.

    LLM judge (--judge-model): records of A and B are joined by `id` (when both files have ids)
    or by prompt; each pair is judged in both orders at temperature 0 and orders that disagree
    make a tie. Writes one record per pair: verdict (A, B, tie, or null with `error`), both raw
    answers, orders_agree. Unmatched records go to --rejects and are counted.
    Reward judge (--reward): scores every generation, writes records with `reward` and `source`,
    and prints each file's mean and spread; with --pairwise it joins A and B as the LLM judge does
    and writes a verdict per pair instead.
    """
    from ..io import UsageError, read_records, summary, write_records
    from ..progress import task_progress

    from ..io import check_distinct_outputs, check_file_output, field_map

    if (judge_model is None) == (reward is None):
        raise UsageError("give exactly one of --judge-model (LLM judge) or --reward (reward-model judge)")
    check_file_output(out)
    check_file_output(rejects, "--rejects")
    check_distinct_outputs(out=out, rejects=rejects)
    if cache != "none" and os.path.isdir(cache):
        raise UsageError(f"--cache {cache}: is a directory, expected an SQLite file (or 'none')")
    if template is not None and not os.path.isfile(template):
        raise UsageError(f"--template {template}: no such file")
    if pairwise and (reward is None or len(files) != 2):
        raise UsageError("--pairwise compares two files A and B with --reward")
    if reward is not None:
        from ..judge.reward import judge_with_reward, use_chat_template
        from ..cleaning.scoring import load_scorer

        loaded = {f: read_records(f, ("generation",), fields=field_map(fields))[0] for f in files}
        scorer = load_scorer(reward, dtype=dtype)
        if chat_template not in ("auto", "on", "off"):
            raise UsageError("--chat-template must be auto, on or off")
        chat = use_chat_template(scorer, chat_template)
        unmatched = []
        if pairwise:  # score only the matched generations, in pair order
            from ..judge.join import join

            if files[0] == files[1]:
                raise UsageError("--pairwise compares two different files")
            pairs, unmatched = join(loaded[files[0]], loaded[files[1]])
            loaded = {files[0]: [x for x, _ in pairs], files[1]: [y for _, y in pairs]}
        with task_progress("judge", sum(len(v) for v in loaded.values())) as advance:
            records, stats = judge_with_reward(scorer, loaded, chat, batch_size, advance)
        if pairwise:
            from ..judge.reward import pairwise_verdicts

            verdicts = pairwise_verdicts(records, files[0], files[1], reward)
            write_records(out, verdicts)
            if rejects:
                write_records(rejects, (e.output() for e in unmatched))
            counts = {v: sum(r["verdict"] == v for r in verdicts) for v in ("A", "B", "tie")}
            err_console.print(f"judged {len(verdicts)} pairs by reward ({counts['A']} A, {counts['B']} B, "
                              f"{counts['tie']} tie), {len(unmatched)} unmatched records")
            summary(stage="judge", mode="reward-pairwise", reward=reward, chat_template=chat, pairs=len(verdicts),
                    unmatched=len(unmatched), verdicts=counts)
            return
        write_records(out, records)
        from rich.table import Table

        table = Table(title=f"reward judge: {reward}", show_edge=False)
        for col in ("file", "n", "mean", "std", "median"):
            table.add_column(col, justify="left" if col == "file" else "right")
        for name, s in stats.items():
            table.add_row(name, str(s["n"]), f"{s['mean']:.4f}", f"{s['std']:.4f}", f"{s['median']:.4f}")
        err_console.print(table)
        summary(stage="judge", mode="reward", reward=reward, chat_template=chat, files=stats)
        return

    from ..judge.join import join, question_text
    from ..judge.llm import JudgeSettings, run_judge
    from ..judge.verdicts import DEFAULT_TEMPLATE, check_template
    from ..records import as_text

    if len(files) != 2:
        raise UsageError(f"the LLM judge compares two files (A and B), got {len(files)}")
    template_text = Path(template or DEFAULT_TEMPLATE).read_text(encoding="utf-8")
    try:
        check_template(template_text)
    except ValueError as e:
        raise UsageError(f"{template}: {e}") from None
    a, _ = read_records(files[0], ("generation",), fields=field_map(fields))
    b, _ = read_records(files[1], ("generation",), fields=field_map(fields))
    pairs, unmatched = join(a, b)
    api_key = os.environ.get(api_key_env)
    if api_key is None and base_url is None:
        raise UsageError(f"no API key: set {api_key_env} (or give --base-url for a local server)")
    settings = JudgeSettings(model=judge_model, base_url=base_url, api_key=api_key, template=template_text,
                             concurrency=concurrency, max_retries=max_retries, timeout=timeout, backoff=backoff,
                             max_tokens=max_tokens)
    items = [(question_text(x), as_text(x.response), as_text(y.response)) for x, y in pairs]
    with task_progress("judge", len(items)) as advance:
        results, usage = run_judge(settings, items, None if cache == "none" else cache, advance)
    records = []
    for (x, y), res in zip(pairs, results):
        records.append({"id": x.raw.get("id", x.id), "prompt": x.prompt, "response_a": x.response, "response_b": y.response,
                        "source_a": files[0], "source_b": files[1], "judge_model": judge_model, **res})
    write_records(out, records)
    if rejects:
        write_records(rejects, (e.output() for e in unmatched))
    counts = {v: sum(r["verdict"] == v for r in records) for v in ("A", "B", "tie")}
    failed = sum(r["verdict"] is None for r in records)
    err_console.print(f"judged {len(records) - failed} pairs ({counts['A']} A, {counts['B']} B, {counts['tie']} tie), "
                      f"{failed} failed, {len(unmatched)} unmatched records")
    summary(stage="judge", mode="llm", judge_model=judge_model, pairs=len(records), judged=len(records) - failed,
            failed=failed, unmatched=len(unmatched), verdicts=counts,
            requests=usage.requests, cached_answers=usage.cached, retries=usage.retries, errors=usage.errors,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
    if records and failed == len(records):  # nothing judged: a run that did nothing must not look like success
        reasons = ", ".join(f"{k} ({v})" for k, v in usage.errors.items()) or "no verdict in any answer"
        raise typer.Exit(_all_failed(len(records), reasons))


def _all_failed(n: int, reasons: str) -> int:
    import sys

    sys.stderr.write(f"rlhfkit: error: all {n} pairs failed to be judged: {reasons}\n")
    return 1
