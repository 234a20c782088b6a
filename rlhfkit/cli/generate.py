"""`rlhfkit generate`: sample responses from a policy (for judging, metrics and MetaRM meta sets)."""

from __future__ import annotations

from typing import Optional

import typer

from .common import OUT, SEED, handle_errors, positive, unit_left_open


@handle_errors
def generate(
    prompts: str = typer.Argument(..., help="Records with a prompt, or plain text lines; '-' for stdin."),
    policy: str = typer.Option(..., "--policy", help="Policy: alias, directory or hub id."),
    n: int = typer.Option(1, "--n", min=1, help="Responses per prompt."),
    group: bool = typer.Option(False, "--group", help="One {prompt, responses} record per prompt (a MetaRM meta set) instead of one {prompt, response} per sample."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", callback=positive),
    top_p: float = typer.Option(1.0, "--top-p", callback=unit_left_open),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy decoding instead of sampling."),
    seed: int = SEED,
    out: Optional[str] = OUT,
) -> None:
    """Sample responses from a policy.

    Writes generation records {prompt, response, policy} (with --group: {prompt, responses,
    policy}). The chat template is applied when the policy has one.
    """
    from ..metrics.sampling import sample_with_logprobs
    from ..io import UsageError, summary, write_records
    from ..progress import task_progress
    from ..prompts import read_prompts

    if n < 1 or (group and n < 2):
        raise UsageError("--n must be at least 1 (at least 2 with --group)")
    from ..io import check_file_output

    check_file_output(out)
    prompt_list = read_prompts(prompts)
    with task_progress("generate", len(prompt_list) * n) as advance:
        samples = sample_with_logprobs(policy, prompt_list, n, None, batch_size, max_new_tokens, temperature, top_p,
                                       seed, progress=advance, logprobs=False, greedy=greedy)
    responses: list[list[str]] = [[] for _ in prompt_list]
    for sample in samples:
        responses[sample["prompt_index"]].append(sample["response"])
    if group:
        records = [{"prompt": p, "responses": rs, "policy": policy} for p, rs in zip(prompt_list, responses)]
    else:
        records = [{"prompt": p, "response": r, "policy": policy} for p, rs in zip(prompt_list, responses) for r in rs]
    written = write_records(out, records)
    summary(stage="generate", policy=policy, prompts=len(prompt_list), written=written, seed=seed)
