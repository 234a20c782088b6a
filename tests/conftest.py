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


def cli_proc(*args, input=None, env=None, timeout=1800):
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


# ---------------------------------------------------------------- paper recipes, run in the background
# The paper recipes' tiny runs (tests/test_paper_recipes.py) are a chain of 10-60 short processes each,
# about 15 minutes in all, most of it one core importing torch. They start when collection ends, one
# after another in a background lane, while the rest of the suite uses the other core; their tests run
# last and wait for their own run. Only the runs that selected tests ask for (marker `recipe_run`) start.

class RecipeLane:
    def __init__(self, jobs: dict, base: Path):
        import threading

        self.jobs, self.base = jobs, base
        self.done = {key: threading.Event() for key in jobs}
        self.results: dict = {}
        self.current = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run_all, daemon=True)

    def _run_all(self):
        import time

        for key, (recipe, env, guard) in self.jobs.items():
            out = self.base / key
            t0 = time.time()
            if self.stopped:
                self.results[key] = (None, out, 0.0)
            else:
                try:
                    self.current = subprocess.Popen(["bash", str(recipe)], env={**env, "OUT": str(out)},
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                                    cwd=recipe.parents[1], start_new_session=True)
                    _, err = self.current.communicate(timeout=guard)
                    self.results[key] = (subprocess.CompletedProcess(recipe, self.current.returncode, "", err), out,
                                         time.time() - t0)
                except subprocess.TimeoutExpired:
                    self._kill()
                    self.results[key] = (None, out, time.time() - t0)
            self.done[key].set()

    def _kill(self):
        import signal

        if self.current is not None and self.current.poll() is None:
            try:
                os.killpg(self.current.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.current.wait()

    def wait(self, key: str, timeout: float):
        assert self.done[key].wait(timeout), f"recipe run {key} did not finish within {timeout} s"
        return self.results[key]

    def stop(self):
        self.stopped = True
        self._kill()


_LANE: RecipeLane | None = None


def pytest_collection_modifyitems(config, items):
    """Tests that read a background recipe run go last (their runs need the time the others take)."""
    marked = [i for i in items if i.get_closest_marker("recipe_run")]
    items[:] = [i for i in items if not i.get_closest_marker("recipe_run")] + marked


def pytest_collection_finish(session):
    global _LANE
    keys = [m.args[0] for i in session.items for m in i.iter_markers("recipe_run")]
    if not keys or session.config.option.collectonly:
        return
    import tempfile

    from test_paper_recipes import RECIPE_JOBS

    jobs = {k: RECIPE_JOBS[k] for k in dict.fromkeys(keys) if k in RECIPE_JOBS}  # none without ../shared/data
    if not jobs:
        return
    _LANE = RecipeLane(jobs, Path(tempfile.mkdtemp(prefix="rlhfkit-recipes-")))
    _LANE.thread.start()


def pytest_sessionfinish(session, exitstatus):
    if _LANE is not None:
        import shutil

        _LANE.stop()
        _LANE.thread.join(timeout=60)
        shutil.rmtree(_LANE.base, ignore_errors=True)


@pytest.fixture
def recipe_lane():
    if _LANE is None:
        pytest.skip("no background recipe run was started for this selection")
    return _LANE
