"""`rlhfkit report` (a paper recipe's last stage) and `judge --reward --pairwise` (the tiny scale's judge),
against hand computations on runs laid out by hand."""

import json
import statistics

import pytest

from conftest import cli, write_jsonl


def metric(path, **values):
    path.write_text(json.dumps(values) + "\n")


def uncertainty_run(d, rewards):
    """rewards: {file name: [judged rewards]}; each policy's KL is its head number + 0.5."""
    judged = [{"source": f"{d}/{name}", "reward": r} for name, rs in rewards.items() for r in rs]
    write_jsonl(d / "judged.jsonl", judged)
    for name in rewards:
        (d / name).write_text("")
        if name != "gens-reference.jsonl":
            stem = name[len("gens-"):-len(".jsonl")]
            metric(d / f"generation-{stem}.json", metric="generation", kl=int(stem.split("-h")[1][0]) + 0.5)


def test_uncertainty_report_gives_the_variance_across_policies_by_hand(tmp_path):
    rewards = {"gens-reference.jsonl": [0.1, 0.3],
               "gens-vanilla-h0-r1.jsonl": [1.0, 3.0], "gens-vanilla-h1-r1.jsonl": [0.0, 0.0],
               "gens-vanilla-h2-r1.jsonl": [5.0, 5.0],
               "gens-varaware-h0-r1.jsonl": [1.0, 1.0], "gens-varaware-h1-r1.jsonl": [2.0, 2.0],
               "gens-varaware-h2-r1.jsonl": [1.5, 1.5]}
    uncertainty_run(tmp_path, rewards)
    r = cli("report", "uncertainty", tmp_path, "--scale", "tiny")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    v, u = s["values"]["vanilla"], s["values"]["varaware"]
    assert v["policy_rewards"] == [2.0, 0.0, 5.0]  # per-policy means, head order
    assert v["reward_mean"] == pytest.approx(7 / 3)
    assert v["reward_variance"] == pytest.approx(((2 - 7 / 3) ** 2 + (7 / 3) ** 2 + (5 - 7 / 3) ** 2) / 2)
    assert u["reward_variance"] == pytest.approx(0.25)
    assert v["kl_mean"] == pytest.approx(1.5) and s["values"]["reference_reward"] == pytest.approx(0.2)
    rows = {row["quantity"]: row for row in s["rows"]}
    assert rows["variance across policies, variance-aware"]["same_direction"] is True  # 0.25 < 6.33
    assert rows["variance across policies, vanilla KL"]["paper"] == "0.06"
    assert s["same_direction"] == "2 of 2" and "not evidence" in s["note"]


def test_a_report_names_the_file_a_stage_did_not_write(tmp_path):
    rewards = {"gens-reference.jsonl": [0.1], "gens-vanilla-h0-r1.jsonl": [1.0], "gens-varaware-h0-r1.jsonl": [1.0]}
    uncertainty_run(tmp_path, rewards)
    (tmp_path / "generation-varaware-h0-r1.json").unlink()
    r = cli("report", "uncertainty", tmp_path, "--out", tmp_path / "summary.json")
    assert r.exit_code == 2 and "generation-varaware-h0-r1.json" in r.stderr and "missing" in r.stderr
    assert not (tmp_path / "summary.json").exists()
    assert cli("report", "nature-2031", tmp_path).exit_code == 2


def test_pm_report_compares_kl_rlhf_with_cpm_per_beta(tmp_path):
    for name, beta, pm, kl in [("kl-b1", 1, 1.2, 0.3), ("cpm-b1-a0.1", 1, 0.7, 0.2), ("cpm-b1-a0.3", 1, 0.5, 0.1),
                               ("kl-b0.1", 0.1, 2.0, 1.0), ("cpm-b0.1-a0.3", 0.1, 2.5, 0.9)]:
        metric(tmp_path / f"pm-{name}.json", metric="pm-divergence", beta=beta, mean=pm)
        metric(tmp_path / f"generation-{name}.json", metric="generation", kl=kl)
    s = json.loads(cli("report", "pm-rlhf", tmp_path).stdout)
    by_beta = {float(k): v for k, v in s["values"]["by_beta"].items()}
    assert by_beta[1.0] == {"kl_rlhf": 1.2, "cpm_rlhf": pytest.approx(0.6)}
    assert by_beta[0.1] == {"kl_rlhf": 2.0, "cpm_rlhf": 2.5}
    agrees = [r["same_direction"] for r in s["rows"] if r["quantity"].startswith("PM divergence, cPM")]
    assert agrees == [False, True]  # beta 0.1: cPM above KL-RLHF; beta 1: below, as the paper


