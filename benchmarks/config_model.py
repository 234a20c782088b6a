"""A model directory built from a published configuration with random weights, for memory and speed
runs at the papers' sizes where real weights cannot be downloaded (the GPU machine has no hub).

The shapes are the published ones (hidden size, layers, heads, intermediate size, vocabulary);
the tokenizer is rlhfkit's byte tokenizer (it only ever emits ids below 261, which every shape's
vocabulary contains), so compute and memory are those of the real model while the text is not.

    python benchmarks/config_model.py --shape llama-3.2-1b --out /tmp/llama-1b [--dtype bf16]
    rlhfkit ppo --policy /tmp/llama-1b --reward benchmarks/ppo.py:length_reward ...
"""

from __future__ import annotations

import argparse

SHAPES = {
    # meta-llama/Llama-3.2-1B config.json
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=True),
    # meta-llama/Llama-2-7b-hf config.json
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False),
    # facebook/opt-1.3b is an OPT model; its Llama-shaped equivalent in parameters, for the same code path
    "opt-1.3b-like": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                          num_key_value_heads=32, vocab_size=50272, max_position_embeddings=2048,
                          tie_word_embeddings=True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    a = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfkit.models import byte_tokenizer

    tok = byte_tokenizer()
    cfg = LlamaConfig(**SHAPES[a.shape], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if a.dtype == "bf16" else torch.float32)
    model.save_pretrained(a.out, safe_serialization=True)
    tok.save_pretrained(a.out)
    print(f"{a.shape}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters -> {a.out}")


if __name__ == "__main__":
    main()
