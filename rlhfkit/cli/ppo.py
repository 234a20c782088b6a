"""`rlhfkit ppo`: PPO with KL, variance-weighted KL, preference-matching or conditional PM regularisers."""

from __future__ import annotations

from typing import Optional

import typer

from .common import CHAT_TEMPLATE, CONFIG, FIELDS, SEED, apply_config, handle_errors, open_unit, positive, unit_left_open


@handle_errors
def ppo(
    ctx: typer.Context,
    policy: str = typer.Option(..., "--policy", metavar="MODEL", help="Initial policy (and frozen reference): alias, directory or hub id."),
    reward: str = typer.Option(..., "--reward", metavar="DIR|FN", help="Reward-model dir, ensemble dir, or module:function over (prompt, response)."),
    prompts: str = typer.Option(..., "--prompts", metavar="FILE", help="Prompt, generation or pair records (their prompt), or plain text lines."),
    out: str = typer.Option(..., "--out", "-o", metavar="PATH", help="Output directory: policy, log.jsonl, samples.jsonl, checkpoints/."),
    reward_head: Optional[int] = typer.Option(None, "--reward-head", min=0, metavar="N", help="Ensemble: optimise head i (default: the heads' mean)."),
    normalize_reward: bool = typer.Option(False, "--normalize-reward", help="Standardise scores with the reward model's training mean/std."),
    reward_scale: float = typer.Option(1.0, "--reward-scale", metavar="X", help="Multiply scores before the clip (1: the reward model's own scale; rlhfkit reads beta as the KL weight against it, r - beta*KL, everywhere)."),
    regularizer: str = typer.Option("kl", "--regularizer", metavar="kl|var-kl|pm|cpm|none", help="kl, var-kl, pm, cpm or none."),
    beta: float = typer.Option(0.05, "--beta", min=0, metavar="X", help="Regulariser weight."),
    alpha: float = typer.Option(0.3, "--alpha", callback=open_unit, metavar="X", help="cpm: tokens with pi_ref >= alpha get the PM penalty, others KL."),
    variance_power: float = typer.Option(1.0, "--variance-power", min=0, metavar="X", help="var-kl: sigma^p scales the KL (1 or 2)."),
    adaptive_kl: bool = typer.Option(False, "--adaptive-kl", help="Adapt beta towards --target-kl."),
    target_kl: float = typer.Option(6.0, "--target-kl", callback=positive, metavar="X", help="--adaptive-kl: the KL to the reference (nats per response) beta is steered towards."),
    steps: int = typer.Option(100, "--steps", min=1, metavar="N", help="PPO iterations."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, metavar="N", help="Rollouts per iteration."),
    mini_batch_size: int = typer.Option(8, "--mini-batch-size", min=1, metavar="N", help="Rollouts per optimizer step (divides --batch-size)."),
    ppo_epochs: int = typer.Option(4, "--ppo-epochs", min=1, metavar="N", help="Passes over each batch of rollouts."),
    lr: float = typer.Option(1.41e-5, "--lr", callback=positive, metavar="X", help="Learning rate (AdamW)."),
    critic: str = typer.Option("shared", "--critic", metavar="shared|separate|shared-body", help="shared (a value head on the policy's features; its loss does not train the policy), separate (own copy of the policy, clipped on its own), or shared-body (the head's loss also trains the policy's body: the old default, which can collapse; docs/results.md §5.5)."),
    critic_lr: Optional[float] = typer.Option(None, "--critic-lr", callback=positive, metavar="X", help="Value model's learning rate (default: --lr)."),
    vf_coef: float = typer.Option(0.1, "--vf-coef", min=0, metavar="X", help="Weight of the value loss in the PPO loss."),
    clip: float = typer.Option(0.2, "--clip", callback=positive, metavar="X", help="Policy ratio clip."),
    value_clip: float = typer.Option(0.2, "--value-clip", callback=positive, metavar="X", help="Clip the value update to +-this around the rollout's values."),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", callback=positive, metavar="X", help="Clip the gradient's global norm to this (every engine; under DeepSpeed through its gradient_clipping). The log's grad_norm is before clipping."),
    gamma: float = typer.Option(1.0, "--gamma", min=0, max=1, metavar="X", help="Discount per token (the papers: 1)."),
    lam: float = typer.Option(0.95, "--lam", min=0, max=1, metavar="X", help="GAE lambda."),
    score_clip: float = typer.Option(5.0, "--score-clip", callback=positive, metavar="X", help="Clip the sequence score to +-this."),
    max_prompt_length: int = typer.Option(256, "--max-prompt-length", min=1, metavar="N", help="Longest prompt, in tokens (truncated from the left)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, metavar="N", help="Longest response, in tokens."),
    chat_template: Optional[bool] = CHAT_TEMPLATE,
    temperature: float = typer.Option(1.0, "--temperature", callback=positive, metavar="X", help="Sampling temperature (1 = the policy's own distribution)."),
    top_p: float = typer.Option(1.0, "--top-p", callback=unit_left_open, metavar="X", help="Nucleus sampling: keep the smallest set of tokens with this total probability (1 = off)."),
    sample_steps: int = typer.Option(10, "--sample-steps", min=0, metavar="N", help="Append the batch to samples.jsonl every N steps."),
    save_steps: int = typer.Option(50, "--save-steps", min=0, metavar="N", help="Checkpoint every N steps and at the last one, so a finished run continues with more --steps --resume (0: never)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out."),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp32|bf16|fp16", help="Compute precision: auto (fp32 on CPU, bf16 on capable GPUs), fp32, bf16, fp16; trained weights stay fp32."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (peft) and the value head; the reference is the policy with adapters off (no second copy); merged on save."),
    lora_r: int = typer.Option(16, "--lora-r", min=1, metavar="N", help="--lora: adapter rank."),
    lora_alpha: int = typer.Option(32, "--lora-alpha", min=1, metavar="N", help="--lora: adapter scaling alpha (the update is scaled by alpha / r)."),
    fields: Optional[str] = FIELDS,
    seed: int = SEED,
    config: Optional[str] = CONFIG,
) -> None:
    """Optimise a causal-LM policy against a reward with PPO.

    Token-level PPO (policy, frozen reference, value model, reward): r_t = -beta * pen_t on every
    response token plus the clipped score on the last; GAE (gamma 1, lambda 0.95); clipped
    policy and value losses. Writes the policy directory, log.jsonl (reward, KL, entropy,
    perplexity, length, clip fraction, value loss, approx-KL, gradient norm per step) and samples.jsonl.
    """
    from ..io import summary
    from ..ppo.trainer import PPOConfig, check_config, train_ppo
    from ..prompts import read_prompts

    from ..io import check_dir_output, field_map

    values = apply_config(ctx, config, dict(locals()))
    check_dir_output(values["out"])
    cfg = PPOConfig(**{k: v for k, v in values.items() if k in PPOConfig.__dataclass_fields__})
    check_config(cfg)
    prompt_list = read_prompts(values["prompts"], field_map(values["fields"]))
    result = train_ppo(cfg, prompt_list)
    summary(stage="ppo", out=cfg.out, prompts=len(prompt_list), **result)
