"""The one architecture table: which families longctx trains and serves, under which names.

Merged checkpoints name their family's standard architecture (what transformers, vLLM and llama.cpp's
converter know) and carry the `longctx` metadata block; the plugin, when installed, serves the standard
names through vLLM's own class for the family with the RoPE checked (a no-op for checkpoints without
the block). The `Longctx*` names are what earlier checkpoints named, and what `python -m serve` asks vLLM
for, so the plugin's checks run whatever the checkpoint names."""

from __future__ import annotations

FAMILIES = {  # config.json model_type -> the architecture name transformers and vLLM use for it
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",  # linear RoPE only, written as LongRoPE (longctx/rope.py)
}
PREFIX = "Longctx"
PLUGIN_ARCH = {model_type: PREFIX + arch for model_type, arch in FAMILIES.items()}  # model_type -> our name


def is_ours(arch: str) -> bool:
    """Whether an architecture name is one of the plugin's own (`Longctx*`)."""
    return arch.startswith(PREFIX) and arch[len(PREFIX):] in FAMILIES.values()
