"""Issue 14: what an attacker or a careless user does, end to end through the real command line.

The fault table runs every subcommand on bad invocations in subprocesses (in parallel) and checks
exit status 2, a one-line `rlhfkit: error:` message and no traceback. The tests after it cover
resume safety, outputs that never clobber, and the judge's failure modes.
"""

import json
import os
import pickle
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlhfkit import synth

from conftest import cli, cli_proc, read_jsonl, write_jsonl


class Planted:
    """A pickle that runs code when unpickled: it creates the file it names."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files the table's invocations point at: data, a trained tiny reward model, a checkpointed PPO run."""
    d = tmp_path_factory.mktemp("faults")
    pairs = write_jsonl(d / "pairs.jsonl", synth.pairs(12, 0.0, seed=0))
    write_jsonl(d / "other.jsonl", synth.pairs(12, 0.0, seed=5))
    write_jsonl(d / "strength.jsonl", [dict(r, strength_mean=0.5) for r in read_jsonl(pairs)])
    write_jsonl(d / "gens.jsonl", [{"id": "1", "prompt": "p", "response": "r"}])
    nan = d / "nan.jsonl"
    nan.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "strength_mean": NaN}\n'
                   '{"prompt": "p", "responses": ["a", "b"], "scores": [1, Infinity]}\n')
    nan_margin = d / "nan_margin.jsonl"
    nan_margin.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": -Infinity}\n')
    (d / "adir").mkdir()
    (d / "afile").write_text("x")
    rm = d / "rm"
    assert cli("train-rm", pairs, "--model", "tiny-gpt", "--out", rm, "--max-steps", 3, "--save-steps", 1).exit_code == 0
    prompts = d / "prompts.txt"
    prompts.write_text("hi\nthere\n")
    ppo = d / "ppo"
    assert cli("ppo", "--policy", "tiny-gpt", "--reward", REWARD, "--prompts", prompts, "--out", ppo,
               "--steps", 2, "--batch-size", 2, "--mini-batch-size", 2, "--max-new-tokens", 3,
               "--save-steps", 1).exit_code == 0
    return d


REWARD = f"{Path(__file__).with_name('scripted_rewards.py')}:nothing"


def table(d):
    p, s, g = d / "pairs.jsonl", d / "strength.jsonl", d / "gens.jsonl"
    tiny = ["--model", "tiny-gpt", "--max-steps", 1, "--save-steps", 0]
    ppo = ["--policy", "tiny-gpt", "--reward", REWARD, "--prompts", d / "prompts.txt",
           "--steps", 1, "--batch-size", 2, "--mini-batch-size", 2, "--max-new-tokens", 2]
    judge = ["judge", g, g, "--judge-model", "m", "--base-url", "http://127.0.0.1:9/v1"]
    return {
        "input is a directory": (["validate", d / "adir"], "is a directory"),
        "input missing": (["score", d / "nope.jsonl", "--reward", d / "rm"], "no such file"),
        "NaN strength and Infinity score": (["validate", d / "nan.jsonl"], "NaN or Infinity"),
        "-Infinity margin": (["train-rm", d / "nan_margin.jsonl", *tiny, "--out", d / "o1"], "NaN or Infinity"),
        "unknown model alias": (["train-rm", p, "--model", "tiny-gtp", "--out", d / "o2"], "tiny-gtp"),
        "train-rm --out a file": (["train-rm", p, *tiny, "--out", d / "afile"], "not a directory"),
        "ppo --out a file": (["ppo", *ppo, "--out", d / "afile"], "not a directory"),
        "ensemble --out a file": (["ensemble", p, "--model", "tiny-gpt", "--out", d / "afile"], "not a directory"),
        "score --out a directory, before any model": (["score", p, "--reward", d / "missing-rm", "--out", d / "adir"],
                                                     "is a directory"),
        "strength --out a directory": (["strength", p, "--model", "tiny-gpt", "--out", d / "adir"], "is a directory"),
        "clean --out == --rejects": (["clean", s, "--drop-below", 0, "--out", d / "x.jsonl", "--rejects", d / "x.jsonl"],
                                     "same file"),
        "clean without strength": (["clean", p, "--flip"], "strength_mean"),
        "--heads 0": (["ensemble", p, "--model", "tiny-gpt", "--heads", 0, "--out", d / "o3"], "--heads"),
        "--batch-size 0": (["train-rm", p, *tiny, "--batch-size", 0, "--out", d / "o4"], "--batch-size"),
        "negative --max-new-tokens": (["generate", g, "--policy", "tiny-gpt", "--max-new-tokens", -3], "--max-new-tokens"),
        "--concurrency 0": ([*judge, "--concurrency", 0], "--concurrency"),
        "--max-retries -1": ([*judge, "--max-retries", -1], "--max-retries"),
        "--timeout 0": ([*judge, "--timeout", 0], "--timeout"),
        "judge --template missing": ([*judge, "--template", d / "none.txt"], "none.txt"),
        "judge --cache a directory": ([*judge, "--cache", d / "adir"], "--cache"),
        "--lr 0": (["ppo", *ppo, "--lr", 0, "--out", d / "o5"], "--lr"),
        "--top-p 1.5": (["metrics", "generation", "--policy", "tiny-gpt", "--ref", "tiny-gpt", "--prompts", g,
                         "--top-p", 1.5], "--top-p"),
        "ENOSPC while writing": (["synth", "--n", 2000, "--out", "/dev/full"], "No space left"),
        "train-rm resume with other data": (["train-rm", d / "other.jsonl", "--model", "tiny-gpt", "--max-steps", 3,
                                             "--save-steps", 1, "--out", d / "rm", "--resume"], "data_fingerprint"),
        "ppo resume with other settings": (["ppo", *ppo[:-8], "--steps", 3, "--batch-size", 2, "--mini-batch-size", 2,
                                            "--max-new-tokens", 3, "--lr", 3e-5, "--out", d / "ppo", "--resume"], "lr"),
        "unknown subcommand": (["no-such-stage"], "No such command"),
        "bad flag": (["synth", "--bogus"], "--bogus"),
    }


