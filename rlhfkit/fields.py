"""``--fields``: a dataset's own field names and values read as rlhfkit's record fields.

Each item is ``NAME=SOURCE``, NAME one of the fields rlhfkit reads (or ``keep``):

- ``chosen=response_j``: a rename (the record keeps the value under rlhfkit's name);
- ``label=preference==1``: an equality test, 1 where it holds and 0 elsewhere (VALUE is literal text,
  spaces and brackets included: ``label=winner==tie (bothbad)``);
- ``label=2-preference``, ``margin=score_chosen-score_rejected``: a number computed from fields, with
  ``+ - * /``, ``log()``, ``abs()``, parentheses and ``A if TEST else B``; fields may hold numbers or
  numbers written as strings (AlpacaEval's ``"1.0025695767"``). A ``label`` is clipped to [0, 1] and the
  clipped records are counted;
- ``label=preference_strength<0``: a sign test: 1 where it holds, 0 where the opposite holds, 0.5 on a
  tie (``<`` and ``>``); ``<=``, ``>=``, ``==`` and ``!=`` give 1 or 0;
- ``responses=answers.answer``: a path into objects; over a list of objects it picks the key from each
  (Nectar's ranked answers), and arithmetic over such a list works item by item (``scores=-answers.rank``);
- ``keep=score_ratio>=2``: not a field: records whose test is not true are left out, and counted.

Inside a larger expression, text is quoted (``winner!='model_b'``) and an expression compared with
``==`` is put in parentheses (``(a-b)==0``). A later item for a field replaces an earlier one (a
preset's included). A SOURCE that is no expression rlhfkit computes (``answer (A)``, ``resp[0]``) and a
record field of exactly that name are read as a rename, as before.

A preset names a dataset (``--fields alpacaeval``) and stands for its items; what it stands for is
printed on stderr with the other notes of each file read, and more items may follow it
(``--fields shp,keep=score_ratio>=2``). The expression is parsed with Python's ``ast`` and only the
forms above are accepted: nothing is ever executed.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from typing import Any

from .records import RecordError

TARGETS = ("prompt", "chosen", "rejected", "response", "responses", "scores", "label", "margin", "id",
           "open_ended")
KEEP = "keep"

# Each preset maps one public dataset as published: which response is preferred and how surely (label).
# A margin is a training choice, not part of reading the data: README's "Your dataset" gives the item
# that adds one. The tests read a sample shaped like each dataset through each line of that table.
PRESETS = {
    # preference 1: output_1 better, 2: output_2 better, 1.5 or 0: a tie; the weighted annotator writes
    # P(output_2 better) + 1 in [1, 2]. label = P(output_1 better) = 2 - preference, a draw (0) is 0.5.
    "alpacaeval": "prompt=instruction,chosen=output_1,rejected=output_2,label=0.5 if preference==0 else 2-preference",
    "pku-saferlhf": "chosen=response_0,rejected=response_1,label=better_response_id==0",
    "pku-saferlhf-safer": "chosen=response_0,rejected=response_1,label=safer_response_id==0",
    # labels 1: comment A preferred; score_ratio = score of the preferred / score of the other (>= 1)
    "shp": "prompt=history,chosen=human_ref_A,rejected=human_ref_B,label=labels",
    # rank 1 is the best of the 7 answers
    "nectar": "responses=answers.answer,scores=-answers.rank",
    # preference_strength -3..3: negative means response_1 better, 0 about the same
    "helpsteer2": "chosen=response_1,rejected=response_2,label=preference_strength<0",
}

_IDENT = re.compile(r"^[A-Za-z_]\w*$")
FUNCTIONS = {"log": math.log, "abs": abs}


def _usage(message: str) -> Exception:
    from .io import UsageError  # io imports this module

    return UsageError(f"--fields: {message}")


def _as_number(value: Any) -> float | None:
    """A number, or a string that reads as one; None otherwise (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "false": False}.get(text)


