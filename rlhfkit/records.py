"""The record contract: which JSONL shapes rlhfkit reads and how each is normalised.

A record is kept as it came (``Example.raw``); normalisation only adds a view of it (prompt /
responses split out, label and margin read) that the stages work on. Writing a record back
(``Example.output``) returns every original field plus the stage's own fields.

One orientation rule for pairs: ``label`` is P(chosen is better), so a pair with label p < 0.5
states that the rejected response is better, and is read as its swap: chosen ↔ rejected (with every
field of a side: gold_chosen ↔ gold_rejected, …, strength and margin negated) and label 1 − p. Every stage
then sees the preferred response first, and writes the pair that way (``reoriented`` counts them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

PAIR, RANKING, GENERATION, PROMPT = "pair", "ranking", "generation", "prompt"
HH_ASSISTANT = "\n\nAssistant:"


class RecordError(ValueError):
    """A record breaks the contract; ``field`` names the offending key when there is one."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:
        msg = super().__str__()
        return f"field '{self.field}': {msg}" if self.field else msg


@dataclass
class Example:
    raw: dict
    kind: str
    id: str
    prompt: Any = ""  # str or list of messages
    chosen: Any = None
    rejected: Any = None
    responses: list | None = None  # ranking: best first
    given_responses: list | None = None  # ranking: in the record's own order (what outputs follow)
    scores: list | None = None
    response: Any = None
    label: float = 1.0
    margin: float | None = None
    open_ended: bool | None = None
    line: int | None = None  # where it was read, for error messages of later checks
    reoriented: bool = False  # a pair given with label < 0.5, read (and written) as its swap
    prompt_in_responses: bool = False  # the responses repeated the prompt's turns; read without them

    def output(self, **added: Any) -> dict:
        """The record as read, its id, and the fields a stage adds (which win on conflict)."""
        out = dict(self.raw)
        out.setdefault("id", self.id)
        out.update(added)
        return out


def stable_id(obj: dict) -> str:
    """A short hash of a record's canonical JSON: the same content always gets the same id."""
    canon = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


SIDES = ("chosen", "rejected")
SIGNED_BY_ORDER = ("strength_mean", "margin")  # numbers stated in the pair's order (chosen → rejected): negated on a swap


def _other_side(key: str) -> str | None:
    """The name of the same field for the other response (gold_chosen -> gold_rejected), or None."""
    for a, b in (SIDES, SIDES[::-1]):
        if key == a:
            return b
        if key.endswith("_" + a):
            return key[: -len(a)] + b
        if key.startswith(a + "_"):
            return b + key[len(a):]
    return None


def swapped_sides(record: dict) -> dict:
    """The same record with its two responses exchanged: chosen ↔ rejected, every field that belongs
    to a side (``X_chosen`` ↔ ``X_rejected``, ``chosen_X`` ↔ ``rejected_X``; a field whose partner is
    absent moves to the partner's name) with them, and the numbers stated in the pair's order (strength,
    margin) negated. ``label`` is left to the caller (a swap on reading and a flip by ``clean`` differ there)."""
    out = {}
    for key, value in record.items():
        other = _other_side(key)
        if other is None:
            out[key] = value
        elif other in record:
            out[key] = record[other]
        else:
            out[other] = value
    for key in SIGNED_BY_ORDER:
        if isinstance(record.get(key), (int, float)) and not isinstance(record[key], bool):
            out[key] = -record[key]
    if isinstance(record.get("strength_margins"), list):
        out["strength_margins"] = [-d if isinstance(d, (int, float)) else d for d in record["strength_margins"]]
    return out


def reoriented(record: dict, label: float) -> dict:
    """A pair given with label p < 0.5, stated the other way round: sides swapped, label 1 − p and the
    margin negated, so that every loss of the pair (−[p·log σ(Δ − m) + (1 − p)·log σ(m − Δ)]) is unchanged."""
    return {**swapped_sides(record), "label": 1.0 - label}


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number"
    )


