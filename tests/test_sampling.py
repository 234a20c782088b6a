"""Issue 25, what runs on CPU: rollouts draw exactly the tokens the log-probs describe; LoRA saves,
resumes and rollout memory; and the sharded paths' pieces (DeepSpeed config, FSDP wrapping and
FSDP2 generation, refusals of combinations that cannot work)."""

from pathlib import Path

import pytest
import torch

from rlhfkit.models import load_model, load_tokenizer
from rlhfkit.ppo.policy import RowSampler, encode_prompts, generate, position_ids, response_mask


def tiny_policy():
    tok = load_tokenizer("tiny-gpt")
    model = load_model("tiny-gpt", "causal-lm").eval()
    return tok, model


def test_sampling_ignores_the_models_own_logits_processors():
    """repetition_penalty and suppress_tokens in the model's generation_config would reshape the
    distribution before the sampler, while the log-probs assume softmax(logits / T). The first
    token of every row must be the Gumbel-max draw (same row seeds) from the model's raw logits."""
    tok, model = tiny_policy()
    vocab = model.config.vocab_size
    model.generation_config.repetition_penalty = 50.0
    model.generation_config.suppress_tokens = list(range(0, vocab - 3))  # all but a few tokens
    ids, mask = encode_prompts(tok, ["a film", "the plot was", "i liked"], 32, "cpu", chat_template=False)
    seeds = [11, 12, 13]
    response, _ = generate(model, tok, ids, mask, 3, temperature=0.7, top_p=0.9, row_seeds=seeds)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
    expected = RowSampler(seeds, 0.7, 0.9)(ids, logits).argmax(-1)
    assert response[:, 0].tolist() == expected.tolist()
    greedy, _ = generate(model, tok, ids, mask, 1, greedy=True)
    assert greedy[:, 0].tolist() == logits.argmax(-1).tolist()


def test_every_eos_the_model_declares_ends_the_response():
    """Llama-3 style: generation_config.eos_token_id is a list (end-of-turn and end-of-text); the
    tokenizer knows one. A response ends at the first of any of them."""
    tok, model = tiny_policy()
    ids, mask = encode_prompts(tok, ["a film", "the plot was"], 32, "cpu", chat_template=False)
    free, _ = generate(model, tok, ids, mask, 4, row_seeds=[1, 2])
    first = free[0, 0].item()
    model.generation_config.eos_token_id = [tok.eos_token_id, first]
    response, resp_mask = generate(model, tok, ids, mask, 4, row_seeds=[1, 2])
    assert response[0, 0].item() == first and resp_mask[0].tolist() == [1, 0, 0, 0]
    m = response_mask(torch.tensor([[5, 7, 9, 7], [3, 4, 6, 8]]), [9, 4])
    assert m.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]


