"""Issue 26: a user's own data reads right (label tests compare numbers, say when they match all or none)."""

import json

from conftest import cli, read_jsonl


def alpacaeval(tmp_path, preferences):
    rows = [{"instruction": f"q{i}", "output_1": f"a{i}", "output_2": f"b{i}", "preference": p}
            for i, p in enumerate(preferences)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(rows))
    return path


AE_FIELDS = "prompt=instruction,chosen=output_1,rejected=output_2,label=preference==1"


def test_label_test_compares_numbers_as_numbers(tmp_path):
    """AlpacaEval writes preference 1.0 / 2.0: `preference==1` must match 1.0 (it compared the
    strings '1.0' and '1' and gave label 0 on every row)."""
    r = cli("validate", alpacaeval(tmp_path, [1.0, 2.0, 1, 2, "1", True]), "--fields", AE_FIELDS)
    assert r.exit_code == 0, r.stderr
    assert [x["label"] for x in read_jsonl(r.stdout)] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_label_test_that_matches_every_row_or_none_is_reported(tmp_path):
    data = alpacaeval(tmp_path, [2.0, 2.0, 2.0])
    r = cli("validate", data, "--fields", AE_FIELDS)
    assert r.exit_code == 0, r.stderr
    assert "--fields label=preference==1 matched none of the 3 records" in r.stderr
    r = cli("validate", data, "--fields", AE_FIELDS.replace("==1", "==2"))
    assert "--fields label=preference==2 matched all 3 records" in r.stderr
    r = cli("validate", alpacaeval(tmp_path, [1.0, 2.0]), "--fields", AE_FIELDS)
    assert "matched" not in r.stderr
