"""Issue 15: a newcomer's first day: --config, progress in logs, other datasets' fields, honest help."""

import gzip
import json
import os
import subprocess
import sys
import time

import pytest

from rlhfkit import synth

from conftest import cli, cli_proc, last_json_line, read_jsonl, write_jsonl


@pytest.fixture
def pairs(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", synth.pairs(16, 0.0, seed=0))


# ---------------------------------------------------------------- 1. --config

def test_flags_win_over_config_and_values_take_the_options_type(tmp_path, pairs):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1e-4\nbatch-size: 4\nmax_steps: 1\n")  # 1e-4 is a string to YAML 1.1
    r = cli("train-rm", pairs, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--config", cfg, "--batch-size", 2,
            "--save-steps", 0)
    assert r.exit_code == 0, r.stderr
    used = json.loads((tmp_path / "rm" / "rlhfkit.json").read_text())["config"]
    assert used["lr"] == 1e-4 and isinstance(used["lr"], float)
    assert used["batch_size"] == 2  # the command line wins
    assert used["max_steps"] == 1


@pytest.mark.parametrize("content, message", [
    ("bogus: 1\n", "unknown key 'bogus'"),
    ("batch_size: many\n", "key 'batch_size'"),
    ("lr: -1\n", "key 'lr'"),
])
def test_bad_config_is_a_clear_error(tmp_path, pairs, content, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    r = cli_proc("train-rm", pairs, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--config", cfg)
    assert r.returncode == 2 and f"{cfg}: " in r.stderr and message in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- 2. progress when stderr is a file

def test_train_rm_logs_progress_lines_while_it_runs(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(200, 0.0, seed=0))
    log = tmp_path / "stderr.log"
    env = dict(os.environ, RLHFKIT_PROGRESS_SECONDS="0.5")
    with open(log, "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "rlhfkit", "train-rm", str(data), "--model", "tiny-gpt", "--out",
                              str(tmp_path / "rm"), "--batch-size", "2", "--epochs", "2", "--save-steps", "0"],
                             stderr=err, env=env)
        seen_while_running = False
        while p.poll() is None:
            if "train-rm: " in log.read_text():
                seen_while_running = True
            time.sleep(0.1)
    assert p.returncode == 0
    lines = [line for line in log.read_text().splitlines() if line.startswith("train-rm: ")]
    assert seen_while_running and len(lines) >= 10  # every 10% at least
    assert "200/200 (100%)" in lines[-1] and "loss" in lines[-1] and "ETA" in lines[-1]


def test_plain_progress_prints_every_tenth_and_on_time():
    import io

    from rlhfkit.progress import PlainProgress

    now = [0.0]
    out = io.StringIO()
    bar = PlainProgress("job", 100, stream=out, interval=30, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.1
        bar.advance(1)
    assert len(out.getvalue().splitlines()) == 10
    out.truncate(0)
    slow = PlainProgress("slow", 1000, stream=out, interval=30, clock=lambda: now[0])
    for _ in range(50):
        now[0] += 1.0  # 50 s for 5% of the work: lines at 30 s even before any 10% mark
        slow.advance(1)
    assert "slow: 30/1000" in out.getvalue()


# ---------------------------------------------------------------- 3. other datasets' field names and formats

def test_fields_map_other_datasets_names(tmp_path):
    rows = [{"question": r["prompt"], "response_j": r["chosen"], "response_k": r["rejected"], "qid": i}
            for i, r in enumerate(synth.pairs(12, 0.0, seed=0))]
    data = write_jsonl(tmp_path / "se.jsonl", rows)
    r = cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 1, "--save-steps", 0,
            "--fields", "prompt=question,chosen=response_j,rejected=response_k")
    assert r.exit_code == 0, r.stderr
    v = read_jsonl(cli("validate", data, "--fields", "prompt=question,chosen=response_j,rejected=response_k").stdout)
    assert v[0]["chosen"] == rows[0]["response_j"] and v[0]["qid"] == 0 and "response_j" not in v[0]
    r = cli("validate", data, "--fields", "prompt=question,chosen=nope,rejected=response_k")
    assert r.exit_code == 2 and "field 'nope'" in r.stderr


def test_json_array_files_and_label_tests(tmp_path):
    arr = [{"instruction": "q1", "output_1": "a", "output_2": "b", "preference": 1},
           {"instruction": "q2", "output_1": "c", "output_2": "d", "preference": 2}]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(arr, indent=2))
    r = cli("validate", path, "--fields", "prompt=instruction,chosen=output_1,rejected=output_2,label=preference==1")
    assert r.exit_code == 0, r.stderr
    # preference 2 (output_2 better): label 0, read as the swap with label 1
    assert [(x["chosen"], x["label"]) for x in read_jsonl(r.stdout)] == [("a", 1.0), ("d", 1.0)]


def test_gzip_on_stdin_and_saved_and_parquet_datasets(tmp_path):
    rows = list(synth.pairs(5, 0.0, seed=0))
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    p = subprocess.run([sys.executable, "-m", "rlhfkit", "validate", "-"], input=blob, capture_output=True)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 5

    import datasets

    ds = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    r = cli("validate", f"hf:{tmp_path / 'saved'}:train")
    assert r.exit_code == 0, r.stderr
    assert len(read_jsonl(r.stdout)) == 5
    ds.to_parquet(str(tmp_path / "pairs.parquet"))
    r = cli("validate", f"hf:{tmp_path / 'pairs.parquet'}:train")
    assert r.exit_code == 0, r.stderr
    assert [x["chosen"] for x in read_jsonl(r.stdout)] == [x["chosen"] for x in rows]


# ---------------------------------------------------------------- 4. prompts extract on real HH, generate keeps fields

def test_prompts_extract_skips_records_without_a_prompt(tmp_path):
    hh = [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
          {"chosen": "\n\nHuman: empty?\n\nAssistant:", "rejected": "\n\nHuman: empty?\n\nAssistant: no"}]
    data = write_jsonl(tmp_path / "hh.jsonl", hh)
    assert cli("prompts", data, "--kind", "extract").exit_code == 2
    r = cli("prompts", data, "--kind", "extract", "--on-error", "skip", "--rejects", tmp_path / "rej.jsonl")
    assert r.exit_code == 0, r.stderr
    assert [x["prompt"] for x in read_jsonl(r.stdout)] == ["\n\nHuman: hi\n\nAssistant:"]
    assert last_json_line(r.stderr)["skipped"] == 1 and len(read_jsonl(tmp_path / "rej.jsonl")) == 1


def test_generate_keeps_the_input_records_fields(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"id": "q7", "prompt": "hello", "topic": "greeting"},
                                             {"id": "q8", "prompt": "bye", "topic": "farewell"}])
    r = cli("generate", data, "--policy", "tiny-gpt", "--max-new-tokens", 3, "--n", 2)
    assert r.exit_code == 0, r.stderr
    out = read_jsonl(r.stdout)
    assert [(x["id"], x["topic"], x["sample"]) for x in out] == [("q7", "greeting", 0), ("q7", "greeting", 1),
                                                                  ("q8", "farewell", 0), ("q8", "farewell", 1)]


# ---------------------------------------------------------------- 6. honest help

def test_version():
    r = cli_proc("--version")
    assert r.returncode == 0 and r.stdout.startswith("rlhfkit ")


def test_every_option_of_every_command_has_help():
    from typer.main import get_command

    from rlhfkit.cli import app

    missing = []

    def walk(command, path):
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}")
            if getattr(param, "metavar", None) and "<" in str(param.metavar):
                missing.append(f"{path} {param.opts[0]} (metavar {param.metavar})")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(get_command(app), "rlhfkit")
    assert not missing, "options without help:\n" + "\n".join(missing)


def test_command_list_is_not_cut_mid_sentence():
    r = cli_proc("--help")
    for line in r.stdout.splitlines():
        if line.startswith("  ") and "..." in line:
            raise AssertionError(f"cut off: {line.strip()}")
