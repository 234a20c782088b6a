"""`rlhfkit prompts`: prompt and ranking records from raw text (the papers' constructions)."""

from __future__ import annotations

from typing import Optional

import typer

from .common import FIELDS, ON_ERROR, OUT, REJECTS, SEED, handle_errors


@handle_errors
def prompts(
    source: str = typer.Argument(..., metavar="FILE", help="JSONL(.gz) records, a dataset (hf:NAME[:CONFIG]:SPLIT), or plain text lines."),
    kind: str = typer.Option("short", "--kind", metavar="KIND", help="short: first 2-8 words of each text; extract: each record's own prompt (HH: the shared prefix); prefix-rankings: Reward Collapse rankings."),
    text_field: str = typer.Option("text,response,output,chosen", "--text-field", metavar="FIELDS", help="Fields to take the text from (first present wins)."),
    prompt_field: str = typer.Option("prompt,instruction", "--prompt-field", metavar="FIELDS", help="prefix-rankings: fields holding the question."),
    min_words: int = typer.Option(2, "--min-words", min=1, metavar="N", help="short: fewest words; prefix-rankings: shortest usable answer (paper: 100)."),
    max_words: int = typer.Option(8, "--max-words", min=1, metavar="N", help="short: most words."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, metavar="N", help="Stop after this many records."),
    seed: int = SEED,
    out: Optional[str] = OUT,
    on_error: str = ON_ERROR,
    rejects: Optional[str] = REJECTS,
    fields: Optional[str] = FIELDS,
) -> None:
    """Build prompt records or Reward Collapse prefix rankings from raw text or records.

    short: the opening 2-8 words of each text (IMDB or movie-review openings, as Uncertainty-aware
    RLHF prompts GPT-2). extract: each record's own prompt (HH transcripts: the shared prefix),
    keeping its id; --on-error skip leaves out records without a usable prompt (counted, saved to
    --rejects).

    prefix-rankings: every answer of at least --min-words words gives 8 prefixes, the longer
    preferred; open-ended prompts (half) use 10..80 words, closed-ended ones 16-34 and 56-74 words.
    """
    import itertools

    from ..io import InputError, UsageError, iter_json, source_name, summary, write_records
    from ..prefixes import prefix_rankings, short_prompts, text_of

    if kind not in ("short", "extract", "prefix-rankings"):
        raise UsageError("--kind must be short, extract or prefix-rankings")
    if kind == "extract":
        from contextlib import nullcontext

        from ..io import atomic_output, check_distinct_outputs, check_file_output, field_map
        from ..prompts import read_prompt_records

        check_file_output(out)
        check_file_output(rejects, "--rejects")
        check_distinct_outputs(out=out, rejects=rejects)
        skipped = [0]
        with atomic_output(rejects, "wb") if rejects else nullcontext(None) as rejected:
            def on_reject(line: bytes) -> None:
                skipped[0] += 1
                if rejected is not None:
                    rejected.write(line if line.endswith(b"\n") else line + b"\n")

            found = read_prompt_records(source, field_map(fields), on_error, on_reject)
        found = found[: limit if limit is not None else None]
        written = write_records(out, ({"id": rec["id"] if rec else f"prompt-{i}", "prompt": p}
                                      for i, (p, rec) in enumerate(found)))
        summary(stage="prompts", kind=kind, written=written, skipped=skipped[0])
        return
    tfields, pfields = text_field.split(","), prompt_field.split(",")
    from ..io import field_map

    rows = list(iter_json(source, field_map(fields)))
    if not rows:
        raise InputError(source_name(source), 1, "empty input")
    plain = rows[0][3] is not None and rows[0][2] is not None
    records = []
    for lineno, obj, raw, err in rows:
        if plain:
            records.append({"text": raw.decode("utf-8", errors="replace").strip()})
        elif err is not None or not isinstance(obj, dict):
            raise InputError(source_name(source), lineno, str(err) if err else "expected a JSON object")
        else:
            records.append(obj)
    if kind == "short":
        texts = (t for t in (text_of(r, tfields) for r in records) if isinstance(t, str))
        made = short_prompts(texts, min_words, max_words, seed)
    else:
        def pairs():
            for r in records:
                answer = text_of(r, tfields)
                if answer is None and isinstance(r.get("samples"), list) and r["samples"]:
                    answer = r["samples"][0].get("output")
                question = text_of(r, pfields)
                if isinstance(question, str) and isinstance(answer, str):
                    yield question, answer
        made = prefix_rankings(pairs(), max(min_words, 1), seed)
    written = write_records(out, itertools.islice(made, limit))
    summary(stage="prompts", kind=kind, read=len(records), written=written)
