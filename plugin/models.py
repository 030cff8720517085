"""Model classes for longctx checkpoints: vLLM's own implementation of each family, with the RoPE
checked against the longctx metadata and built for the whole served length.

Imported lazily by vLLM (worker process) through the strings in `plugin.ARCHITECTURES`."""

from __future__ import annotations

from vllm.config import VllmConfig
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.mistral import MistralForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM

from finetune.rope import check_config, serving_rope, unprepared


def prepare_rope(hf_config) -> None:
    """Refuse an inconsistent checkpoint, then point the config at the RoPE vLLM must build.

    Only dynamic NTK changes: vLLM's cache would otherwise stop at max_position_embeddings and yield
    NaN beyond it (see `finetune.rope.serving_rope`). Idempotent: a second call changes nothing."""
    config = unprepared(hf_config.to_dict())
    check_config(config)
    rope = serving_rope(config)
    hf_config.rope_parameters = rope.rope_parameters
    hf_config.max_position_embeddings = rope.max_position


class LongctxLlamaForCausalLM(LlamaForCausalLM):
    """Llama 2/3 and SmolLM2 checkpoints written by longctx."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "", **kwargs) -> None:
        prepare_rope(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)


class LongctxMistralForCausalLM(MistralForCausalLM):
    """Mistral checkpoints written by longctx."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "", **kwargs) -> None:
        prepare_rope(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)


class LongctxQwen2ForCausalLM(Qwen2ForCausalLM):
    """Qwen2 checkpoints written by longctx."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "", **kwargs) -> None:
        prepare_rope(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)
