"""prepare_rope: what the plugin changes in vLLM's config before the model is built."""

import pytest
from transformers import LlamaConfig

from longctx.rope import META_KEY, RopeConfigError, extend_config

BASE = {"model_type": "llama", "max_position_embeddings": 128, "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 512,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}


def hf(config: dict) -> LlamaConfig:
    return LlamaConfig(**config)


def test_linear_is_left_as_vllm_builds_it():
    from plugin.models import prepare_rope

    cfg = hf(extend_config(BASE, "linear", 512))
    prepare_rope(cfg)
    assert cfg.max_position_embeddings == 128
    assert cfg.rope_parameters["rope_type"] == "linear" and cfg.rope_parameters["factor"] == 4.0


def test_dynamic_gets_a_cache_for_the_whole_length():
    from plugin.models import prepare_rope

    cfg = hf(extend_config(BASE, "dynamic", 512))
    prepare_rope(cfg)
    assert cfg.max_position_embeddings == 512
    assert cfg.rope_parameters["max_trained_positions"] == 128


def test_dynamic_rope_matches_transformers_at_full_length():
    """vLLM's cos/sin for position p equal transformers' dynamic-NTK ones for a full-length sequence."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    from longctx.rope import serving_rope

    config = extend_config(BASE, "dynamic", 512)
    rope = serving_rope(config)
    with set_current_vllm_config(VllmConfig()):
        vllm_rope = get_rope(16, max_position=rope.max_position, rope_parameters=rope.rope_parameters,
                             dtype=torch.float32)
    hf_rope = LlamaRotaryEmbedding(hf(config))
    positions = torch.arange(512)[None]
    cos, _ = hf_rope(torch.zeros(1, 512, 16), positions)  # transformers rescales for seq_len 512
    vllm_cos = vllm_rope.cos_sin_cache[:512, :8]
    torch.testing.assert_close(vllm_cos, cos[0, :, :8], rtol=1e-4, atol=1e-4)


def test_refuses_a_checkpoint_whose_rope_was_lost():
    from plugin.models import prepare_rope

    broken = extend_config(BASE, "linear", 512)
    broken["rope_parameters"] = dict(BASE["rope_parameters"])
    assert broken[META_KEY]["trained_context"] == 512
    with pytest.raises(RopeConfigError, match="allows only 128"):
        prepare_rope(hf(broken))


@pytest.mark.parametrize("method", ["linear", "yarn", "dynamic"])
@pytest.mark.parametrize("with_metadata", [True, False])
def test_prepare_rope_twice_is_once(method, with_metadata):
    """vLLM may build the model more than once on one hf_config: the second call must change nothing
    (it used to take the already-raised max_position_embeddings for the original and turn NTK off)."""
    from plugin.models import prepare_rope

    config = extend_config(BASE, method, 512)
    if not with_metadata:
        del config[META_KEY]
    once, twice = hf(config), hf(config)
    prepare_rope(once)
    prepare_rope(twice)
    prepare_rope(twice)
    assert twice.rope_parameters == once.rope_parameters
    assert twice.max_position_embeddings == once.max_position_embeddings