def test_fault_table_exits_2_with_one_line_and_no_traceback(world):
    cases = table(world)
    env = dict(os.environ, HF_HUB_OFFLINE="1")

    def run(item):
        name, (args, expect) = item
        p = subprocess.run([sys.executable, "-m", "rlhfkit", *map(str, args)], capture_output=True, text=True,
                           env=env, timeout=300, cwd=Path(__file__).resolve().parents[1])
        return name, p, expect

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases.items()))
    problems = []
    for name, p, expect in results:
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("rlhfkit: error:")]
        if p.returncode != 2 or "Traceback" in p.stderr or len(errors) != 1 or expect not in errors[0]:
            problems.append(f"{name}: exit {p.returncode}, stderr: {p.stderr[-600:]!r}")
    assert not problems, "\n".join(problems)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # written through, never replaced by a file
    assert not any((world / f"o{i}").exists() for i in range(1, 6))  # nothing half-made


# ---------------------------------------------------------------- resume: safe and only for the same run

def test_a_planted_pickle_is_never_run_on_resume(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(12, 0.0, seed=0))
    args = ["train-rm", data, "--model", "tiny-gpt", "--max-steps", 4, "--save-steps", 1, "--out", tmp_path / "rm"]
    assert cli(*args).exit_code == 0
    last = sorted((tmp_path / "rm" / "checkpoints").glob("step-*"))[-1]
    # a checkpoint is safetensors and JSON only: nothing else in it is ever opened
    assert {f.suffix for f in last.iterdir()} <= {".safetensors", ".json"}, sorted(f.name for f in last.iterdir())
    marker = tmp_path / "pwned"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "scheduler.bin"):  # what accelerate would unpickle
        (last / name).write_bytes(pickle.dumps(Planted(marker)))
    r = cli_proc(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert not marker.exists()
    (last / "optimizer.pt").write_bytes(pickle.dumps(Planted(marker)))
    r = cli_proc(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


def test_ppo_never_runs_a_planted_pickle(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    args = ["ppo", "--policy", "tiny-gpt", "--reward", REWARD, "--prompts", prompts, "--out", tmp_path / "o",
            "--steps", 2, "--batch-size", 2, "--mini-batch-size", 2, "--max-new-tokens", 2, "--save-steps", 1]
    assert cli(*args).exit_code == 0
    marker = tmp_path / "pwned"
    last = tmp_path / "o" / "checkpoints" / "step-2"
    assert {f.suffix for f in last.iterdir()} <= {".safetensors", ".json"}, sorted(f.name for f in last.iterdir())
    (last / "optimizer.pt").write_bytes(pickle.dumps(Planted(marker)))
    r = cli_proc(*args, "--steps", 3, "--resume")
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


def test_resume_refuses_another_run_and_names_what_differs(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", synth.pairs(12, 0.0, seed=0))
    b = write_jsonl(tmp_path / "b.jsonl", synth.pairs(12, 0.0, seed=1))
    base = ["--model", "tiny-gpt", "--max-steps", 4, "--save-steps", 1, "--out", tmp_path / "rm"]
    assert cli("train-rm", a, *base).exit_code == 0
    r = cli("train-rm", b, *base, "--resume")
    assert r.exit_code == 2 and "data_fingerprint" in r.stderr
    r = cli("train-rm", a, *base, "--resume", "--lr", 1e-3)
    assert r.exit_code == 2 and "lr 1e-05 -> 0.001" in r.stderr
    # the same run, with other logging settings, resumes
    assert cli("train-rm", a, *base, "--resume", "--logging-steps", 1).exit_code == 0


def test_a_torn_log_line_does_not_block_resume(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(12, 0.0, seed=0))
    args = ["train-rm", data, "--model", "tiny-gpt", "--max-steps", 4, "--save-steps", 2, "--logging-steps", 1,
            "--out", tmp_path / "rm"]
    assert cli(*args).exit_code == 0
    log = tmp_path / "rm" / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "lo')  # killed mid-write
    r = cli(*args, "--resume")
    assert r.exit_code == 0, r.stderr
    assert [e["step"] for e in read_jsonl(log)] == [1, 2, 3, 4]


# ---------------------------------------------------------------- outputs that never clobber

def test_out_writes_through_a_fifo_and_keeps_a_symlink(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    r = cli_proc("synth", "--n", 3, "--out", fifo)
    out = reader.communicate(timeout=60)[0]
    assert r.returncode == 0 and len(out.splitlines()) == 3
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)

    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert cli_proc("synth", "--n", 2, "--out", link).returncode == 0
    assert link.is_symlink() and len(target.read_text().splitlines()) == 2
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640  # a replaced file keeps its mode


def test_new_files_follow_the_umask(tmp_path):
    out = tmp_path / "new.jsonl"
    p = subprocess.run(f"umask 022 && {sys.executable} -m rlhfkit synth --n 2 --out {out}", shell=True,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644


def test_rejects_and_out_through_a_link_are_the_same_file(tmp_path):
    data = write_jsonl(tmp_path / "s.jsonl", [dict(r, strength_mean=float(i) - 3) for i, r in enumerate(synth.pairs(6, 0.0, seed=0))])
    (tmp_path / "x.jsonl").write_text("")
    (tmp_path / "y.jsonl").symlink_to(tmp_path / "x.jsonl")
    r = cli("clean", data, "--drop-below", 0, "--out", tmp_path / "x.jsonl", "--rejects", tmp_path / "y.jsonl")
    assert r.exit_code == 2 and "same file" in r.stderr


def test_stale_temp_files_of_dead_writers_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".rlhfkit-{dead.stdout.strip()}-abc.tmp"
    stale.write_text("half")
    live = tmp_path / f".rlhfkit-{os.getpid()}-abc.tmp"  # a live writer's file stays
    live.write_text("busy")
    assert cli("synth", "--n", 2, "--out", tmp_path / "o.jsonl").exit_code == 0
    assert not stale.exists() and live.exists()


def test_sigterm_leaves_no_temp_file(tmp_path):
    import signal
    import time

    out = tmp_path / "big.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "rlhfkit", "synth", "--n", "3000000", "--out", str(out)],
                         stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".rlhfkit-*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    assert p.returncode != 0
    assert not list(tmp_path.glob(".rlhfkit-*")) and not out.exists()


def test_clean_streams_in_flat_memory(tmp_path):
    """clean holds numbers, not records: 20x the records costs far less than 20x the memory."""
    def peak_kb(n):
        rows = "".join(json.dumps(dict(r, strength_mean=0.1, note="x" * 200)) + "\n" for r in synth.pairs(n, 0.0, seed=0))
        path = tmp_path / f"s{n}.jsonl"
        path.write_text(rows)
        code = (f"import resource, sys; sys.argv = ['rlhfkit', 'clean', '{path}', '--flip', '--out', '{tmp_path}/o.jsonl'];"
                "from rlhfkit.cli import main\ntry: main()\nexcept SystemExit: pass\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        return int(p.stderr.strip().splitlines()[-1])

    small, large = peak_kb(5_000), peak_kb(100_000)
    assert large < 1.3 * small, (small, large)


# ---------------------------------------------------------------- the judge survives any reply

def test_malformed_200_answers_are_failed_calls_and_nothing_judged_is_an_error(tmp_path):
    from rlhfkit.judge.testing import FakeJudgeServer

    qs = ["HTML_200 q", "EMPTY_CHOICES q", "ERROR_200 q", "HTML_200_ONCE q", "ERROR_200_ONCE q", "plain q"]
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": str(i), "prompt": q, "response": "[good] a"} for i, q in enumerate(qs)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": str(i), "prompt": q, "response": "b"} for i, q in enumerate(qs)])
    env = dict(os.environ, OPENAI_API_KEY="k")
    with FakeJudgeServer() as server:
        def judge(x, y, out):
            return subprocess.run([sys.executable, "-m", "rlhfkit", "judge", str(x), str(y), "--judge-model", "j",
                                   "--base-url", server.base_url, "--cache", str(tmp_path / "c.sqlite"), "--backoff",
                                   "0.01", "--max-retries", "1", "--out", str(out)], capture_output=True, text=True, env=env)

        p = judge(a, b, tmp_path / "o.jsonl")
        assert p.returncode == 0, p.stderr
        got = {r["prompt"]: r for r in read_jsonl(tmp_path / "o.jsonl")}
        assert [got[q]["verdict"] for q in qs[3:]] == ["A", "A", "A"]
        assert all(got[q]["verdict"] is None and "malformed reply" in got[q]["error"] for q in qs[:3])
        # every pair failing is not a success
        bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "prompt": "HTML_200 x", "response": "r"}])
        p = judge(bad, bad, tmp_path / "o2.jsonl")
        assert p.returncode == 1 and "all 1 pairs failed" in p.stderr


def test_a_killed_runs_scratch_directory_is_swept(tmp_path, monkeypatch):
    import tempfile

    from rlhfkit.io import scratch_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"rlhfkit-ensemble-{dead.stdout.strip()}-xyz"
    (stale / "sub").mkdir(parents=True)
    with scratch_dir("ensemble") as d:
        assert Path(d).is_dir() and not stale.exists()
    assert not Path(d).exists()
