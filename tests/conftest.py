import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Tests never reach for the hub; quiet the libraries' progress bars.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from rlhfkit.cli import app

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cli(*args, input=None):
    """Run a subcommand in-process; returns typer's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def cli_proc(*args, input=None, env=None, timeout=600):
    """Run `python -m rlhfkit` in a subprocess (real stdin/stdout, signals, exit codes)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit", *map(str, args)],
        input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


def write_jsonl(path, records):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path_or_text):
    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else path_or_text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def last_json_line(text):
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} absent (only beside the project's own checkout)")
    return SHARED_DATA