def test_a_lora_policy_saved_merged_scores_like_its_adapters(tmp_path):
    """Under --lora the base is held in the compute dtype (bf16 here); merging the fp32 adapters into
    bf16 weights rounds small updates away, so the saved policy differed from the trained one. The
    saved policy, read in fp32, must give the adapter model's log-probs (computed in fp32)."""
    import json

    from safetensors.torch import load_file

    from conftest import cli, write_jsonl
    from rlhfkit.ppo.policy import forward_response
    from rlhfkit.ppo.trainer import PPOConfig, add_policy_lora

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"review {w}"} for w in "abcdefgh"])
    from pathlib import Path

    reward = f"{Path(__file__).with_name('scripted_rewards.py')}:byte_mix"
    base = tmp_path / "base"  # a model directory: its weights load in the asked dtype (tiny aliases stay fp32)
    load_model("tiny-gpt", "causal-lm").save_pretrained(base)
    load_tokenizer("tiny-gpt").save_pretrained(base)
    out = tmp_path / "run"
    r = cli("ppo", "--policy", base, "--reward", reward, "--prompts", prompts, "--lora", "--dtype", "bf16",
            "--steps", 2, "--batch-size", 4, "--mini-batch-size", 2, "--max-new-tokens", 4, "--lr", 2e-3,
            "--save-steps", 2, "--out", out)
    assert r.exit_code == 0, r.stderr[-2000:]
    cfg = PPOConfig(policy=str(base), reward=reward, out=str(out), lora=True)
    adapters = add_policy_lora(load_model(str(base), "causal-lm", dtype=torch.bfloat16), cfg)
    assert next(p for p in adapters.parameters() if not p.requires_grad).dtype == torch.bfloat16
    from rlhfkit.trainstate import read_weights

    trained = read_weights(out / "checkpoints" / "step-2")
    missing = adapters.load_state_dict({k.removeprefix("policy."): v for k, v in trained.items()
                                        if k.startswith("policy.")}, strict=False)
    assert not missing.unexpected_keys
    adapters = adapters.float().eval()  # the trained model, computed in fp32
    saved = load_model(str(out), "causal-lm", dtype=torch.float32).eval()
    tok = load_tokenizer(str(out))
    ids, mask = encode_prompts(tok, ["review a", "review b"], 32, "cpu")
    response, resp_mask = generate(saved, tok, ids, mask, 5, row_seeds=[3, 4])
    with torch.no_grad():
        want = forward_response(adapters, ids, mask, response, resp_mask)[0]
        got = forward_response(saved, ids, mask, response, resp_mask)[0]
    assert (got - want).abs().max().item() < 1e-3
    # and the weights themselves: base + B·A·(alpha/r) in fp32, not rounded to bf16 (an update smaller than
    # half a bf16 step of its weight vanished entirely)
    expected = {k: v for k, v in adapters.merge_and_unload().state_dict().items()}
    weights = saved.state_dict()
    worst = max((weights[k].float() - v.float()).abs().max().item() for k, v in expected.items() if k in weights)
    assert worst < 1e-6
    assert json.loads((out / "rlhfkit.json").read_text())["type"] == "policy"


def test_resume_refuses_a_checkpoint_whose_weights_do_not_match(tmp_path):
    """The actor's checkpoint was loaded with strict=False (frozen weights are not saved), so a renamed
    or missing trainable weight was skipped silently and the run resumed from initial weights."""
    from pathlib import Path

    import json

    from conftest import cli

    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n")
    reward = f"{Path(__file__).with_name('scripted_rewards.py')}:byte_mix"
    args = ["ppo", "--policy", "tiny-gpt", "--reward", reward, "--prompts", prompts, "--out", tmp_path / "o",
            "--batch-size", 2, "--mini-batch-size", 2, "--max-new-tokens", 3, "--save-steps", 1]
    assert cli(*args, "--steps", 1).exit_code == 0
    index_path = tmp_path / "o" / "checkpoints" / "step-1" / "trainable.index.json"
    index = json.loads(index_path.read_text())
    name = next(k for k in index if "::" not in k)
    index["renamed." + name] = index.pop(name)  # a checkpoint of another model's weights
    index_path.write_text(json.dumps(index))
    r = cli(*args, "--steps", 2, "--resume")
    assert r.exit_code == 2 and "do not match this run's trainable ones" in r.stderr


def test_rollout_forwards_by_rows_give_the_whole_batch_forward():
    """The rollout's actor, critic and reference forwards run a mini-batch's rows at a time (memory at
    the papers' sizes); the log-probs, values and entropy are the one-call ones."""
    from rlhfkit.ppo.policy import ActorCritic, ValueHead
    from rlhfkit.ppo.trainer import by_rows

    tok, model = tiny_policy()
    actor = ActorCritic(model, ValueHead(model.config.hidden_size))
    torch.nn.init.normal_(actor.value_head.linear.weight, std=0.1)
    ids, mask = encode_prompts(tok, ["a film", "the plot was long", "i", "so"], 32, "cpu", chat_template=False)
    response, resp_mask = generate(model, tok, ids, mask, 5, row_seeds=[1, 2, 3, 4])
    args = (ids, mask, response, resp_mask)
    with torch.no_grad():
        whole = actor(*args, 1.0, with_entropy=True)
        for rows in (1, 3):
            parts = by_rows(lambda *a: actor(*a, 1.0, with_entropy=True), args, rows)
            for w, p in zip(whole, parts):
                assert p.shape == w.shape and torch.allclose(p, w, atol=1e-5)
        assert by_rows(lambda *a: actor(*a, 1.0)[1:], args, 2)[1] is None  # entropy not asked: None kept


