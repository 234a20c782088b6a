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
# The paper recipes' tiny runs (tests/test_paper_recipes.py, `make test-recipes`) are chains of 10-60
# short processes each, most of their time one core importing torch. They start when collection ends,
# in RECIPE_LANES background lanes (default 2: one per core), and their tests wait for their own run.
# Only the runs that selected tests ask for (marker `recipe_run`) start.

class RecipeLanes:
    def __init__(self, jobs: dict, base: Path, lanes: int):
        import queue
        import threading

        self.jobs, self.base = jobs, base
        self.done = {key: threading.Event() for key in jobs}
        self.results: dict = {}
        self.running: dict = {}
        self.stopped = False
        self.todo: queue.Queue = queue.Queue()
        for key in jobs:
            self.todo.put(key)
        self.threads = [threading.Thread(target=self._lane, daemon=True) for _ in range(max(1, lanes))]

    def start(self):
        for t in self.threads:
            t.start()

    def _lane(self):
        import queue
        import threading
        import time

        while True:
            try:
                key = self.todo.get_nowait()
            except queue.Empty:
                return
            recipe, env, guard = self.jobs[key]
            out = self.base / key
            t0 = time.time()
            if self.stopped:
                self.results[key] = (None, out, 0.0)
            else:
                proc = subprocess.Popen(["bash", str(recipe)], env={**env, "OUT": str(out)}, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, cwd=recipe.parents[1], start_new_session=True)
                self.running[threading.get_ident()] = proc
                try:
                    _, err = proc.communicate(timeout=guard)
                    self.results[key] = (subprocess.CompletedProcess(recipe, proc.returncode, "", err), out,
                                         time.time() - t0)
                except subprocess.TimeoutExpired:
                    self._kill(proc)
                    self.results[key] = (None, out, time.time() - t0)
            self.done[key].set()

    @staticmethod
    def _kill(proc):
        import signal

        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def wait(self, key: str, timeout: float):
        assert self.done[key].wait(timeout), f"recipe run {key} did not finish within {timeout} s"
        return self.results[key]

    def stop(self):
        self.stopped = True
        for proc in list(self.running.values()):
            self._kill(proc)


_LANES: RecipeLanes | None = None


def pytest_collection_modifyitems(config, items):
    """Tests that read a background recipe run go last (their runs need the time the others take)."""
    marked = [i for i in items if i.get_closest_marker("recipe_run")]
    items[:] = [i for i in items if not i.get_closest_marker("recipe_run")] + marked


def pytest_collection_finish(session):
    global _LANES
    keys = [m.args[0] for i in session.items for m in i.iter_markers("recipe_run")]
    if not keys or session.config.option.collectonly:
        return
    import tempfile

    from test_paper_recipes import RECIPE_JOBS

    jobs = {k: RECIPE_JOBS[k] for k in dict.fromkeys(keys) if k in RECIPE_JOBS}  # none without ../shared/data
    if not jobs:
        return
    _LANES = RecipeLanes(jobs, Path(tempfile.mkdtemp(prefix="rlhfkit-recipes-")), int(os.environ.get("RECIPE_LANES", "2")))
    _LANES.start()


def pytest_sessionfinish(session, exitstatus):
    if _LANES is not None:
        import shutil

        _LANES.stop()
        for t in _LANES.threads:
            t.join(timeout=60)
        shutil.rmtree(_LANES.base, ignore_errors=True)


@pytest.fixture
def recipe_lanes():
    if _LANES is None:
        pytest.skip("no background recipe run was started for this selection")
    return _LANES
