"""What trains, declared in one place, and saved by peft so an adapter folder is self-contained.

- longlora: LoRA r=8, alpha=16, dropout 0 on q,k,v,o (Phi-3: its fused qkv, and o) plus trainable token embeddings and every norm
  (LongLoRA §3.3 "LoRA+"; without embeddings and norms LoRA does not adapt to long context, Table 2).
- lora: the same LoRA alone (the paper's ablation).
- full: every weight trains (the paper's baseline).
"""

from __future__ import annotations

from pathlib import Path

import torch

# peft matches these as suffixes of module names, and needs only some to exist: Phi-3 projects q, k and v
# with one fused `qkv_proj`, the other families with three.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj")
# Every norm: each block's two, the final one ("model.norm"), and Qwen3's per-head q_norm and k_norm.
LONGLORA_EXTRA = ("embed_tokens", "input_layernorm", "post_attention_layernorm", "model.norm", "q_norm", "k_norm")
ADAPTER_MODES = ("longlora", "lora")


def lora_config(mode: str, tied_embeddings: bool):
    """The peft LoraConfig for an adapter mode."""
    from peft import LoraConfig

    return LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM",
        modules_to_save=list(LONGLORA_EXTRA) if mode == "longlora" else None,
        # A tied lm_head must follow the trained embeddings, or the merged checkpoint (which stores one
        # matrix for both) would differ from the adapter model.
        ensure_weight_tying=mode == "longlora" and tied_embeddings,
    )


def apply_mode(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Make `mode`'s parameters trainable: a PeftModel for adapter modes, the model itself for full."""
    if mode == "full":
        model.requires_grad_(True)
        return model
    from peft import get_peft_model

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return get_peft_model(model, lora_config(mode, tied))


def load_adapter(base: torch.nn.Module, adapter_dir: Path, trainable: bool = False) -> torch.nn.Module:
    """Attach a saved adapter (LoRA and, for longlora, its embeddings and norms) to a base model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)


def trainable_count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