def _is_messages(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in v
    )


def _text(obj: dict, key: str, *, allow_empty: bool = False) -> Any:
    if key not in obj:
        raise RecordError("missing", key)
    v = obj[key]
    if isinstance(v, str):
        if not allow_empty and not v.strip():
            raise RecordError("is empty", key)
        return v
    if _is_messages(v):
        if not allow_empty and not v:
            raise RecordError("is an empty message list", key)
        return v
    raise RecordError(
        f"expected a string or a list of {{role, content}} messages, got {_type_name(v)}", key
    )


def _number(obj: dict, key: str, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    if key not in obj or obj[key] is None:
        return None
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RecordError(f"expected a finite number, got {_type_name(v)} {v!r}", key)
    if not lo <= v <= hi:
        raise RecordError(f"must lie in [{lo}, {hi}], got {v}", key)
    return float(v)


def split_shared_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """Split two whole transcripts into (prompt, chosen response, rejected response).

    Strings: HH transcripts are cut after the last "\\n\\nAssistant:" of their shared prefix;
    other strings after the last whitespace of it. Message lists: the shared leading messages.
    Without a usable shared prefix the prompt is empty and the texts stay whole.
    """
    if isinstance(chosen, list) and isinstance(rejected, list):
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        return chosen[:n], chosen[n:], rejected[n:]
    if not (isinstance(chosen, str) and isinstance(rejected, str)):
        return "", chosen, rejected
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(HH_ASSISTANT)
    if cut >= 0:
        cut += len(HH_ASSISTANT)
    else:
        cut = max(common.rfind(" "), common.rfind("\n")) + 1
    if cut <= 0 or not chosen[cut:].strip() or not rejected[cut:].strip():
        return "", chosen, rejected
    return chosen[:cut], chosen[cut:], rejected[cut:]


def detect_kind(obj: dict) -> str:
    if "chosen" in obj or "rejected" in obj:
        return PAIR
    if "responses" in obj:
        return RANKING
    if "response" in obj:
        return GENERATION
    if "prompt" in obj:
        return PROMPT
    raise RecordError(
        "cannot tell the record's kind: expected 'chosen'/'rejected' (pair), 'responses' (ranking), "
        "'response' (generation) or 'prompt'"
    )


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def parse_record(obj: Any, kinds: tuple[str, ...] | None = None) -> Example:
    """Validate one decoded JSON value and normalise it; raises RecordError."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {_type_name(obj)}")
    for key, value in obj.items():  # Python's json reads NaN/Infinity, but they are not JSON and poison sums
        if _non_finite(value):
            raise RecordError("holds NaN or Infinity, which is not valid JSON (a finite number is expected)", key)
    kind = detect_kind(obj)
    if kinds is not None and kind not in kinds:
        raise RecordError(f"a {kind} record where {' or '.join(kinds)} records are expected")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise RecordError(f"expected a string or integer, got {_type_name(rid)}", "id")
    ex = Example(raw=obj, kind=kind, id=str(rid) if rid is not None else stable_id(obj))
    prompt_given = "prompt" in obj
    if prompt_given:
        ex.prompt = _text(obj, "prompt", allow_empty=True)

    if kind == PAIR:
        chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")  # checked as given: errors name its fields
        if type(chosen) is not type(rejected):
            raise RecordError("chosen and rejected must both be strings or both message lists", "rejected")
        if chosen == rejected:
            raise RecordError("is identical to chosen", "rejected")
        given = _number(obj, "label", 0.0, 1.0)
        if given is not None and given < 0.5:  # the rejected response is the better one: read the swap
            obj = ex.raw = reoriented(obj, given)
            ex.reoriented = True
            chosen, rejected = rejected, chosen
        if prompt_given:
            (ex.chosen, ex.rejected), ex.prompt_in_responses = without_prompt_turns(
                ex.prompt, [chosen, rejected], ("rejected", "chosen") if ex.reoriented else SIDES)
        else:
            ex.prompt, ex.chosen, ex.rejected = split_shared_prompt(chosen, rejected)
        ex.label = _number(obj, "label", 0.0, 1.0)
        ex.label = 1.0 if ex.label is None else ex.label
        ex.margin = _number(obj, "margin")
    elif kind == RANKING:
        responses = obj["responses"]
        if not isinstance(responses, list):
            raise RecordError(f"expected an array, got {_type_name(responses)}", "responses")
        if len(responses) < 2:
            raise RecordError(f"a ranking needs at least 2 responses, got {len(responses)}", "responses")
        for i, r in enumerate(responses):  # an empty response is a real sample (e.g. an immediate EOS)
            if not isinstance(r, str) and not _is_messages(r):
                raise RecordError(f"item {i} is not a string or message list", "responses")
        if prompt_given:
            responses, ex.prompt_in_responses = without_prompt_turns(ex.prompt, responses, allow_empty=True)
        ex.given_responses = responses
        scores = obj.get("scores")
        if scores is not None:
            if not isinstance(scores, list) or len(scores) != len(responses):
                raise RecordError("must be an array as long as 'responses'", "scores")
            if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
                raise RecordError("must hold numbers only", "scores")
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            responses = [responses[i] for i in order]
            scores = [float(scores[i]) for i in order]
        ex.responses, ex.scores = responses, scores
        oe = obj.get("open_ended")
        if oe is not None and not isinstance(oe, bool):
            raise RecordError(f"expected true or false, got {_type_name(oe)}", "open_ended")
        ex.open_ended = oe
    elif kind == GENERATION:
        ex.response = _text(obj, "response", allow_empty=True)
        if prompt_given and ex.response:
            (ex.response,), ex.prompt_in_responses = without_prompt_turns(ex.prompt, [ex.response], allow_empty=True)
    return ex


def prompt_turns(prompt: Any) -> list:
    """The prompt as the messages it stands for: a message list as it is, a string as one user turn."""
    if isinstance(prompt, list):
        return prompt
    return [{"role": "user", "content": prompt}] if prompt else []


def without_prompt_turns(prompt: Any, responses: list, names: tuple[str, ...] = (),
                         allow_empty: bool = False) -> tuple[list, bool]:
    """The responses without the prompt's turns when every one of them is a conversation that begins
    with them (UltraFeedback: ``prompt`` a string, ``chosen``/``rejected`` whole conversations), so that
    rendering prompt + response holds the prompt once; and whether that applied. A conversation holding
    nothing but the prompt's turns is an empty response: an error in a pair, a sample (an immediate
    end) in a ranking or a generation (``allow_empty``)."""
    turns = prompt_turns(prompt)
    same = lambda a, b: a.get("role") == b.get("role") and a.get("content") == b.get("content")  # noqa: E731
    if not turns or not all(isinstance(r, list) and len(r) >= len(turns) and all(map(same, r, turns))
                            for r in responses):
        return responses, False
    stripped = [r[len(turns):] for r in responses]
    for i, r in enumerate(stripped):
        if not r and not allow_empty:
            raise RecordError("holds only the prompt's turns, no response after them",
                              names[i] if i < len(names) else "responses")
    return stripped, True


def ranking_pairs(ex: Example) -> list[tuple[int, int]]:
    """Every (better, worse) index pair of a ranking; tied scores give no pair."""
    n = len(ex.responses)
    return [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if ex.scores is None or ex.scores[i] > ex.scores[j]
    ]


def as_text(value: Any) -> str:
    """A plain-text rendering of a string or message list (for tokenizers without a chat template)."""
    if isinstance(value, str):
        return value
    return "".join(f"\n\n{m['role'].capitalize()}: {m['content']}" for m in value)
