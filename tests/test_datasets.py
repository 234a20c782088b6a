"""Issue 36: the public preference datasets read right with one --fields line.

Each sample below is a few records shaped like the real dataset: its field names and its value types
(numbers written as strings where the dataset writes them so). Each is read through `validate` and
through train-rm's reader, and every record's preferred response, soft label and margin are checked
against values written by hand. README's "Your dataset" table is parsed and every line of it is run.
"""

import json
import math
import re
from pathlib import Path

import pytest

from rlhfkit.fields import PRESETS
from rlhfkit.io import field_map, read_records

from conftest import cli, last_json_line, read_jsonl, write_jsonl

README = Path(__file__).resolve().parents[1] / "README.md"


# ---------------------------------------------------------------- samples shaped like each dataset

def alpacaeval_hard(tmp_path):
    """alpaca_eval_gpt4 annotations (a JSON array): preference 1 or 2, 1.5 a tie, 0 a draw."""
    rows = [{"instruction": f"q{i}", "output_1": f"first {i}", "generator_1": "text_davinci_003",
             "output_2": f"second {i}", "generator_2": "alpaca-7b", "annotator": "alpaca_eval_gpt4",
             "preference": p, "price_per_example": "None"} for i, p in enumerate([1, 2, 1.5, 0, 2.0])]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(rows))
    return path


def alpacaeval_weighted(tmp_path):
    """weighted_alpaca_eval_gpt4_turbo: preference = 1 + P(output_2 better), written as a string or a float."""
    rows = [{"instruction": f"q{i}", "output_1": f"first {i}", "output_2": f"second {i}",
             "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": p, "raw_completion": {"logprobs": None}}
            for i, p in enumerate(["1.0025695767", "1.9740430377", 1.5, 1.31, "1.75"])]
    path = tmp_path / "weighted.json"
    path.write_text(json.dumps(rows))
    return path


def ultrafeedback(tmp_path):
    """ultrafeedback_binarized: `prompt` a string, `chosen`/`rejected` whole conversations that begin with it."""
    rows = []
    for i, (sc, sr) in enumerate([(8.5, 3.0), ("7.0", "6.5")]):
        user = {"role": "user", "content": f"What is question {i}?"}
        rows.append({"prompt": user["content"], "prompt_id": f"{i:064x}",
                     "chosen": [user, {"role": "assistant", "content": f"good answer {i}"}],
                     "rejected": [user, {"role": "assistant", "content": f"bad answer {i}"}],
                     "messages": [user, {"role": "assistant", "content": f"good answer {i}"}],
                     "score_chosen": sc, "score_rejected": sr})
    return write_jsonl(tmp_path / "uf.jsonl", rows)


def pku_saferlhf(tmp_path):
    rows = [{"prompt": f"p{i}", "response_0": f"zero {i}", "response_1": f"one {i}",
             "prompt_source": "Alpaca3-70B", "response_0_source": "Alpaca-7B", "response_1_source": "Alpaca-7B",
             "is_response_0_safe": s0, "is_response_1_safe": s1, "response_0_severity_level": 0,
             "response_1_severity_level": 2, "better_response_id": b, "safer_response_id": s, "response_0_sha256": "x"}
            for i, (b, s, s0, s1) in enumerate([(0, 1, False, True), (1, 1, False, True), (1, 0, True, False)])]
    return write_jsonl(tmp_path / "pku.jsonl", rows)


def shp(tmp_path):
    rows = [{"post_id": f"p{i}", "domain": "askscience_train", "upvote_ratio": 0.98, "history": f"post {i}",
             "c_root_id_A": f"a{i}", "c_root_id_B": f"b{i}", "created_at_utc_A": 1, "created_at_utc_B": 2,
             "score_A": a, "score_B": b, "human_ref_A": f"comment A{i}", "human_ref_B": f"comment B{i}",
             "labels": int(a > b), "seconds_difference": 3600.0, "score_ratio": max(a, b) / min(a, b)}
            for i, (a, b) in enumerate([(20, 5), (3, 9), (4, 3)])]
    return write_jsonl(tmp_path / "shp.jsonl", rows)