def value_matches(value: Any, wanted: Any) -> bool:
    """Whether a record's value equals a wanted value: numerically when both read as numbers
    (AlpacaEval's preference 1.0 equals 1), true/false for JSON booleans, else as text."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        a = _as_bool(value)
        return a is not None and a == _as_bool(wanted)
    a, b = _as_number(value), _as_number(wanted)
    if a is not None and b is not None:
        return a == b
    return str(value) == str(wanted)


class _Expression:
    """One SOURCE of ``NAME=SOURCE``, checked once when the flag is read, evaluated per record."""

    ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Attribute, ast.Compare,
               ast.IfExp, ast.Call, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub, ast.UAdd, ast.Eq,
               ast.NotEq, ast.Lt, ast.Gt, ast.LtE, ast.GtE)

    def __init__(self, text: str, item: str):
        self.text, self.item = text, item
        self.tree = ast.parse(text, mode="eval").body  # SyntaxError: the caller reads a rename
        self.refusal = self._refusal()
        self.is_path = isinstance(self.tree, (ast.Name, ast.Attribute))

    def _refusal(self) -> str | None:
        """Why this is not an expression rlhfkit computes (None when it is one)."""
        parents = {child: node for node in ast.walk(self.tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(self.tree):
            if not isinstance(node, self.ALLOWED):
                return f"{type(node).__name__} is not allowed (fields, numbers, + - * /, comparisons, log(), abs() " \
                       "and A if TEST else B are)"
            if isinstance(node, ast.Compare) and len(node.ops) != 1:
                return "one comparison at a time"
            if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS
                                               or len(node.args) != 1 or node.keywords):
                return "the functions are log(x) and abs(x)"
            if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)) \
                    and not isinstance(parents.get(node), ast.Compare):
                return "text can only be compared (==, !=)"
        return None

    def evaluate(self, record: dict) -> Any:
        value = self._eval(self.tree, record)
        if not self.is_path:  # a computed number: finite, or the record is bad input
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    raise RecordError(f"--fields {self.item} gave {v}, not a finite number", _field_of(self.tree))
        return value

    # ---- evaluation: a bare path gives the value as it is; everything else gives numbers
    def _path(self, node: ast.AST, record: dict) -> tuple[Any, str]:
        if isinstance(node, ast.Name):
            if node.id not in record:
                raise RecordError(f"missing (read by --fields {self.item})", node.id)
            return record[node.id], node.id
        value, name = self._path(node.value, record)
        name = f"{name}.{node.attr}"
        if isinstance(value, dict):
            if node.attr not in value:
                raise RecordError(f"missing (read by --fields {self.item})", name)
            return value[node.attr], name
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                if node.attr not in v:
                    raise RecordError(f"item {i} has no {node.attr!r} (read by --fields {self.item})", name)
            return [v[node.attr] for v in value], name
        raise RecordError(f"expected an object or a list of objects to read {node.attr!r} from", name.rsplit(".", 1)[0])

    def _number(self, node: ast.AST, record: dict) -> float | list[float]:
        if isinstance(node, (ast.Name, ast.Attribute)):
            value, name = self._path(node, record)
            values = value if isinstance(value, list) else [value]
            numbers = [_as_number(v) for v in values]
            if any(n is None or not math.isfinite(n) for n in numbers):
                bad = next(v for v, n in zip(values, numbers) if n is None or not math.isfinite(n))
                raise RecordError(f"expected a number (or a number written as a string), got {bad!r} "
                                  f"(read by --fields {self.item})", name)
            return numbers if isinstance(value, list) else numbers[0]
        return self._eval(node, record)

    def _eval(self, node: ast.AST, record: dict) -> Any:
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self._path(node, record)[0] if node is self.tree else self._number(node, record)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp):
            x = self._number(node.operand, record)
            return _elementwise(lambda a: -a if isinstance(node.op, ast.USub) else a, x)
        if isinstance(node, ast.BinOp):
            a, b = self._number(node.left, record), self._number(node.right, record)
            op = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y, ast.Mult: lambda x, y: x * y,
                  ast.Div: _divide}[type(node.op)]
            return _elementwise(op, a, b, self.item)
        if isinstance(node, ast.Call):
            fn = FUNCTIONS[node.func.id]
            x = self._number(node.args[0], record)
            try:
                return _elementwise(fn, x)
            except ValueError:
                raise RecordError(f"log() of a number that is not positive: {x!r}", self.item) from None
        if isinstance(node, ast.Compare):
            return self._compare(node, record)
        if isinstance(node, ast.IfExp):
            return self._eval(node.body if self._holds(node.test, record) else node.orelse, record)
        raise AssertionError(type(node))  # the constructor admits nothing else

    def _holds(self, node: ast.AST, record: dict) -> bool:
        """A test's truth: a JSON boolean (or "true"/"false") as it is, a number when it is 1; a sign
        test's tie (0.5) does not hold."""
        value = self._path(node, record)[0] if isinstance(node, (ast.Name, ast.Attribute)) else self._eval(node, record)
        as_bool = _as_bool(value)
        if as_bool is not None:
            return as_bool
        number = _as_number(value)
        if number is None:
            raise RecordError(f"expected true/false or a number for a test, got {value!r} (read by --fields "
                              f"{self.item})", _field_of(node))
        return number == 1

    def _operand(self, node: ast.AST, record: dict) -> Any:
        """A comparison's side: a field's own value (text compares as text), a constant, or a number."""
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self._path(node, record)[0]
        return self._eval(node, record)

    def _compare(self, node: ast.Compare, record: dict) -> float:
        a, b = self._operand(node.left, record), self._operand(node.comparators[0], record)
        op = node.ops[0]
        if isinstance(op, (ast.Eq, ast.NotEq)):
            same = value_matches(a, b)
            return float(same if isinstance(op, ast.Eq) else not same)
        x, y = _as_number(a), _as_number(b)
        if x is None or y is None:
            raise RecordError(f"{a!r} and {b!r} do not both read as numbers (read by --fields {self.item})",
                              _field_of(node))
        if isinstance(op, ast.LtE):
            return float(x <= y)
        if isinstance(op, ast.GtE):
            return float(x >= y)
        if x == y:  # a sign test: a tie is neither
            return 0.5
        return float(x < y) if isinstance(op, ast.Lt) else float(x > y)


