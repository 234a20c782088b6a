"""Input handling through the CLI: formats, bad input (exit 2, FILE:LINE, no output), skip mode."""

import gzip
import json

import pytest

from conftest import cli, last_json_line, read_jsonl, write_jsonl

GOOD = {"prompt": "p", "chosen": "a", "rejected": "b"}

BAD_CASES = {
    "malformed-json": (b'{"prompt": "p", "chosen": "a"\n', "malformed JSON"),
    "not-an-object": (b'["a", "b"]\n', "expected a JSON object"),
    "missing-field": (b'{"prompt": "p", "chosen": "a"}\n', "field 'rejected': missing"),
    "wrong-type": (b'{"prompt": "p", "chosen": "a", "rejected": 7}\n', "field 'rejected': expected a string"),
    "empty-chosen": (b'{"prompt": "p", "chosen": "", "rejected": "b"}\n', "field 'chosen': is empty"),
    "identical": (b'{"prompt": "p", "chosen": "a", "rejected": "a"}\n', "field 'rejected': is identical"),
    "short-ranking": (b'{"prompt": "p", "responses": ["a"]}\n', "field 'responses': a ranking needs at least 2"),
    "non-utf8": (b'{"prompt": "p", "chosen": "caf\xe9", "rejected": "b"}\n', "not valid UTF-8"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_names_file_and_line_and_writes_nothing(tmp_path, case):
    bad_line, message = BAD_CASES[case]
    data = tmp_path / "data.jsonl"
    data.write_bytes((json.dumps(GOOD) + "\n").encode() * 2 + bad_line)
    out = tmp_path / "out.jsonl"
    r = cli("validate", data, "--out", out)
    assert r.exit_code == 2
    assert f"{data}:3: " in r.stderr and message in r.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [data]  # no temp file left behind either


def test_empty_file_is_an_error(tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n\n")
    out = tmp_path / "out.jsonl"
    r = cli("validate", data, "--out", out)
    assert r.exit_code == 2 and f"{data}:1: empty input" in r.stderr
    assert not out.exists()


def test_missing_file_is_an_error(tmp_path):
    r = cli("validate", tmp_path / "nope.jsonl")
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_skip_mode_saves_exactly_the_bad_lines(tmp_path):
    bad = [case[0] for case in BAD_CASES.values()]
    good = [(json.dumps({**GOOD, "chosen": f"a{i}"}) + "\n").encode() for i in range(3)]
    lines = [good[0], bad[0], bad[1], good[1], *bad[2:], good[2]]
    data = tmp_path / "data.jsonl"
    data.write_bytes(b"".join(lines))
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    r = cli("validate", data, "--out", out, "--on-error", "skip", "--rejects", rejects)
    assert r.exit_code == 0, r.stderr
    assert rejects.read_bytes() == b"".join(bad)
    assert [rec["chosen"] for rec in read_jsonl(out)] == ["a0", "a1", "a2"]
    s = last_json_line(r.stderr)
    assert s["read"] == 3 and s["skipped"] == len(bad)


def test_stdin_gzip_and_passthrough(tmp_path):
    records = [{**GOOD, "chosen": f"c{i}", "extra": {"nested": i}} for i in range(4)]
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    from_gz = read_jsonl(cli("validate", gz).stdout)
    from_stdin = read_jsonl(cli("validate", "-", input="".join(json.dumps(r) + "\n" for r in records)).stdout)
    assert from_gz == from_stdin
    for rec, orig in zip(from_gz, records):
        assert {k: rec[k] for k in orig} == orig and "id" in rec


def test_gzip_output(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    out = tmp_path / "o.jsonl.gz"
    assert cli("validate", data, "--out", out).exit_code == 0
    with gzip.open(out, "rt") as fh:
        assert json.loads(fh.readline())["chosen"] == "a"


def test_hf_dataset_spec_reads_a_local_dataset(tmp_path):
    ds_dir = tmp_path / "myset"
    ds_dir.mkdir()
    write_jsonl(ds_dir / "train.jsonl", [GOOD, {**GOOD, "chosen": "z"}])
    r = cli("validate", f"hf:{ds_dir}:train")
    assert r.exit_code == 0, r.stderr
    assert [x["chosen"] for x in read_jsonl(r.stdout)] == ["a", "z"]
    assert cli("validate", "hf:justname").exit_code == 2


def test_closed_pipe_ends_quietly():
    import subprocess
    import sys

    p = subprocess.run(
        f"{sys.executable} -m rlhfkit synth --n 20000 | head -1", shell=True, capture_output=True, text=True
    )
    assert len(p.stdout.splitlines()) == 1
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


def test_help_lists_every_subcommand():
    r = cli("--help")
    for name in ["train-rm", "ensemble", "strength", "clean", "ppo", "judge", "metrics", "score", "synth", "simulate"]:
        assert name in r.stdout


def test_validate_streams_large_inputs(tmp_path):
    """Memory stays flat: validating 20x more records does not take 20x more memory."""
    import subprocess
    import sys

    big = tmp_path / "big.jsonl"
    with big.open("w") as fh:
        for i in range(200_000):
            fh.write(json.dumps({"prompt": "p" * 50, "chosen": f"a{i}" * 20, "rejected": "b" * 40}) + "\n")
    code = ("import resource, sys; from rlhfkit.cli import main; sys.argv = ['rlhfkit', 'validate', sys.argv[1], '--out', "
            "sys.argv[2]]\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    small = tmp_path / "small.jsonl"
    small.write_text("".join(big.read_text().splitlines(keepends=True)[:10_000]))
    rss = {}
    for name, path in (("small", small), ("big", big)):
        p = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / f"{name}.out")], capture_output=True, text=True)
        rss[name] = int(p.stderr.strip().splitlines()[-1])
    assert rss["big"] < rss["small"] * 1.5, rss  # the big file is 20x larger (~40 MB of records)
