"""`synth`: deterministic, the flipped fraction exact, labels consistent with the gold reward."""

from rlhfkit import synth
from rlhfkit.records import parse_record

from conftest import cli, read_jsonl


def test_same_seed_same_bytes_and_twenty_percent_flips(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (a, b):
        r = cli("synth", "--n", 1000, "--noise", 0.2, "--seed", 0, "--out", path)
        assert r.exit_code == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    records = read_jsonl(a)
    assert len(records) == 1000
    noisy = sum(r["noisy"] for r in records)
    assert 190 <= noisy <= 210
    c = tmp_path / "c.jsonl"
    cli("synth", "--n", 1000, "--noise", 0.2, "--seed", 1, "--out", c)
    assert c.read_bytes() != a.read_bytes()


def test_noisy_flag_matches_the_gold_reward_recomputed_from_text():
    for rec in synth.pairs(300, 0.3, seed=5):
        gc, gr = synth.gold_reward(rec["chosen"]), synth.gold_reward(rec["rejected"])
        assert (gc, gr) == (rec["gold_chosen"], rec["gold_rejected"])
        assert (gc < gr) == rec["noisy"]
        parse_record(rec)  # every record satisfies the contract


def test_noise_level_only_flips_the_same_pairs():
    clean = list(synth.pairs(200, 0.0, seed=3))
    noisy = list(synth.pairs(200, 0.25, seed=3))
    for c, n in zip(clean, noisy):
        assert {c["chosen"], c["rejected"]} == {n["chosen"], n["rejected"]}
        assert (c["chosen"] != n["chosen"]) == n["noisy"]


def test_rankings_are_best_first():
    for rec in synth.rankings(50, 5, seed=0):
        golds = [synth.gold_reward(t) for t in rec["responses"]]
        assert golds == rec["scores"] == sorted(golds, reverse=True)
        assert isinstance(rec["open_ended"], bool)


def test_bad_noise_is_a_usage_error(tmp_path):
    r = cli("synth", "--noise", 1.5, "--out", tmp_path / "x.jsonl")
    assert r.exit_code == 2 and "--noise" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()