def _field_of(node: ast.AST) -> str | None:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            return sub.id
    return None


def _divide(x: float, y: float) -> float:
    if y == 0:
        raise ZeroDivisionError
    return x / y


def _elementwise(op, a, b=None, item: str = ""):
    """``op`` over numbers or, item by item, over a list of numbers (with a number or a list as long)."""
    try:
        if b is None:
            return [op(x) for x in a] if isinstance(a, list) else op(a)
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                raise RecordError(f"lists of different lengths ({len(a)} and {len(b)})", item)
            return [op(x, y) for x, y in zip(a, b)]
        if isinstance(a, list):
            return [op(x, b) for x in a]
        if isinstance(b, list):
            return [op(a, y) for y in b]
        return op(a, b)
    except ZeroDivisionError:
        raise RecordError(f"division by zero (read by --fields {item})", item or None) from None


def expand_presets(spec: str) -> tuple[list[str], list[str]]:
    """The items of a ``--fields`` value with each preset name replaced by its items; and the presets used."""
    items, used = [], []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        if "=" in item:
            items.append(item)
        elif item in PRESETS:
            used.append(item)
            items.extend(PRESETS[item].split(","))
        else:
            raise _usage(f"{item!r} is neither NAME=FIELD nor a preset ({', '.join(PRESETS)})")
    return items, used


class _LiteralTest:
    """``FIELD==VALUE`` as it always read: VALUE is literal text (or a number, or true/false)."""

    def __init__(self, field_: str, value: str, item: str):
        self.field, self.value, self.item = field_, value, item

    def evaluate(self, record: dict) -> float:
        if self.field not in record:
            raise RecordError(f"missing (tested by --fields {self.item})", self.field)
        return 1.0 if value_matches(record[self.field], self.value) else 0.0


def _literal_test(source: str, item: str) -> _LiteralTest | None:
    """The original ``FIELD==VALUE`` form: one ``==``, no other comparison, and a left side that is a
    field name, not an expression (``0.5 if preference==0 else …`` and ``(a-b)==0`` are expressions)."""
    if source.count("==") != 1 or re.search(r"[<>!]", source):
        return None
    left, _, right = (x.strip() for x in source.partition("=="))
    if not left or not right or re.search(r"[()*/+]|\bif\b|\belse\b|['\"]", left):
        return None
    return _LiteralTest(left, right, item)


