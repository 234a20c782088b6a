"""Reading and writing records: paths, stdin/stdout, .gz, `hf:` datasets, atomic output.

Errors carry the file and line (``InputError``); the CLI turns them into exit status 2.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator

from .fields import FieldMap, field_map  # noqa: F401 - callers import field_map from here
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


GZIP_MAGIC = b"\x1f\x8b"


def _iter_file_lines(spec: str) -> Iterator[tuple[int, bytes]]:
    if spec == "-":
        stream: IO[bytes] = sys.stdin.buffer
        if hasattr(stream, "peek") and stream.peek(2)[:2] == GZIP_MAGIC:  # `zcat`-free pipes: gzip on stdin
            stream = gzip.GzipFile(fileobj=stream)
        try:
            yield from enumerate(stream, start=1)
        except (OSError, EOFError) as e:
            raise InputError("<stdin>", None, f"cannot read: {e}") from None
        return
    if not os.path.exists(spec):
        raise InputError(spec, None, "no such file")
    if os.path.isdir(spec):
        raise InputError(spec, None, "is a directory, expected a JSONL file (or hf:DIR:SPLIT for a saved dataset)")
    with open(spec, "rb") as probe:
        gz = probe.read(2) == GZIP_MAGIC
    opener = gzip.open if gz or spec.endswith(".gz") else open
    with opener(spec, "rb") as fh:
        try:
            yield from enumerate(fh, start=1)
        except (OSError, EOFError) as e:  # corrupt gzip
            raise InputError(spec, None, f"cannot read: {e}") from None


LOCAL_FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


SLICE = re.compile(r"^\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\]$")


def parse_hf_spec(spec: str) -> tuple[str, str | None, dict, str, str | None]:
    """``hf:NAME[:CONFIG][:KEY=VALUE…]:SPLIT[SLICE]`` → (name, config, load_dataset keyword options
    such as data_dir, split, slice). SLICE is the ``datasets`` syntax: ``[:1000]``, ``[10:20]``, ``[-10%:]``."""
    bad = UsageError(f"bad dataset spec {spec!r}: expected hf:NAME[:CONFIG][:data_dir=DIR]:SPLIT[SLICE], "
                     "e.g. hf:Anthropic/hh-rlhf:data_dir=harmless-base:train[:1000]")
    body = spec[3:]
    bracket = body.rfind("[") if body.endswith("]") else -1
    head, part = (body[:bracket], body[bracket:]) if bracket >= 0 else (body, None)
    if part is not None and not SLICE.match(part):
        raise bad
    if ":" not in head:
        raise bad
    name, *items, split = head.split(":")
    if not name or not split:
        raise bad
    config, options = None, {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key.strip() and value.strip():
            options[key.strip()] = _option_value(value.strip())
        elif not sep and item and config is None:
            config = item
        else:
            raise bad
    return name, config, options, split, part


def _option_value(text: str) -> Any:
    """A ``key=value`` option as ``load_dataset`` expects it: true/false as booleans, else the text."""
    return text.lower() == "true" if text.lower() in ("true", "false") else text


def _slice_rows(n: int, spec: str) -> range:
    """The rows a ``[start:stop]`` slice (counts or percentages, negative from the end) selects of ``n``."""
    m = SLICE.match(spec)

    def bound(text: str | None, default: int) -> int:
        if text is None:
            return default
        value = round(n * int(text[:-1]) / 100) if text.endswith("%") else int(text)
        return max(0, min(n, value + n if value < 0 else value))

    return range(bound(m["start"], 0), bound(m["stop"], n))


def _iter_hf(spec: str) -> Iterator[tuple[int, Any]]:
    """``hf:NAME[:CONFIG][:data_dir=DIR]:SPLIT[SLICE]`` as ``datasets`` reads it: a hub id, a local
    dataset directory, a ``save_to_disk`` directory, or a local parquet/JSON/CSV file; rows count
    as lines. ``data_dir=`` picks a subset folder (HH-RLHF's ``harmless-base``), SLICE a part of the split."""
    name, config, options, split, part = parse_hf_spec(spec)
    import datasets  # slow import, only when asked for

    try:
        saved = os.path.isdir(name) and any(os.path.exists(os.path.join(name, f)) for f in ("dataset_dict.json", "state.json"))
        local_file = os.path.isfile(name) and os.path.splitext(name.removesuffix(".gz"))[1] in LOCAL_FORMATS
        if (saved or local_file) and (config or options):
            raise UsageError(f"bad dataset spec {spec!r}: a saved dataset or a local file takes no CONFIG or "
                             "key=value options (they are for hub ids and dataset folders)")
        if saved:
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise InputError(spec, None, f"no split {split!r}; the saved dataset has {', '.join(ds)}")
                ds = ds[split]
            if part:  # load_from_disk has no split syntax: select the rows here
                ds = ds.select(_slice_rows(len(ds), part))
        elif local_file:
            builder = LOCAL_FORMATS[os.path.splitext(name.removesuffix(".gz"))[1]]
            ds = datasets.load_dataset(builder, data_files={split: name}, split=split + (part or ""))
        else:
            ds = datasets.load_dataset(name, config, split=split + (part or ""), **options)
    except (InputError, UsageError):
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds
        raise InputError(spec, None, f"cannot load dataset: {type(e).__name__}: {e}") from None
    for i, row in enumerate(ds, start=1):
        yield i, dict(row)


def _iter_json_array(spec: str) -> Iterator[tuple[int, Any, bytes | None, Exception | None]] | None:
    """A ``.json`` file holding one array of records (AlpacaEval's annotations, say); item k counts as line k.
    None when the file is not an array (then it is read as JSON lines)."""
    if spec == "-" or not spec.endswith((".json", ".json.gz")) or not os.path.isfile(spec):
        return None
    opener = gzip.open if spec.endswith(".gz") else open
    with opener(spec, "rb") as fh:
        head = fh.read(4096).lstrip()
    if not head.startswith(b"["):
        return None
    with opener(spec, "rb") as fh:
        try:
            items = json.loads(fh.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(spec, None, f"malformed JSON array: {e}") from None
    return ((k, item, None, None) for k, item in enumerate(items, start=1))


def iter_json(spec: str, fields: "FieldMap | None" = None) -> Iterator[tuple[int, Any, bytes | None, Exception | None]]:
    """Yield (line number, decoded value, raw line, decode error) for every non-blank line, with
    ``fields`` (``--fields``) renaming a dataset's own field names to rlhfkit's."""
    rows: Iterable = _iter_json_array(spec) or _decoded(spec)
    for lineno, obj, raw, err in rows:
        if err is None and fields and isinstance(obj, dict):
            try:
                obj = fields.apply(obj)
            except RecordError as e:
                err = e
            if obj is None and err is None:  # left out by --fields keep=...: counted there
                continue
        yield lineno, obj, raw, err


def _decoded(spec: str) -> Iterator[tuple[int, Any, bytes | None, Exception | None]]:
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
    reoriented: int = 0  # pairs given with label < 0.5, read as their swap
    prompt_in_responses: int = 0  # records whose responses began with the prompt's turns, read once
    left_out: int = 0  # records --fields keep=... left out
    rejected_lines: list[bytes] = field(default_factory=list)

    def counts(self) -> dict:
        """The reading notes worth a summary line's field, where they happened."""
        return {k: v for k, v in (("reoriented", self.reoriented), ("prompt_in_responses", self.prompt_in_responses),
                                  ("left_out", self.left_out)) if v}


class RecordReader:
    """Iterate validated records of a file; stop at the first bad one or skip and keep it.

    ``on_error="skip"`` counts bad lines in ``stats`` and hands their raw bytes to ``on_reject``
    (or keeps them in ``stats.rejected_lines`` when none is given). ``name`` is what error messages
    call the source (a spooled stdin is still ``<stdin>``).
    """

    def __init__(self, spec: str, kinds: tuple[str, ...] | None = None, on_error: str = "stop",
                 on_reject: Callable[[bytes], Any] | None = None, name: str | None = None,
                 fields: FieldMap | None = None, notes: bool = True):
        if on_error not in ("stop", "skip"):
            raise UsageError(f"--on-error must be 'stop' or 'skip', got {on_error!r}")
        self.spec, self.kinds, self.on_error = spec, kinds, on_error
        self.on_reject = on_reject
        self.fields = fields
        self.notes = notes  # the end-of-file notes on stderr (a second pass over the same file: off)
        self.name = name or source_name(spec)
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[Example]:
        name = self.name
        seen = 0
        for lineno, obj, raw, err in iter_json(self.spec, self.fields):
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
                line = line if line.endswith(b"\n") else line + b"\n"
                if self.on_reject is not None:
                    self.on_reject(line)
                else:
                    self.stats.rejected_lines.append(line)
                continue
            self.stats.read += 1
            self.stats.reoriented += ex.reoriented
            self.stats.prompt_in_responses += ex.prompt_in_responses
            ex.line = lineno
            yield ex
        self.stats.left_out = self.fields.left_out if self.fields is not None else 0
        if seen == 0 and self.stats.left_out:
            raise InputError(name, None, f"--fields keep=... left out every one of the {self.fields.left_out} records")
        if seen == 0:
            raise InputError(name, 1 if self.spec != "-" else None, "empty input: no records")
        if not (self.notes and is_main_process()):
            return
        if self.fields is not None:
            for line in self.fields.notes():
                sys.stderr.write(f"rlhfkit: {name}: {line}\n")
        if self.stats.reoriented:
            sys.stderr.write(f"rlhfkit: {name}: {self.stats.reoriented} pair(s) with label < 0.5 (the rejected response "
                             "better) read as their swap: chosen <-> rejected, label 1 - label; outputs state them so\n")
        if self.stats.prompt_in_responses:
            sys.stderr.write(f"rlhfkit: {name}: {self.stats.prompt_in_responses} record(s) whose responses already begin "
                             "with the prompt's turns (UltraFeedback's form): the prompt is read once\n")


@contextmanager
def rereadable(spec: str) -> Iterator[str]:
    """A path that can be read twice: the spec itself, or stdin spooled to a temp file (on disk, not
    in memory) that is removed afterwards. For stages that need a first pass over all records."""
    if spec != "-":
        yield spec
        return
    fd, tmp = tempfile.mkstemp(prefix=f"rlhfkit-stdin-{os.getpid()}-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as fh:
            shutil.copyfileobj(sys.stdin.buffer, fh, 1 << 20)
        yield tmp
    finally:
        os.unlink(tmp)


def read_records(
    spec: str, kinds: tuple[str, ...] | None = None, on_error: str = "stop", rejects: str | None = None,
    fields: FieldMap | None = None,
) -> tuple[list[Example], ReadStats]:
    """Read a whole file; write the skipped lines to ``rejects`` (atomically) when given."""
    reader = RecordReader(spec, kinds, on_error, fields=fields)
    examples = list(reader)
    if rejects:
        write_bytes_atomic(rejects, b"".join(reader.stats.rejected_lines))
    return examples, reader.stats


# ---------------------------------------------------------------- outputs, checked before any work

def check_file_output(path: str | None, flag: str = "--out") -> None:
    """A record file to be written: stdout, a new path, a file, or a stream (FIFO, device); not a directory."""
    if path in (None, "-"):
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory, expected a file")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: {parent} is not a directory")


def check_dir_output(path: str, flag: str = "--out") -> None:
    """A model or run directory to be written: a new path or an existing directory, never a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: exists and is not a directory (this output is a directory)")


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_distinct_outputs(**paths: str | None) -> None:
    """Two outputs may not be one file (same path, or one through a link): one would overwrite the other."""
    given = [(flag, p) for flag, p in paths.items() if p not in (None, "-")]
    for i, (fa, a) in enumerate(given):
        for fb, b in given[i + 1:]:
            if _same_file(a, b):
                raise UsageError(f"--{fa.replace('_', '-')} and --{fb.replace('_', '-')} name the same file ({a}, {b}): "
                                 "one would overwrite the other")


def _dumps(record: dict) -> str:
    """One JSONL line; NaN and ±Infinity are not JSON, so writing one is an error, never a silent line."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


TMP_PREFIX = ".rlhfkit-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temp_files(directory: str) -> int:
    """Remove temp files of rlhfkit processes that died without cleaning up (kill -9); returns how many.
    Names carry the writer's pid (``.rlhfkit-PID-XXXX.tmp``), so a live writer's file is never touched."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(TMP_PREFIX) and name.endswith(".tmp")):
            continue
        pid = name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(directory, name))
                removed += 1
            except OSError:
                pass
    return removed


@contextmanager
def scratch_dir(kind: str) -> Iterator[str]:
    """A temp directory removed on every exit path Python sees (SIGTERM included, see the CLI); one
    left by a killed run (kill -9) is swept by the next run, which knows it by its dead pid."""
    root = tempfile.gettempdir()
    prefix = f"rlhfkit-{kind}-"
    for name in os.listdir(root):
        pid = name[len(prefix):].split("-", 1)[0] if name.startswith(prefix) else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _open_text_or_binary(path: str, mode: str, gz: bool = False) -> IO:
    if gz:
        return gzip.open(path, mode + ("t" if "b" not in mode else ""), encoding=None if "b" in mode else "utf-8")
    return open(path, mode, encoding=None if "b" in mode else "utf-8")


@contextmanager
def atomic_output(path: str | None, mode: str = "w") -> Iterator[IO]:
    """A file handle whose file appears only if the block finishes (temp file, then rename).

    ``None`` or ``-`` writes to stdout. A ``.gz`` path is gzip-compressed. A FIFO, a device or
    another non-regular file is a stream: written through, never replaced. A symlink keeps pointing
    where it did: its target is replaced. New files get the user's umask; a replaced file keeps its mode.
    """
    if path in (None, "-"):
        yield sys.stdout if "b" not in mode else sys.stdout.buffer
        sys.stdout.flush()
        return
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, expected a file to write")
    if os.path.exists(path) and not os.path.isfile(path):  # FIFO, /dev/stdout, /dev/null, ...
        try:
            with _open_text_or_binary(path, mode, path.endswith(".gz")) as fh:
                yield fh
        except OSError as e:
            e.filename = e.filename or path
            raise
        return
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    sweep_stale_temp_files(directory)
    perms = (os.stat(target).st_mode & 0o7777) if os.path.exists(target) else (0o666 & ~_umask())
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with _open_text_or_binary(tmp, mode, path.endswith(".gz")) as fh:
            yield fh
        os.chmod(tmp, perms)
        os.replace(tmp, target)
    except OSError as e:
        e.filename = e.filename if e.filename and e.filename != tmp else path
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
        json.dump(obj, fh, indent=2, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def finite_or_none(value: Any) -> Any:
    """NaN and ±Infinity (an AUROC without positives, say) become null: the summary stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def is_main_process() -> bool:
    """False in every process but the first of a multi-process launch (torchrun, accelerate launch)."""
    return os.environ.get("RANK", "0") == "0"


def summary(**fields: Any) -> None:
    """The one-line JSON summary every subcommand ends with, on stderr (once, from the main process)."""
    if not is_main_process():
        return
    sys.stderr.write(json.dumps(finite_or_none(fields), ensure_ascii=False, default=str) + "\n")
    sys.stderr.flush()