def test_fsdp_wraps_every_transformer_layer_of_rlhfkits_wrappers():
    """accelerate's transformer-based FSDP wrapping reads `_no_split_modules` from the top module it is
    given; rlhfkit hands it ActorCritic / TrainModule / Critic, which lacked it, so the whole model
    became one FSDP unit (every forward gathered all weights). Each must expose its inner model's
    layers, and the policy accelerate builds from it must pick one unit per transformer layer."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    from rlhfkit.ppo.policy import ActorCritic, Critic, ValueHead
    from rlhfkit.rewards.model import RewardModel
    from rlhfkit.rewards.train import TrainConfig, TrainModule

    policy = load_model("tiny-llama", "causal-lm")
    layers = policy.config.num_hidden_layers
    wrappers = [ActorCritic(policy, ValueHead(policy.config.hidden_size)),
                Critic(load_model("tiny-llama", "causal-lm")),
                TrainModule(RewardModel(load_model("tiny-llama", "reward")), TrainConfig(model="tiny-llama", out=None))]
    for wrapper in wrappers:
        plugin = FullyShardedDataParallelPlugin(auto_wrap_policy="transformer_based_wrap")
        plugin.set_auto_wrap_policy(wrapper)
        units = sum(bool(plugin.auto_wrap_policy(module=m, recurse=False, nonwrapped_numel=0)) for m in wrapper.modules())
        assert units >= layers, type(wrapper).__name__


def test_fsdp2_generation_gathers_the_root_modules_weights():
    """Under FSDP2 (fully_shard, the shipped fsdp.yaml's version) generation ran on sharded DTensor
    weights (FSDP1's summon_full_params does nothing there): it failed outright. Run on a one-process
    gloo group on CPU, the sharded policy must generate the tokens the plain one does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("fsdp2_generation.py")
    port = str(29500 + os.getpid() % 400)
    p = subprocess.run([sys.executable, str(script), port], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]


# ---------------------------------------------------------------- the sharded engines, as the trainers see them
# DeepSpeed and FSDP do not run on CPU through accelerate, so an Accelerator that reports one of them
# (its state seen through a view: the real, shared AcceleratorState is untouched) drives the trainers
# themselves: each test asserts what the trainer did with the engine it was told it has, so a check
# that is never called, or a fallback to plain DDP, fails.

class Stop(Exception):
    """Raised by the fake engine's prepare: what the trainer handed it has been recorded."""


class StateView:
    def __init__(self, real, **override):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_override", override)

    def __getattr__(self, name):
        return self._override[name] if name in self._override else getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)


@pytest.fixture
def engine(monkeypatch):
    """engine(kind, **plugin) makes every Accelerator the trainers build report ``kind`` with a plugin
    holding ``plugin``; returns what its prepare received (and the DeepSpeed config at that moment)."""
    from types import SimpleNamespace

    import accelerate
    from accelerate.utils import DistributedType

    seen: dict = {}

    def install(kind, **plugin):
        deepspeed_plugin = SimpleNamespace(deepspeed_config={"train_micro_batch_size_per_gpu": "auto",
                                                             "gradient_accumulation_steps": 1,
                                                             "gradient_clipping": 1.0}, zero3_init_flag=False)
        fsdp_plugin = SimpleNamespace(cpu_ram_efficient_loading=False, reshard_after_forward=True)
        for key, value in plugin.items():
            setattr(deepspeed_plugin if kind == DistributedType.DEEPSPEED else fsdp_plugin, key, value)

        class Engine(accelerate.Accelerator):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.state = StateView(self.state, distributed_type=kind, deepspeed_plugin=deepspeed_plugin,
                                       fsdp_plugin=fsdp_plugin)

            def prepare(self, *objects):
                seen["prepared"] = [type(o).__name__ for o in objects]
                seen["deepspeed_config"] = dict(deepspeed_plugin.deepspeed_config)
                raise Stop

        monkeypatch.setattr(accelerate, "Accelerator", Engine)
        return seen

    return install


def ppo_config(tmp_path, **overrides):
    from rlhfkit.ppo.trainer import PPOConfig

    reward = f"{Path(__file__).with_name('scripted_rewards.py')}:byte_mix"
    return PPOConfig(**{"policy": "tiny-gpt", "reward": reward, "out": str(tmp_path / "o"), "batch_size": 4,
                        "mini_batch_size": 2, "max_new_tokens": 3, "save_steps": 0, **overrides})


@pytest.mark.parametrize("kind, plugin, refused", [
    ("FSDP", {"cpu_ram_efficient_loading": True}, "cpu_ram_efficient_loading"),
    ("DEEPSPEED", {}, "--critic separate"),
    ("FSDP", {"fsdp_version": 2}, "--critic separate")])
def test_ppo_refuses_engine_settings_that_cannot_work_before_loading_a_model(tmp_path, monkeypatch, engine, kind,
                                                                               plugin, refused):
    """FSDP's cpu_ram_efficient_loading gives processes > 0 empty weights that only wrapped models
    receive: ppo's reference and reward models are never wrapped, so they would run empty. One
    DeepSpeed engine wraps one model (a separate critic would leave the actor outside it), and
    accelerate's FSDP2 prepares one model only. Each is refused before any model loads; the shipped
    fsdp.yaml turns that loading mode off."""
    import yaml
    from accelerate.utils import DistributedType

    from rlhfkit.io import UsageError
    from rlhfkit.ppo import trainer

    engine(getattr(DistributedType, kind), **plugin)
    loads = []
    monkeypatch.setattr(trainer, "load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(UsageError, match=refused):
        trainer.PPOTrainer(ppo_config(tmp_path, critic="separate" if refused == "--critic separate" else "shared"))
    assert loads == []
    accelerate_dir = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
    assert yaml.safe_load((accelerate_dir / "fsdp.yaml").read_text())["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] is False


def test_deepspeed_engines_get_the_flags_batch_accumulation_and_clipping(tmp_path, engine):
    """accelerate fills DeepSpeed's "auto" micro batch only from a dataloader (rlhfkit passes none, so
    prepare refused to start), and the YAML's gradient_accumulation_steps and gradient_clipping won over
    the flags. What each trainer's engine holds when prepare is called: train-rm (global batch 8,
    --grad-accum 2, no clipping) and ppo (mini-batch 2, its clip of 1.0)."""
    from accelerate.utils import DistributedType

    from rlhfkit import synth
    from rlhfkit.records import parse_record
    from rlhfkit.ppo.trainer import PPOTrainer
    from rlhfkit.rewards.train import TrainConfig, fit_reward_model

    seen = engine(DistributedType.DEEPSPEED)
    pairs = [parse_record(r) for r in synth.pairs(16, 0.0, seed=0)]
    with pytest.raises(Stop):
        fit_reward_model(TrainConfig(model="tiny-bert", out=None, batch_size=8, grad_accum=2, save_steps=0), pairs,
                         progress=False)
    assert seen["prepared"] == ["TrainModule", "AdamW"]
    assert {k: seen["deepspeed_config"][k] for k in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                                     "train_batch_size", "gradient_clipping")} == {
        "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2, "train_batch_size": 16,
        "gradient_clipping": 0.0}
    with pytest.raises(Stop):
        PPOTrainer(ppo_config(tmp_path))
    assert seen["prepared"] == ["ActorCritic", "AdamW"]
    assert seen["deepspeed_config"]["train_micro_batch_size_per_gpu"] == 2
    assert seen["deepspeed_config"]["gradient_accumulation_steps"] == 1
    assert seen["deepspeed_config"]["gradient_clipping"] == 1.0


def test_metarm_is_refused_under_deepspeed_before_loading(monkeypatch, engine):
    """MetaRM's inner ascent step reads and moves the parameters' gradients itself; a DeepSpeed engine
    keeps them in its own buffers and steps inside backward (two CPU processes failed with an
    IndexError under ZeRO-2 and a shape error under ZeRO-3). Refused before the model loads; FSDP2
    runs it (equal to one process, checked by hand in the issue 25 note)."""
    from accelerate.utils import DistributedType

    from rlhfkit import synth
    from rlhfkit.io import UsageError
    from rlhfkit.records import parse_record
    from rlhfkit.rewards import train

    engine(DistributedType.DEEPSPEED)
    pairs = [parse_record(r) for r in synth.pairs(8, 0.0, seed=0)]
    meta = [parse_record({"prompt": "p", "responses": ["a b", "c d"]})]
    loads = []
    monkeypatch.setattr(train, "load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(UsageError, match="MetaRM"):
        train.fit_reward_model(train.TrainConfig(model="tiny-bert", out=None, batch_size=4, save_steps=0), pairs,
                               meta_examples=meta, progress=False)
    assert loads == []


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-llama"])
def test_the_reference_is_a_frozen_copy_in_the_compute_dtype_made_tensor_by_tensor(name):
    """ppo's reference was deepcopy(policy).to(bf16): two whole fp32 copies at once (56 GB of host
    memory per process at 7B). frozen_copy builds it on the meta device and fills it one tensor at a
    time; it must compute exactly what the cast deepcopy computed (rotary tables, tied embeddings)."""
    import copy

    from rlhfkit.models import frozen_copy, load_model

    policy = load_model(name, "causal-lm")
    ids = torch.tensor([[5, 17, 33, 2, 9, 41, 7, 12]])
    for dtype in (torch.float32, torch.bfloat16):
        ref = frozen_copy(policy, dtype, "cpu")
        cast = copy.deepcopy(policy).to("cpu", dtype).eval()
        with torch.no_grad():
            assert torch.equal(ref(ids).logits, cast(ids).logits)
        assert {p.dtype for p in ref.parameters()} == {dtype} and not any(p.requires_grad for p in ref.parameters())
        assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in policy.parameters())  # ties kept
        assert not ref.training
    assert all(p.requires_grad for p in policy.parameters())  # the policy itself untouched


def test_a_plain_run_prints_no_deepspeed_notice(tmp_path):
    """With the deepspeed extra installed, every one-process ppo run printed DeepSpeed's "Setting
    accelerator to CPU" warning (accelerate imports DeepSpeed whenever it is installed)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    reward = f"{Path(__file__).with_name('scripted_rewards.py')}:byte_mix"
    (tmp_path / "p.txt").write_text("a\nb\n")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}  # as a user's shell has it
    r = subprocess.run([sys.executable, "-m", "rlhfkit", "ppo", "--policy", "tiny-gpt", "--reward", reward,
                        "--prompts", str(tmp_path / "p.txt"), "--steps", "1", "--batch-size", "2",
                        "--mini-batch-size", "2", "--max-new-tokens", "2", "--save-steps", "0",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Setting accelerator" not in r.stderr, r.stderr


def test_ppo_state_does_not_import_the_trainer():
    """ppo/state.py reached back into ppo/trainer.py (which imports state) for add_policy_lora."""
    import ast

    source = (Path(__file__).resolve().parents[1] / "rlhfkit" / "ppo" / "state.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert "trainer" not in imported and "rlhfkit.ppo.trainer" not in imported


def test_generation_asks_for_no_per_token_collective(monkeypatch):
    """transformers turns synced_gpus on under any live ZeRO-3 config (a collective per token, finished
    ranks decoding on); the rollout gathers whole weights first, so generate asks for it off."""
    policy, tok = load_model("tiny-gpt", "causal-lm"), load_tokenizer("tiny-gpt")
    seen = {}
    original = policy.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(policy, "generate", spy)
    ids, mask = encode_prompts(tok, ["a"], 8, "cpu")
    generate(policy, tok, ids, mask, 2, row_seeds=[1])
    assert seen["synced_gpus"] is False


@pytest.mark.parametrize("overrides, refused", [({"dtype": "fp16"}, "fp16"), ({"contrastive": "swav"}, "--contrastive")])
def test_metarm_refuses_what_its_ascent_step_cannot_do_before_loading(monkeypatch, overrides, refused):
    """MetaRM's ascent step now reads ∇J from .grad (issue 33): under fp16 the loss scaler would scale it
    by 65536 (and overflow), and with SwAV the meta forward leaves the prototypes without a gradient
    (DDP's reducer then fails on the next step). Both refused before the model loads."""
    from rlhfkit import synth
    from rlhfkit.io import UsageError
    from rlhfkit.records import parse_record
    from rlhfkit.rewards import train

    pairs = [parse_record(r) for r in synth.pairs(8, 0.0, seed=0)]
    meta = [parse_record({"prompt": "p", "responses": ["a b", "c d"]})]
    loads = []
    monkeypatch.setattr(train, "load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(UsageError, match=refused):
        train.fit_reward_model(train.TrainConfig(model="tiny-bert", out=None, batch_size=4, save_steps=0, **overrides),
                               pairs, meta_examples=meta, progress=False)
    assert loads == []