def nectar(tmp_path):
    """Nectar: 7 answers, each {answer, model, rank} with rank 1.0 the best; the prompt an HH transcript."""
    ranks = [3.0, 1.0, 7.0, 2.0, 5.0, 4.0, 6.0]
    row = {"prompt": "\n\nHuman: Name a colour.\n\nAssistant:", "turns": 1, "num_responses": 7,
           "source": ["sharegpt"], "good_natured": True,
           "answers": [{"answer": f"answer ranked {int(r)}", "model": f"m{k}", "rank": r} for k, r in enumerate(ranks)]}
    return write_jsonl(tmp_path / "nectar.jsonl", [row])


def helpsteer2(tmp_path):
    """HelpSteer2's preference split: preference_strength -3..3, negative when response_1 is better."""
    rows = [{"split": "train", "prompt": f"p{i}", "response_1": f"one {i}", "response_2": f"two {i}",
             "preference_strength": s, "preference_statement": "@Response 1 is better",
             "preference_elaboration": "...", "three_most_similar_preferences": [], "all_preferences_unprocessed": [s]}
            for i, s in enumerate([-3, 2, 0, -1])]
    return write_jsonl(tmp_path / "hs2.jsonl", rows)


SAMPLES = {"AlpacaEval (hard)": alpacaeval_hard, "AlpacaEval (weighted)": alpacaeval_weighted,
           "UltraFeedback": ultrafeedback, "PKU-SafeRLHF": pku_saferlhf, "SHP": shp, "Nectar": nectar,
           "HelpSteer2": helpsteer2}


# ---------------------------------------------------------------- what each line must give, written by hand
# pairs: (chosen, rejected, label, margin) per record, in order

EXPECTED = {
    ("AlpacaEval (hard)", "alpacaeval"): [
        ("first 0", "second 0", 1.0, None), ("second 1", "first 1", 1.0, None),
        ("first 2", "second 2", 0.5, None), ("first 3", "second 3", 0.5, None), ("second 4", "first 4", 1.0, None)],
    ("AlpacaEval (weighted)", "alpacaeval"): [
        ("first 0", "second 0", 0.9974304233, None), ("second 1", "first 1", 0.9740430377, None),
        ("first 2", "second 2", 0.5, None), ("first 3", "second 3", 0.69, None), ("second 4", "first 4", 0.75, None)],
    ("UltraFeedback", ""): [
        ([{"role": "assistant", "content": "good answer 0"}], [{"role": "assistant", "content": "bad answer 0"}], 1.0, None),
        ([{"role": "assistant", "content": "good answer 1"}], [{"role": "assistant", "content": "bad answer 1"}], 1.0, None)],
    ("UltraFeedback", "margin=score_chosen-score_rejected"): [
        ([{"role": "assistant", "content": "good answer 0"}], [{"role": "assistant", "content": "bad answer 0"}], 1.0, 5.5),
        ([{"role": "assistant", "content": "good answer 1"}], [{"role": "assistant", "content": "bad answer 1"}], 1.0, 0.5)],
    ("PKU-SafeRLHF", "pku-saferlhf"): [
        ("zero 0", "one 0", 1.0, None), ("one 1", "zero 1", 1.0, None), ("one 2", "zero 2", 1.0, None)],
    ("PKU-SafeRLHF", "pku-saferlhf-safer"): [
        ("one 0", "zero 0", 1.0, None), ("one 1", "zero 1", 1.0, None), ("zero 2", "one 2", 1.0, None)],
    ("SHP", "shp"): [
        ("comment A0", "comment B0", 1.0, None), ("comment B1", "comment A1", 1.0, None),
        ("comment A2", "comment B2", 1.0, None)],
    ("SHP", "shp,margin=(2*labels-1)*log(score_ratio)"): [
        ("comment A0", "comment B0", 1.0, math.log(4)), ("comment B1", "comment A1", 1.0, math.log(3)),
        ("comment A2", "comment B2", 1.0, math.log(4 / 3))],
    ("SHP", "shp,keep=score_ratio>=2"): [
        ("comment A0", "comment B0", 1.0, None), ("comment B1", "comment A1", 1.0, None)],
    ("HelpSteer2", "helpsteer2"): [
        ("one 0", "two 0", 1.0, None), ("two 1", "one 1", 1.0, None), ("one 2", "two 2", 0.5, None),
        ("one 3", "two 3", 1.0, None)],
    ("HelpSteer2", "helpsteer2,margin=-preference_strength"): [
        ("one 0", "two 0", 1.0, 3.0), ("two 1", "one 1", 1.0, 2.0), ("one 2", "two 2", 0.5, 0.0),
        ("one 3", "two 3", 1.0, 1.0)],
}
RANKINGS = {("Nectar", "nectar"): [[f"answer ranked {r}" for r in range(1, 8)]]}


