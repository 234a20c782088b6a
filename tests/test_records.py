"""The record contract: every accepted format parses, normalises and round-trips all its fields."""

import json

import pytest

from rlhfkit.records import RecordError, parse_record, ranking_pairs, split_shared_prompt, stable_id

HH_CHOSEN = "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water and yeast, then bake."
HH_REJECTED = "\n\nHuman: How do I bake bread?\n\nAssistant: I don't know."

FORMATS = {
    "pair-explicit": {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "source": "x", "margin": 0.5},
    "pair-implicit-hh": {"chosen": HH_CHOSEN, "rejected": HH_REJECTED, "meta": {"k": [1, 2]}},
    "conversational": {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
        "label": 0.8,
    },
    "conversational-implicit": {
        "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}],
    },
    "ranking": {"prompt": "Name a prime.", "responses": ["7", "9"], "open_ended": False, "id": "r1"},
    "ranking-scores": {"prompt": "p", "responses": ["b", "a", "c"], "scores": [1, 3, 2]},
    "generation": {"prompt": "Tell a joke.", "response": "", "policy": "sft"},
    "prompt": {"prompt": "Tell a joke.", "n": 3},
}


@pytest.mark.parametrize("name", FORMATS)
def test_round_trip_keeps_every_field(name):
    raw = FORMATS[name]
    ex = parse_record(json.loads(json.dumps(raw)))
    out = json.loads(json.dumps(ex.output(extra_field=1)))
    for key, value in raw.items():
        assert out[key] == value
    assert out["extra_field"] == 1
    assert out["id"] == raw.get("id", stable_id(raw))
    # parsing the output again gives the same normalised view
    again = parse_record(out)
    assert (again.kind, again.prompt, again.chosen, again.rejected, again.responses) == (
        ex.kind, ex.prompt, ex.chosen, ex.rejected, ex.responses)


def test_hh_transcript_splits_after_last_shared_assistant_marker():
    ex = parse_record({"chosen": HH_CHOSEN, "rejected": HH_REJECTED})
    assert ex.prompt == "\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert ex.chosen == " Mix flour, water and yeast, then bake."
    assert ex.rejected == " I don't know."
    assert ex.prompt + ex.chosen == HH_CHOSEN  # nothing lost


def test_multi_turn_hh_uses_the_last_shared_turn():
    base = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"
    p, c, r = split_shared_prompt(base + " yes", base + " no")
    assert p == base and c == " yes" and r == " no"


def test_plain_strings_without_shared_prefix_keep_whole_texts():
    assert split_shared_prompt("good answer", "bad answer") == ("", "good answer", "bad answer")


def test_conversational_implicit_prompt_is_the_shared_messages():
    ex = parse_record(FORMATS["conversational-implicit"])
    assert ex.prompt == [{"role": "user", "content": "Hi?"}]
    assert ex.chosen == [{"role": "assistant", "content": "Hello!"}]


def test_ranking_scores_order_responses_best_first_and_ties_give_no_pair():
    ex = parse_record({"prompt": "p", "responses": ["b", "a", "c", "d"], "scores": [1, 3, 2, 2]})
    assert ex.responses == ["a", "c", "d", "b"]
    assert ex.scores == [3.0, 2.0, 2.0, 1.0]
    assert ranking_pairs(ex) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]


def test_label_and_margin_defaults():
    ex = parse_record(FORMATS["pair-explicit"])
    assert ex.label == 1.0 and ex.margin == 0.5
    assert parse_record({"prompt": "p", "chosen": "a", "rejected": "b"}).margin is None


def test_stable_id_depends_on_content_only():
    a = {"prompt": "p", "chosen": "a", "rejected": "b"}
    b = {"rejected": "b", "chosen": "a", "prompt": "p"}
    assert stable_id(a) == stable_id(b)
    assert stable_id(a) != stable_id({**a, "chosen": "c"})


@pytest.mark.parametrize("raw, field", [
    ([1, 2], None),
    ({"chosen": "a"}, "rejected"),
    ({"chosen": "a", "rejected": 3}, "rejected"),
    ({"chosen": "  ", "rejected": "b"}, "chosen"),
    ({"chosen": "a", "rejected": "a"}, "rejected"),
    ({"prompt": "p", "responses": ["only one"]}, "responses"),
    ({"chosen": "a", "rejected": "b", "label": 1.5}, "label"),
    ({"chosen": "a", "rejected": "b", "margin": "big"}, "margin"),
    ({"prompt": "p", "responses": ["a", "b"], "open_ended": "yes"}, "open_ended"),
    ({"text": "no known field"}, None),
])
def test_bad_records_name_their_field(raw, field):
    with pytest.raises(RecordError) as e:
        parse_record(raw)
    assert e.value.field == field
    if field:
        assert f"field '{field}'" in str(e.value)


def test_kind_filter():
    with pytest.raises(RecordError, match="ranking record where pair"):
        parse_record(FORMATS["ranking"], kinds=("pair",))