def test_secrets_report_reads_strength_accuracy_winrates_and_metarm(tmp_path):
    write_jsonl(tmp_path / "strength.jsonl", [{"strength_mean": m} for m in (-1.0, 0.5, 2.0, -0.1)])
    for i, v in enumerate(("raw", "flip", "margin", "flip-margin", "soft-margin", "simcse", "swav")):
        metric(tmp_path / f"accuracy-{v}.json", metric="accuracy", overall=0.6 + i / 100, n=10)
        if v != "raw":
            metric(tmp_path / f"winrate-{v}.json", metric="winrate", win_rate=0.4 + i / 20, ci95=[0.1, 0.9], n=8)
    (tmp_path / "metarm").mkdir()
    for k, a in enumerate((0.7, 0.65)):
        metric(tmp_path / "metarm" / f"accuracy-rm-{k}.json", metric="accuracy", overall=a, n=10)
    s = json.loads(cli("report", "secrets-rm", tmp_path).stdout)
    assert s["values"]["share_strength_mean_below_0"] == 0.5
    assert s["values"]["winrate_vs_raw"]["flip"]["win_rate"] == pytest.approx(0.45)
    rows = {row["quantity"]: row for row in s["rows"]}
    assert rows["win rate vs raw, flip policy"]["same_direction"] is False
    assert rows["win rate vs raw, margin policy"]["same_direction"] is False  # exactly 0.5 is not a win
    assert rows["win rate vs raw, flip-margin policy"]["same_direction"] is True
    assert rows["MetaRM accuracy after round 1"]["same_direction"] is False  # 0.65 < round 0's 0.7
    assert rows["MetaRM accuracy after round 1"]["run"] == 0.65


def test_reward_collapse_report_asks_the_adaptive_utility_to_keep_groups_furthest_apart(tmp_path):
    for u, w in (("x", 0.02), ("log", 0.05), ("adaptive", 0.04)):
        metric(tmp_path / f"reward-dist-{u}.json", metric="reward-dist", distance={"wasserstein": w, "ks": 0.1},
               groups={"True": {"mean": 0.5}, "False": {"mean": 0.5 + w}})
    s = json.loads(cli("report", "reward-collapse", tmp_path).stdout)
    rows = {row["quantity"]: row for row in s["rows"]}
    assert rows["W1(open, closed), adaptive"]["same_direction"] is False  # 0.04 < log's 0.05
    assert statistics.fmean(r["run"] for r in s["rows"]) == pytest.approx(0.11 / 3)


# ---------------------------------------------------------------- judge --reward --pairwise

def test_pairwise_reward_judge_gives_the_higher_reward_the_verdict(tmp_path):
    """Verdicts follow the rewards the plain reward judge gives each file (higher wins, the same response
    ties), pairs are joined by id, the unmatched record is set aside, and `metrics winrate` reads them."""
    from rlhfkit import synth

    write_jsonl(tmp_path / "pairs.jsonl", synth.pairs(16, 0.0, seed=0))
    assert cli("train-rm", tmp_path / "pairs.jsonl", "--model", "tiny-gpt", "--max-steps", "2", "--save-steps", "0",
               "--out", tmp_path / "rm").exit_code == 0
    a = [{"id": "1", "prompt": "p1", "response": "a long and lovely answer"}, {"id": "2", "prompt": "p2", "response": "ab"},
         {"id": "3", "prompt": "p3", "response": "same"}, {"id": "4", "prompt": "p4", "response": "alone"},
         {"id": "5", "prompt": "p5", "response": "dull"}]
    b = [{"id": "1", "prompt": "p1", "response": "short"}, {"id": "2", "prompt": "p2", "response": "a fine reply"},
         {"id": "3", "prompt": "p3", "response": "same"}, {"id": "5", "prompt": "p5", "response": "bright and warm"}]
    write_jsonl(tmp_path / "a.jsonl", a)
    write_jsonl(tmp_path / "b.jsonl", b)
    plain = cli("judge", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--reward", tmp_path / "rm")
    rewards = {(r["source"].endswith("b.jsonl"), r["id"]): r["reward"]
               for r in map(json.loads, plain.stdout.splitlines())}
    out = tmp_path / "judged.jsonl"
    r = cli("judge", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--reward", tmp_path / "rm", "--pairwise",
            "--out", out, "--rejects", tmp_path / "unmatched.jsonl")
    assert r.exit_code == 0, r.stderr
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    expected = []
    for k in ("1", "2", "3", "5"):
        ra, rb = rewards[(False, k)], rewards[(True, k)]
        expected.append((k, "A" if ra > rb else "B" if rb > ra else "tie"))
    assert [(v["id"], v["verdict"]) for v in verdicts] == expected
    assert expected[2] == ("3", "tie") and {v for _, v in expected} >= {"tie"}
    assert verdicts[0]["reward_a"] == pytest.approx(rewards[(False, "1")])
    assert [json.loads(line)["id"] for line in (tmp_path / "unmatched.jsonl").read_text().splitlines()] == ["4"]
    w = json.loads(cli("metrics", "winrate", out, "--bootstrap", "50").stdout)
    wins = sum(v == "A" for _, v in expected) + 0.5 * sum(v == "tie" for _, v in expected)
    assert w["win_rate"] == pytest.approx(wins / 4)
    bad = cli("judge", tmp_path / "a.jsonl", "--reward", tmp_path / "rm", "--pairwise")
    assert bad.exit_code == 2 and "--pairwise" in bad.stderr