def readme_table():
    """(dataset, --fields value) for every line of README's "Your dataset" table."""
    text = README.read_text()
    section = text[text.index("## Your dataset"):]
    section = section[:section.index("\n## ", 3)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("|") or set(cells[0]) <= set("-: "):
            continue
        if cells[0] == "dataset":
            continue
        flag = re.fullmatch(r"`--fields '(.*)'`", cells[1])
        rows.append((cells[0], flag.group(1) if flag else "" if cells[1] == "(none)" else None))
    return rows


def _args(spec):
    return ["--fields", spec] if spec else []


def test_readme_table_lists_every_dataset_and_every_tested_line():
    rows = readme_table()
    assert None not in [spec for _, spec in rows], rows  # every line is a --fields '...' or (none)
    assert set(rows) == set(EXPECTED) | set(RANKINGS)


@pytest.mark.parametrize("dataset,spec", sorted(EXPECTED))
def test_each_pair_line_reads_the_preferred_response_label_and_margin(tmp_path, dataset, spec):
    path = SAMPLES[dataset](tmp_path)
    expected = EXPECTED[(dataset, spec)]
    r = cli("validate", path, *_args(spec))
    assert r.exit_code == 0, r.stderr
    written = read_jsonl(r.stdout)
    examples, stats = read_records(str(path), ("pair",), fields=field_map(spec))  # train-rm's reader
    assert len(written) == len(examples) == len(expected)
    for out, ex, (chosen, rejected, label, margin) in zip(written, examples, expected):
        assert (ex.chosen, ex.rejected) == (chosen, rejected)
        assert ex.label == pytest.approx(label) and out.get("label", 1.0) == pytest.approx(label)
        if margin is None:
            assert ex.margin is None
        else:
            assert ex.margin == pytest.approx(margin) and out["margin"] == pytest.approx(margin)
    for name in PRESETS:  # a preset says what it stands for
        if name in spec.split(","):
            assert f"--fields {name} means --fields {PRESETS[name]}" in r.stderr


@pytest.mark.parametrize("dataset,spec", sorted(RANKINGS))
def test_ranked_answers_read_as_a_ranking_best_first(tmp_path, dataset, spec):
    path = SAMPLES[dataset](tmp_path)
    r = cli("validate", path, "--fields", spec)
    assert r.exit_code == 0, r.stderr
    assert last_json_line(r.stderr)["kinds"] == {"ranking": 1}
    examples, _ = read_records(str(path), ("ranking",), fields=field_map(spec))
    assert [ex.responses for ex in examples] == RANKINGS[(dataset, spec)]
    assert examples[0].prompt.startswith("\n\nHuman: Name a colour.")


def test_ultrafeedback_holds_the_user_turn_once_when_rendered(tmp_path):
    """The responses repeat the prompt's user turn; rendered, it must appear once (it appeared twice)."""
    from rlhfkit.models import load_tokenizer
    from rlhfkit.rewards.model import render

    path = ultrafeedback(tmp_path)
    examples, stats = read_records(str(path), ("pair",))
    assert stats.prompt_in_responses == 2
    plain = load_tokenizer("tiny-gpt")
    templated = load_tokenizer("tiny-gpt")
    templated.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
    for tok in (plain, templated):
        for ex in examples:
            for response in (ex.chosen, ex.rejected):
                text = render(tok, ex.prompt, response)
                assert text.count(ex.prompt) == 1, text
    assert render(templated, examples[0].prompt, examples[0].chosen) == \
        "<user>What is question 0?</user><assistant>good answer 0</assistant>"
    r = cli("validate", path)
    assert "2 record(s) whose responses already begin with the prompt's turns" in r.stderr
    assert last_json_line(r.stderr)["prompt_in_responses"] == 2


def test_a_conversation_that_differs_from_the_prompt_is_kept_whole(tmp_path):
    """The rule is exact: a response whose first turn is not the prompt's keeps every turn."""
    row = {"prompt": "hello", "chosen": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "a"}],
           "rejected": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "b"}]}
    (ex,), stats = read_records(str(write_jsonl(tmp_path / "d.jsonl", [row])), ("pair",))
    assert len(ex.chosen) == 2 and stats.prompt_in_responses == 0
    only_prompt = dict(row, chosen=[{"role": "user", "content": "hello"}], rejected=[
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "b"}])
    r = cli("validate", write_jsonl(tmp_path / "e.jsonl", [only_prompt]))
    assert r.exit_code == 2 and "field 'chosen': holds only the prompt's turns" in r.stderr


