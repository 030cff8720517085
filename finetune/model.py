"""Load a base model with its RoPE extended to the target length (the same config train and merge use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from finetune.config import UsageError
from longctx.archs import PLUGIN_ARCH
from longctx.rope import as_served, extend_config


# Families transformers 5 and vLLM 0.32 both implement that S²-Attn or our RoPE rules cannot take as they are.
REFUSED = {
    "gemma2": "its attention soft-caps the logits and alternates sliding-window layers",
    "gemma3": "it alternates sliding-window and global attention layers",
    "cohere2": "it alternates sliding-window and global attention layers",
}


def read_config(model_dir: Path) -> dict[str, Any]:
    """The base model's config.json, or a UsageError naming the folder."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except OSError:
        raise UsageError(f"{model_dir} is not a model folder (no readable config.json)") from None
    except ValueError:
        raise UsageError(f"{path} is not valid JSON") from None
    model_type = config.get("model_type")
    if model_type not in PLUGIN_ARCH:
        why = f" ({REFUSED[model_type]})" if model_type in REFUSED else ""
        raise UsageError(f"model type {model_type!r} is not supported{why}; "
                         f"longctx trains {', '.join(PLUGIN_ARCH)} models")
    return config


def extended_config(model_dir: Path, method: str, target_length: int) -> dict[str, Any]:
    """config.json with RoPE extended by `longctx.rope.extend_config` (refuses models without RoPE)."""
    return extend_config(read_config(model_dir), method, target_length)


def load_extended(model_dir: Path, method: str, target_length: int, dtype=torch.float32):
    """The base causal LM built from the extended config, so its rotary embedding already interpolates.
    For training: dynamic NTK stays transformers' per-length one (eval loads with `load_as_served`)."""
    return load_with_rope(model_dir, extended_config(model_dir, method, target_length), dtype)


def load_as_served(model_dir: Path, config: dict[str, Any], dtype=torch.float32):
    """The causal LM in `model_dir` with the RoPE the plugin serves for `config` (`longctx.rope.as_served`):
    what evaluation must measure."""
    return load_with_rope(model_dir, as_served(config), dtype)


def load_with_rope(model_dir: Path, config: dict[str, Any], dtype=torch.float32):
    """The causal LM in `model_dir` with `config`'s rope_parameters and max_position_embeddings."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.from_pretrained(model_dir)
    if "rope_parameters" in config:  # else (an old rope_scaling config.json) transformers reads its own
        hf_config.rope_parameters = config["rope_parameters"]
    hf_config.max_position_embeddings = config["max_position_embeddings"]
    return AutoModelForCausalLM.from_pretrained(model_dir, config=hf_config, dtype=dtype)


def load_tokenizer(model_dir: Path):
    """The model's tokenizer; pad falls back to EOS (padding is masked anyway)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.eos_token_id is None:
        raise UsageError(f"the tokenizer in {model_dir} has no EOS token; documents cannot be joined")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
