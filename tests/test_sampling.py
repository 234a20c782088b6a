"""Issue 25 (sampling): rollouts draw exactly the tokens the log-probs describe, whatever the model's
generation_config asks for, and every end-of-sequence token the model declares ends a response."""

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