def test_alpacaeval_weighted_agrees_with_the_annotator_on_every_untied_pair(tmp_path):
    rows = json.loads(alpacaeval_weighted(tmp_path).read_text())
    examples, _ = read_records(str(tmp_path / "weighted.json"), ("pair",), fields=field_map("alpacaeval"))
    assert len(rows) == len(examples)
    for row, ex in zip(rows, examples):
        p2 = float(row["preference"]) - 1  # P(output_2 better)
        if p2 != 0.5:
            assert ex.chosen == (row["output_2"] if p2 > 0.5 else row["output_1"])
            assert ex.label == pytest.approx(max(p2, 1 - p2))


def test_real_alpacaeval_annotations_agree_with_the_annotator(shared_data, tmp_path):
    """The 805 real annotations (hard annotator): `preference==1` misread the ties; the preset agrees on
    every pair the annotator decided, and draws (0) are label 0.5."""
    source = shared_data / "alpacaeval-alpaca7b-gpt4-annotations.json"
    rows = json.loads(source.read_text())
    examples, stats = read_records(str(source), ("pair",), on_error="skip", fields=field_map("alpacaeval"))
    by_instruction = {}
    for ex in examples:
        by_instruction.setdefault(ex.prompt, []).append(ex)
    identical = sum(row["output_1"] == row["output_2"] for row in rows)  # the draws here: bad pairs, skipped
    assert (stats.read, stats.skipped) == (len(rows) - identical, identical)
    checked = 0
    for row in rows:
        for ex in by_instruction.get(row["instruction"], []):
            if {ex.chosen, ex.rejected} != {row["output_1"], row["output_2"]}:
                continue
            pref = float(row["preference"])
            if pref in (1.0, 2.0):
                assert ex.chosen == row[f"output_{int(pref)}"] and ex.label == 1.0
            else:
                assert ex.label == 0.5
            checked += 1
    assert checked == stats.read


# ---------------------------------------------------------------- the expression form on its own

def test_numbers_written_as_strings_compute_and_a_label_outside_the_unit_interval_is_clipped_and_counted(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [
        {"q": "x", "a": "1", "b": "2", "p": p} for p in ["0.25", 1.5, -0.5, "0.9"]])
    r = cli("validate", data, "--fields", "prompt=q,chosen=a,rejected=b,label=1-p")
    assert r.exit_code == 0, r.stderr
    assert [(x["chosen"], x["label"]) for x in read_jsonl(r.stdout)] == [("1", 0.75), ("2", 1.0), ("1", 1.0), ("2", 0.9)]
    assert "2 label(s) outside [0, 1] clipped" in r.stderr


def test_a_sign_test_is_half_on_a_tie_and_an_ordinary_test_is_not():
    fm = field_map("label=s<0")
    assert [fm.apply({"s": s})["label"] for s in (-2, 0, 3, "-1")] == [1.0, 0.5, 0.0, 1.0]
    fm = field_map("label=s<=0")
    assert [fm.apply({"s": s})["label"] for s in (-2, 0, 3)] == [1.0, 1.0, 0.0]