class FieldMap:
    """The parsed ``--fields`` value; ``apply`` maps one record (None: left out by ``keep``).

    Counts what a user should hear about once the file is read (``notes``): an equality test that
    matched every record or none, labels clipped to [0, 1], a label that came out the same for every
    record, and records left out by ``keep``."""

    def __init__(self, spec: str):
        items, self.presets = expand_presets(spec)
        by_target: dict[str, Any] = {}  # a later item for a field replaces an earlier one (a preset's too)
        self.keep: list = []
        for item in items:
            target, sep, source = item.partition("=")
            target, source = target.strip(), source.strip()
            if not sep or not target or not source:
                raise _usage(f"expected NAME=FIELD items, got {item!r}")
            if target not in TARGETS and target != KEEP:
                raise _usage(f"{target!r} is not a field rlhfkit reads ({', '.join(TARGETS)}) nor 'keep'")
            if source.startswith("="):  # label==... written as label=field==value
                raise _usage(f"bad item {item!r}")
            rule = _rule(source, f"{target}={source}")
            if target == KEEP:
                if isinstance(rule, str) or getattr(rule, "refusal", None):
                    raise _usage(f"keep={source}: expected a test such as score_ratio>=2")
                self.keep.append(rule)
            else:
                by_target.pop(target, None)
                by_target[target] = rule
        self.rules = list(by_target.items())
        self.seen = self.clipped = self.left_out = 0
        self.matched: Counter = Counter()  # literal tests: records each matched
        self.labels: Counter = Counter()  # computed labels: how many records got each value

    def apply(self, obj: dict) -> dict | None:
        self.seen += 1
        for test in self.keep:
            if test.evaluate(obj) != 1:
                self.left_out += 1
                return None
        out = dict(obj)
        for target, rule in self.rules:
            name = rule if isinstance(rule, str) else rule.text if isinstance(rule, _Expression) else None
            if name is not None and name in obj:  # a field of that very name: a rename, as it always was
                out[target] = out.pop(name) if name != target else out[name]
                continue
            if isinstance(rule, str):
                raise RecordError(f"missing (mapped to '{target}' by --fields)", rule)
            if isinstance(rule, _Expression) and rule.refusal:
                raise RecordError(f"missing (mapped to '{target}' by --fields; not read as an expression: "
                                  f"{rule.refusal})", rule.text)
            value = rule.evaluate(obj)
            if isinstance(rule, _LiteralTest):
                self.matched[rule.item] += value == 1.0
            elif target == "label":
                if isinstance(value, list) or _as_number(value) is None:
                    raise RecordError(f"--fields {rule.item} gave {value!r}, not a number", "label")
                value = float(_as_number(value))
                if not 0.0 <= value <= 1.0:
                    value = min(1.0, max(0.0, value))
                    self.clipped += 1
                self.labels[value] += 1
            out[target] = value
        return out

    def notes(self) -> list[str]:
        """What the user should hear once the file is read (one line each)."""
        lines = [f"--fields {name} means --fields {PRESETS[name]}" for name in self.presets]
        n = self.seen - self.left_out
        for target, rule in self.rules:
            if isinstance(rule, _LiteralTest) and n > 0 and self.matched[rule.item] in (0, n):
                hits = self.matched[rule.item]
                how = f"matched none of the {n}" if hits == 0 else f"matched all {n}"
                lines.append(f"--fields {rule.item} {how} records, so every {target} is {float(hits > 0)}: "
                             "check the field and the value")
            if isinstance(rule, _Expression) and target == "label":
                if len(self.labels) == 1 and sum(self.labels.values()) > 1:
                    (value, count), = self.labels.items()
                    lines.append(f"--fields {rule.item} gave label {value} to all {count} records: check the field")
                if self.clipped:
                    lines.append(f"--fields {rule.item}: {self.clipped} label(s) outside [0, 1] clipped to it")
        if self.left_out:
            tests = ", ".join(t.item for t in self.keep)
            lines.append(f"--fields {tests} left out {self.left_out} of {self.seen} records")
        return lines

    def __bool__(self) -> bool:
        return bool(self.rules or self.keep)


def _rule(source: str, item: str):
    """How one SOURCE is read: a field name (str), the literal ``FIELD==VALUE`` test, or an expression."""
    if _IDENT.match(source):
        return source
    literal = _literal_test(source, item)
    if literal is not None:
        return literal
    try:
        expr = _Expression(source, item)
    except SyntaxError:
        if re.search(r"[<>=!]", source):  # a test with a mistake in it: say so rather than rename
            raise _usage(f"cannot read {item!r}: expected a field name, FIELD==VALUE, or an expression such as "
                         "2-preference or score_chosen-score_rejected") from None
        return source  # a name that is no expression (``Question Title``): a rename
    if expr.refusal and re.search(r"[<>=!]", source):
        raise _usage(f"{item!r}: {expr.refusal}")
    return expr


def field_map(spec: str | None) -> FieldMap | None:
    return FieldMap(spec) if spec else None
