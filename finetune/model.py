"""Load a base model with its RoPE extended to the target length (the same config train and merge use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from finetune.config import UsageError
from finetune.default_model import PLUGIN_ARCH
from finetune.rope import extend_config


def read_config(model_dir: Path) -> dict[str, Any]:
    """The base model's config.json, or a UsageError naming the folder."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except OSError:
        raise UsageError(f"{model_dir} is not a model folder (no readable config.json)") from None
    except ValueError:
        raise UsageError(f"{path} is not valid JSON") from None
    if config.get("model_type") not in PLUGIN_ARCH:
        raise UsageError(f"model type {config.get('model_type')!r} is not supported; "
                         f"longctx trains {', '.join(PLUGIN_ARCH)} models")
    return config


def extended_config(model_dir: Path, method: str, target_length: int) -> dict[str, Any]:
    """config.json with RoPE extended by `finetune.rope.extend_config` (refuses models without RoPE)."""
    return extend_config(read_config(model_dir), method, target_length)


def load_extended(model_dir: Path, method: str, target_length: int, dtype=torch.float32):
    """The base causal LM built from the extended config, so its rotary embedding already interpolates."""
    from transformers import AutoConfig, AutoModelForCausalLM

    extended = extended_config(model_dir, method, target_length)
    config = AutoConfig.from_pretrained(model_dir)
    config.rope_parameters = extended["rope_parameters"]
    config.max_position_embeddings = extended["max_position_embeddings"]
    return AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=dtype)


def load_tokenizer(model_dir: Path):
    """The model's tokenizer; pad falls back to EOS (padding is masked anyway)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.eos_token_id is None:
        raise UsageError(f"the tokenizer in {model_dir} has no EOS token; documents cannot be joined")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
