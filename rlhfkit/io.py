"""Reading and writing records: paths, stdin/stdout, .gz, `hf:` datasets, atomic output.

Errors carry the file and line (``InputError``); the CLI turns them into exit status 2.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator

from .records import Example, RecordError, parse_record


class InputError(Exception):
    """Bad input: printed as ``FILE:LINE: message``."""

    def __init__(self, source: str, line: int | None, message: str):
        self.source, self.line, self.message = source, line, message
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


class UsageError(Exception):
    """A bad flag combination or argument value (exit status 2)."""


def source_name(spec: str) -> str:
    return "<stdin>" if spec == "-" else spec


def _iter_file_lines(spec: str) -> Iterator[tuple[int, bytes]]:
    if spec == "-":
        stream: IO[bytes] = sys.stdin.buffer
        yield from enumerate(stream, start=1)
        return
    if not os.path.exists(spec):
        raise InputError(spec, None, "no such file")
    opener = gzip.open if spec.endswith(".gz") else open
    with opener(spec, "rb") as fh:
        try:
            yield from enumerate(fh, start=1)
        except (OSError, EOFError) as e:  # corrupt gzip
            raise InputError(spec, None, f"cannot read: {e}") from None


def _iter_hf(spec: str) -> Iterator[tuple[int, Any]]:
    """``hf:NAME[:CONFIG]:SPLIT`` through ``datasets.load_dataset``; rows count as lines."""
    parts = spec[3:].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"bad dataset spec {spec!r}: expected hf:NAME[:CONFIG]:SPLIT")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    import datasets  # slow import, only when asked for

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds
        raise InputError(spec, None, f"cannot load dataset: {type(e).__name__}: {e}") from None
    for i, row in enumerate(ds, start=1):
        yield i, dict(row)


def iter_json(spec: str) -> Iterator[tuple[int, Any, bytes | None, Exception | None]]:
    """Yield (line number, decoded value, raw line, decode error) for every non-blank line."""
    if spec.startswith("hf:"):
        for i, row in _iter_hf(spec):
            yield i, row, None, None
        return
    for lineno, raw in _iter_file_lines(spec):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, None, raw, RecordError(f"not valid UTF-8 (byte {e.start})")
            continue
        try:
            yield lineno, json.loads(text), raw, None
        except json.JSONDecodeError as e:
            yield lineno, None, raw, RecordError(f"malformed JSON: {e.msg} (column {e.colno})")


@dataclass
class ReadStats:
    read: int = 0
    skipped: int = 0
    rejected_lines: list[bytes] = field(default_factory=list)


class RecordReader:
    """Iterate validated records of a file; stop at the first bad one or skip and keep it.

    ``on_error="skip"`` counts bad lines in ``stats`` and keeps their raw bytes for ``--rejects``.
    """

    def __init__(self, spec: str, kinds: tuple[str, ...] | None = None, on_error: str = "stop"):
        if on_error not in ("stop", "skip"):
            raise UsageError(f"--on-error must be 'stop' or 'skip', got {on_error!r}")
        self.spec, self.kinds, self.on_error = spec, kinds, on_error
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[Example]:
        name = source_name(self.spec)
        seen = 0
        for lineno, obj, raw, err in iter_json(self.spec):
            seen += 1
            if err is None:
                try:
                    ex = parse_record(obj, self.kinds)
                except RecordError as e:
                    err = e
            if err is not None:
                if self.on_error == "stop":
                    raise InputError(name, lineno, str(err))
                self.stats.skipped += 1
                line = raw if raw is not None else (json.dumps(obj, ensure_ascii=False) + "\n").encode()
                self.stats.rejected_lines.append(line if line.endswith(b"\n") else line + b"\n")
                continue
            self.stats.read += 1
            ex.line = lineno
            yield ex
        if seen == 0:
            raise InputError(name, 1 if self.spec != "-" else None, "empty input: no records")


def read_records(
    spec: str, kinds: tuple[str, ...] | None = None, on_error: str = "stop", rejects: str | None = None
) -> tuple[list[Example], ReadStats]:
    """Read a whole file; write the skipped lines to ``rejects`` (atomically) when given."""
    reader = RecordReader(spec, kinds, on_error)
    examples = list(reader)
    if rejects:
        write_bytes_atomic(rejects, b"".join(reader.stats.rejected_lines))
    return examples, reader.stats


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


@contextmanager
def atomic_output(path: str | None, mode: str = "w") -> Iterator[IO]:
    """A file handle whose file appears only if the block finishes (temp file, then rename).

    ``None`` or ``-`` writes to stdout. A ``.gz`` path is gzip-compressed.
    """
    if path in (None, "-"):
        yield sys.stdout if "b" not in mode else sys.stdout.buffer
        sys.stdout.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rlhfkit-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        if path.endswith(".gz"):
            fh = gzip.open(tmp, mode + ("t" if "b" not in mode else ""), encoding=None if "b" in mode else "utf-8")
        else:
            fh = open(tmp, mode, encoding=None if "b" in mode else "utf-8")
        with fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_records(path: str | None, records: Iterable[dict]) -> int:
    n = 0
    with atomic_output(path) as fh:
        for r in records:
            fh.write(_dumps(r))
            n += 1
    return n


def write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_output(path, "wb") as fh:
        fh.write(data)


def write_json_atomic(path: str, obj: Any) -> None:
    with atomic_output(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def summary(**fields: Any) -> None:
    """The one-line JSON summary every subcommand ends with, on stderr."""
    sys.stderr.write(json.dumps(fields, ensure_ascii=False, default=str) + "\n")
    sys.stderr.flush()
