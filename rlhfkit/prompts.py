"""Prompts for generation: records with a prompt (any kind), or plain text lines."""

from __future__ import annotations

import json
from typing import Any

from .io import InputError, iter_json, read_records, source_name


def read_prompts(spec: str) -> list[Any]:
    """Prompts from JSONL records (their `prompt`; HH transcripts give their shared prefix) or,
    when the first line is not JSON, one prompt per non-blank line of plain text."""
    first = next(iter_json(spec), None) if spec != "-" else None
    if first is not None and first[3] is not None and not spec.startswith("hf:"):
        with open(spec, encoding="utf-8") as fh:  # plain text lines
            prompts = [line.rstrip("\n") for line in fh if line.strip()]
        if not prompts:
            raise InputError(source_name(spec), 1, "empty input: no prompts")
        return prompts
    examples, _ = read_records(spec)
    prompts = [ex.prompt for ex in examples]
    for ex, p in zip(examples, prompts):
        if not p:
            raise InputError(source_name(spec), ex.line, "field 'prompt': empty (a policy needs something to continue)")
    return prompts


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