def test_expression_errors_name_the_field_and_the_line(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "1", "b": "2", "p": 1},
                                              {"q": "x", "a": "1", "b": "2", "p": "n/a"},
                                              {"q": "x", "a": "1", "b": "2"}])
    r = cli("validate", data, "--fields", "prompt=q,chosen=a,rejected=b,label=2-p")
    assert r.exit_code == 2 and ":2: field 'p': expected a number" in r.stderr
    r = cli("validate", data, "--fields", "prompt=q,chosen=a,rejected=b,label=2-p", "--on-error", "skip")
    assert last_json_line(r.stderr)["skipped"] == 2
    r = cli("validate", data, "--fields", "nosuchpreset")
    assert r.exit_code == 2 and "alpacaeval" in r.stderr


@pytest.mark.parametrize("source,why", [
    ("__import__('os').system('true')", "the functions are"), ("p**2", "Pow is not allowed"),
    ("p.__class__", None), ("'a'-1", "text can only be compared"), ("-'a'", "text can only be compared"),
    ("abs('x')", "text can only be compared"), ("open('x')", "the functions are log(x) and abs(x)"),
    ("[p][0]", "is not allowed")])
def test_an_expression_is_parsed_never_run(tmp_path, source, why):
    """Only fields, numbers, + - * /, comparisons, log, abs and if/else are evaluated: anything else is
    read as a field name (and such a field is missing); a path only looks up keys of objects."""
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "1", "b": "2", "p": {"k": 1}}])
    r = cli("validate", data, "--fields", f"prompt=q,chosen=a,rejected=b,label={source}")
    assert r.exit_code == 2
    if why is None:
        assert "field 'p.__class__': missing" in r.stderr, r.stderr
    else:
        assert "not read as an expression: " in r.stderr and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_computed_number_that_is_not_finite_is_bad_input(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "1", "b": "2", "p": "1e308"}])
    r = cli("validate", data, "--fields", "prompt=q,chosen=a,rejected=b,label=p*10-p*10")
    assert r.exit_code == 2 and "not a finite number" in r.stderr, r.stderr


def test_literal_tests_keep_their_old_reading():
    """`FIELD==VALUE` with spaces, brackets or a slash in VALUE (Chatbot Arena's `tie (bothbad)`), or a
    space in FIELD, compares literal text as it always did; text is quoted inside expressions."""
    rows = [{"q": "x", "a": "1", "b": "2", "winner": w, "Human Preference": h, "choice": c}
            for w, h, c in [("tie (bothbad)", 1, "A/B"), ("model_a", 2, "B")]]
    for spec, want in [("label=winner==tie (bothbad)", [1.0, 0.0]), ("label=Human Preference==1", [1.0, 0.0]),
                       ("label=choice==A/B", [1.0, 0.0]), ("label=winner!='model_a'", [1.0, 0.0]),
                       ("label=0.5 if winner=='tie (bothbad)' else 1", [0.5, 1.0])]:
        fm = field_map("prompt=q,chosen=a,rejected=b," + spec)
        assert [fm.apply(r)["label"] for r in rows] == want, spec
    fm = field_map("keep=winner==model_a")
    assert [fm.apply(r) is not None for r in rows] == [False, True]


def test_a_later_item_replaces_a_presets_item_for_the_same_field():
    fm = field_map("alpacaeval,label=preference==1")
    row = {"instruction": "q", "output_1": "a", "output_2": "b", "preference": 1.3}
    assert fm.apply(row)["label"] == 0.0  # the user's test, not the preset's 2 - preference
    fm = field_map("pku-saferlhf,chosen=resp")
    out = fm.apply({"prompt": "p", "resp": "r", "response_0": "z", "response_1": "o", "better_response_id": 1})
    assert (out["chosen"], out["response_0"]) == ("r", "z")  # response_0 no longer renamed away


def test_a_boolean_field_is_a_test_and_a_tie_does_not_hold():
    fm = field_map("label=0.5 if tie else 1")
    assert [fm.apply({"tie": t})["label"] for t in (True, False, "true")] == [0.5, 1.0, 0.5]
    fm = field_map("label=0.25 if s<0 else 0.75")
    assert [fm.apply({"s": s})["label"] for s in (-1, 0, 1)] == [0.25, 0.75, 0.75]


