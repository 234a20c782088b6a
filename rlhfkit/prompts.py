"""Prompts for generation: records with a prompt (any kind), or plain text lines."""

from __future__ import annotations

import json
from typing import Any, Callable

from .io import InputError, iter_json, source_name


def read_prompts(spec: str, fields=None) -> list[Any]:
    """Prompts from JSONL records (their `prompt`; HH transcripts give their shared prefix) or,
    when the first non-blank line is not JSON, one prompt per non-blank line of plain text."""
    return [p for p, _ in read_prompt_records(spec, fields)]


def read_prompt_records(spec: str, fields=None, on_error: str = "stop",
                        on_reject: Callable[[bytes], Any] | None = None) -> list[tuple[Any, dict | None]]:
    """(prompt, the record it came from) pairs; the record is None for plain-text lines. With
    ``on_error="skip"`` a bad record or an empty prompt is handed to ``on_reject`` and left out."""
    name = source_name(spec)
    rows = list(iter_json(spec, fields))  # prompt files are small; this also lets stdin be read once
    if not rows:
        raise InputError(name, 1, "empty input: no prompts")
    if rows[0][3] is not None and rows[0][2] is not None:  # not JSON: plain text, one prompt per line
        return [(raw.decode("utf-8", errors="strict").rstrip("\r\n"), None) for _, _, raw, _ in rows]
    found = []
    for lineno, obj, raw, err in rows:
        try:
            if err is not None:
                raise InputError(name, lineno, str(err))
            ex = _parse(obj, name, lineno)
            if not ex.prompt:
                raise InputError(name, lineno, "field 'prompt': empty (a policy needs something to continue)")
        except InputError:
            if on_error != "skip":
                raise
            if on_reject is not None:
                on_reject(raw if raw is not None else (json.dumps(obj, ensure_ascii=False) + "\n").encode())
            continue
        found.append((ex.prompt, ex.output()))
    if not found:
        raise InputError(name, None, "no usable prompt in the input")
    return found


def _parse(obj, name, lineno):
    from .records import RecordError, parse_record

    try:
        return parse_record(obj)
    except RecordError as e:
        raise InputError(name, lineno, str(e)) from None


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
