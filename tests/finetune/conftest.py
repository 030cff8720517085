"""Shared fixtures: one tiny random Llama (context 64) and a private LONGCTX_HOME per test."""

from __future__ import annotations

import pytest

from tests.tiny import make_tiny_checkpoint, training_text

CONTEXT = 64  # the tiny model's original context; tests train at 2x or 4x it


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), context=CONTEXT)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGCTX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def corpus(tmp_path):
    """A few text files, repeated so they pack into several 256-token blocks."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(training_text()):
        (folder / f"doc{i}.txt").write_text(text * 3)
    return folder


FAMILY_EXTRA = {  # what a family's defaults would make too big or different for the tiny size
    "qwen3": {"head_dim": 32},  # (default 128)
    "phi3": {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},  # (defaults 32000, beyond the vocab)
}


def make_family_checkpoint(out, family: str, tokenizer_from, context: int = CONTEXT, init_std: float = 0.02):
    """A tiny random model of a RoPE family (llama, mistral, qwen2, qwen3, phi3; GQA, head size 32, the
    smallest vLLM's CPU attention takes) with the tiny Llama's tokenizer."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, vocab_size=520, hidden_size=128, intermediate_size=256,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=context, tie_word_embeddings=False,
                                  initializer_range=init_std, **FAMILY_EXTRA.get(family, {}),
                                  **({"original_max_position_embeddings": context} if family == "phi3" else {}))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for f in tokenizer_from.glob("tokenizer*"):
        shutil.copy(f, out)
    return out
