"""`rlhfkit generate`: sample responses from a policy (for judging, metrics and MetaRM meta sets)."""

from __future__ import annotations

from typing import Optional

import typer

from .common import CHAT_TEMPLATE, DTYPE, FIELDS, OUT, SEED, handle_errors, positive, unit_left_open


@handle_errors
def generate(
    prompts: str = typer.Argument(..., metavar="FILE", help="Records with a prompt, or plain text lines; '-' for stdin."),
    policy: str = typer.Option(..., "--policy", metavar="MODEL", help="Policy: alias, directory or hub id."),
    n: int = typer.Option(1, "--n", min=1, metavar="N", help="Responses per prompt."),
    group: bool = typer.Option(False, "--group", help="One {prompt, responses} record per prompt (a MetaRM meta set) instead of one {prompt, response} per sample."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, metavar="N", help="Texts (or prompts) per forward pass; memory grows with it."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, metavar="N", help="Longest response, in tokens."),
    temperature: float = typer.Option(1.0, "--temperature", callback=positive, metavar="X", help="Sampling temperature (1 = the policy's own distribution)."),
    top_p: float = typer.Option(1.0, "--top-p", callback=unit_left_open, metavar="X", help="Nucleus sampling: keep the smallest set of tokens with this total probability (1 = off)."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy decoding instead of sampling."),
    chat_template: Optional[bool] = CHAT_TEMPLATE,
    dtype: str = DTYPE,
    seed: int = SEED,
    out: Optional[str] = OUT,
    fields: Optional[str] = FIELDS,
) -> None:
    """Sample responses from a policy.

    Writes generation records {prompt, response, policy} (with --group: {prompt, responses,
    policy}) that keep every field of the input record (its `id` above all, the join key of
    `judge` and `metrics`) except chosen/rejected/responses, which would make them another kind
    of record; with --n > 1 each also gets `sample` (0..n-1). The chat template is applied when
    the policy has one, unless --no-chat-template.
    """
    from ..metrics.sampling import sample_with_logprobs
    from ..io import UsageError, summary, write_records
    from ..progress import task_progress

    if n < 1 or (group and n < 2):
        raise UsageError("--n must be at least 1 (at least 2 with --group)")
    from ..io import check_file_output, field_map
    from ..prompts import read_prompt_records

    check_file_output(out)
    found = read_prompt_records(prompts, field_map(fields))
    prompt_list = [p for p, _ in found]
    with task_progress("generate", len(prompt_list) * n) as advance:
        samples = sample_with_logprobs(policy, prompt_list, n, None, batch_size, max_new_tokens, temperature, top_p,
                                       seed, progress=advance, logprobs=False, greedy=greedy,
                                       chat_template=chat_template, dtype=dtype)
    responses: list[list[str]] = [[] for _ in prompt_list]
    for sample in samples:
        responses[sample["prompt_index"]].append(sample["response"])
    def kept(record):
        return {k: v for k, v in (record or {}).items() if k not in ("chosen", "rejected", "responses", "response", "scores")}

    if group:
        records = [{**kept(rec), "prompt": p, "responses": rs, "policy": policy} for (p, rec), rs in zip(found, responses)]
    else:
        records = [{**kept(rec), "prompt": p, "response": r, "policy": policy, **({"sample": k} if n > 1 else {})}
                   for (p, rec), rs in zip(found, responses) for k, r in enumerate(rs)]
    written = write_records(out, records)
    summary(stage="generate", policy=policy, prompts=len(prompt_list), written=written, seed=seed)
