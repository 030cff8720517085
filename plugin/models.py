"""Model classes for longctx checkpoints: vLLM's own implementation of each family, with the RoPE
checked against the longctx metadata and built for the whole served length.

Imported lazily by vLLM (worker process) through the strings in `plugin.ARCHITECTURES`."""

from __future__ import annotations

from vllm.config import VllmConfig
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.mistral import MistralForCausalLM
from vllm.model_executor.models.phi3 import Phi3ForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from longctx.rope import META_KEY, check_config, serving_rope, unprepared
from longctx.archs import is_ours


def prepare_rope(hf_config) -> None:
    """Refuse an inconsistent checkpoint, then point the config at the RoPE vLLM must build.

    Only dynamic NTK changes: vLLM's cache would otherwise stop at max_position_embeddings and yield
    NaN beyond it (see `longctx.rope.serving_rope`). Idempotent: a second call changes nothing."""
    config = unprepared(hf_config.to_dict())
    check_config(config)
    rope = serving_rope(config)
    hf_config.rope_parameters = rope.rope_parameters
    hf_config.max_position_embeddings = rope.max_position


def is_longctx(hf_config) -> bool:
    """A checkpoint longctx wrote (its metadata block), or one `python -m serve` asked our class for."""
    return META_KEY in hf_config.to_dict() or any(is_ours(a) for a in getattr(hf_config, "architectures", None) or [])


def with_checked_rope(base: type) -> type:
    """vLLM's model class `base`, built after `prepare_rope` for longctx checkpoints; unchanged for others
    (the plugin serves the family's standard name too)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "", **kwargs) -> None:
        if is_longctx(vllm_config.model_config.hf_config):
            prepare_rope(vllm_config.model_config.hf_config)
        base.__init__(self, vllm_config=vllm_config, prefix=prefix, **kwargs)

    name = "Longctx" + base.__name__
    doc = (f"vLLM's {base.__name__} for checkpoints written by longctx: the RoPE checked, then built for the "
           "whole served length.")
    return type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__, "__qualname__": name})


LongctxLlamaForCausalLM = with_checked_rope(LlamaForCausalLM)  # Llama 2/3, SmolLM2
LongctxMistralForCausalLM = with_checked_rope(MistralForCausalLM)
LongctxQwen2ForCausalLM = with_checked_rope(Qwen2ForCausalLM)
LongctxQwen3ForCausalLM = with_checked_rope(Qwen3ForCausalLM)
LongctxPhi3ForCausalLM = with_checked_rope(Phi3ForCausalLM)
