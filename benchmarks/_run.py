"""Helpers for the reproduction scripts: run an rlhfkit stage and read what it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def rlhfkit(*args) -> tuple[str, dict]:
    """Run `python -m rlhfkit ARGS`; return stdout and the JSON summary on stderr's last line (if any)."""
    p = subprocess.run([sys.executable, "-m", "rlhfkit", *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"rlhfkit {args[0]} failed with status {p.returncode}")
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    return p.stdout, (json.loads(last) if last.startswith("{") else {})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows) -> None:
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