def test_a_field_whose_name_is_no_identifier_is_still_a_rename(tmp_path):
    """`response-1`, `answer (A)`, `resp[0]`: renamed (the old field removed) as before expressions came."""
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "response-1": "a", "answer (A)": "b", "resp[0]": "c"}])
    r = cli("validate", data, "--fields", "prompt=question,chosen=response-1,rejected=answer (A),id=resp[0]")
    assert r.exit_code == 0, r.stderr
    (out,) = read_jsonl(r.stdout)
    assert (out["chosen"], out["rejected"], out["id"]) == ("a", "b", "c")
    assert not {"response-1", "answer (A)", "resp[0]"} & set(out)


def test_ranking_and_generation_records_read_the_prompt_once_and_score_in_record_order(tmp_path):
    user = {"role": "user", "content": "hi"}
    rows = [{"prompt": "hi", "responses": [[user, {"role": "assistant", "content": t}] for t in ("b", "a", "c")],
             "scores": [2, 3, 1]},
            {"prompt": "hi", "response": [user]}]  # a generation that ended at once: an empty response
    examples, stats = read_records(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert stats.prompt_in_responses == 2
    assert [r[0]["content"] for r in examples[0].given_responses] == ["b", "a", "c"]
    assert [r[0]["content"] for r in examples[0].responses] == ["a", "b", "c"]  # best first
    assert examples[1].response == []


def test_keep_left_out_everything_is_an_error_not_an_empty_file(tmp_path):
    data = shp(tmp_path)
    r = cli("validate", data, "--fields", "shp,keep=score_ratio>=100")
    assert r.exit_code == 2 and "left out every one of the 3 records" in r.stderr
    r = cli("validate", data, "--fields", "shp,keep=score_ratio>=2")
    assert "left out 1 of 3 records" in r.stderr and last_json_line(r.stderr)["read"] == 2


# ---------------------------------------------------------------- the smaller defects of the issue

def test_a_swapped_pair_missing_its_rejected_response_names_rejected(tmp_path):
    """label < 0.5 reads the swap; the error named 'chosen' for a record that lacks 'rejected'."""
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "chosen": "a", "label": 0.0}])
    r = cli("validate", data)
    assert r.exit_code == 2 and "field 'rejected': missing" in r.stderr, r.stderr


def test_clean_flip_negates_the_margin_as_the_swap_does():
    from rlhfkit.cleaning.clean import FLIP, Rules, apply
    from rlhfkit.records import reoriented

    record = {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 2.0, "strength_mean": -1.0}
    flipped = apply(record, FLIP, Rules(flip=True))
    assert (flipped["chosen"], flipped["margin"], flipped["strength_mean"]) == ("b", -2.0, 1.0)
    swapped = reoriented(record, 0.0)
    assert (swapped["chosen"], swapped["margin"]) == (flipped["chosen"], flipped["margin"])


def test_train_rm_eval_file_gets_its_own_field_notes(tmp_path):
    """One map for --data and --eval added their match counts: a test matching nothing in the eval file
    went unreported when the training file had matches."""
    train = alpacaeval_hard(tmp_path)
    eval_rows = [{"instruction": f"e{i}", "output_1": f"x{i}", "output_2": f"y{i}", "preference": 2} for i in range(3)]
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps(eval_rows))
    spec = "prompt=instruction,chosen=output_1,rejected=output_2,label=preference==1"
    r = cli("train-rm", train, "--model", "tiny-bert", "--out", tmp_path / "rm", "--max-steps", 1, "--batch-size", 2,
            "--eval", eval_path, "--fields", spec, "--save-steps", 0)
    assert r.exit_code == 0, r.stderr
    assert f"{eval_path}: --fields label=preference==1 matched none of the 3 records" in r.stderr


def test_recipes_read_the_process_count_from_the_yaml_launch_names(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    yaml = tmp_path / "four.yaml"
    yaml.write_text("distributed_type: MULTI_GPU\nnum_processes: 4\n")
    script = f"source {root}/recipes/_common.sh; procs; at_least 6"
    for launch, want in [(f"accelerate launch --config_file {yaml} -m", "4\n8\n"),
                         (f"accelerate launch --config_file={yaml} --num_processes 2 -m", "2\n6\n"),
                         ("torchrun --nproc_per_node 3 -m", "3\n6\n"), ("", "1\n6\n")]:
        out = subprocess.run(["bash", "-c", script], env={"LAUNCH": launch, "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True).stdout
        assert out == want, (launch, out)
