"""Tiny, random-init checkpoints for tests: a BPE tokenizer trained here and a 2-layer Llama with GQA.

Everything is built locally in seconds; nothing is downloaded."""

from __future__ import annotations

import argparse
import collections
import json
import textwrap
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def training_text() -> list[str]:
    prose = " ".join(m.__doc__ or "" for m in (argparse, collections, json, textwrap))  # real English
    filler = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
              "The pass key is 12345. Remember it. What is the pass key? ")
    digits = " ".join(str(i) for i in range(1000))
    return [prose, filler * 4, digits]


def make_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on a few kB of text, with a ChatML chat template."""
    from finetune.scratch import train_tokenizer

    return train_tokenizer(training_text(), vocab_size, SPECIAL, bos="<|endoftext|>", eos="<|im_end|>",
                           pad="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def make_tiny_checkpoint(out: Path, context: int = 128, layers: int = 2, hidden: int = 128, heads: int = 4,
                         kv_heads: int = 2, rope: dict | None = None, seed: int = 0,
                         architecture: str = "LlamaForCausalLM", init_std: float = 0.2) -> Path:
    """Write a random-init Llama checkpoint (safetensors, float32) with its tokenizer to `out`.

    Head size 32 (128 / 4): the smallest vLLM's CPU attention supports.
    `init_std` is larger than usual so next-token distributions are peaked, not uniform: parity tests
    then compare clearly ranked logprobs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=context, rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if architecture != "LlamaForCausalLM":
        path = out / "config.json"
        cfg = json.loads(path.read_text())
        cfg["architectures"] = [architecture]
        path.write_text(json.dumps(cfg, indent=2))
    return out
