"""Prompts for generation: records with a prompt (any kind), or plain text lines."""

from __future__ import annotations

import json
from typing import Any

from .io import InputError, iter_json, source_name


def read_prompts(spec: str) -> list[Any]:
    """Prompts from JSONL records (their `prompt`; HH transcripts give their shared prefix) or,
    when the first non-blank line is not JSON, one prompt per non-blank line of plain text."""
    name = source_name(spec)
    rows = list(iter_json(spec))  # prompt files are small; this also lets stdin be read once
    if not rows:
        raise InputError(name, 1, "empty input: no prompts")
    if rows[0][3] is not None and rows[0][2] is not None:  # not JSON: plain text, one prompt per line
        return [raw.decode("utf-8", errors="strict").rstrip("\r\n") for _, _, raw, _ in rows]
    prompts = []
    for lineno, obj, raw, err in rows:
        if err is not None:
            raise InputError(name, lineno, str(err))
        ex = _parse(obj, name, lineno)
        if not ex.prompt:
            raise InputError(name, lineno, "field 'prompt': empty (a policy needs something to continue)")
        prompts.append(ex.prompt)
    return prompts


def _parse(obj, name, lineno):
    from .records import RecordError, parse_record

    try:
        return parse_record(obj)
    except RecordError as e:
        raise InputError(name, lineno, str(e)) from None


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
