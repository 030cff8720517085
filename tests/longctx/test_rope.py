"""RoPE maths: factors, rope_parameters, and the serving length, checked against vLLM's own rule."""

from types import SimpleNamespace

import pytest

from longctx.rope import (META_KEY, RopeConfigError, check_config, extend_config, extension_factor,
                           length_for_factor, method_of, original_context, rope_params_of, serving_length,
                           serving_rope)

BASE = {"model_type": "llama", "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}


def vllm_max_len(config: dict) -> int:
    """What vLLM 0.32 itself derives for this config (its private function, called directly)."""
    from transformers import LlamaConfig
    from vllm.config.model import _get_and_verify_max_len

    hf = LlamaConfig(**{k: v for k, v in config.items() if k != META_KEY})
    arch = SimpleNamespace(derived_max_model_len_and_key=(config["max_position_embeddings"],
                                                          "max_position_embeddings"))
    return _get_and_verify_max_len(hf, arch, None, None, False, None)


@pytest.mark.parametrize("method", ["linear", "yarn", "dynamic"])
@pytest.mark.parametrize("target", [8192, 16384, 32768])
def test_extended_config_serves_exactly_the_target(method, target):
    extended = extend_config(BASE, method, target)
    assert serving_length(extended) == target
    assert vllm_max_len(extended) == target


def test_linear_keeps_original_max_positions_and_yarn_raises_it():
    linear = extend_config(BASE, "linear", 16384)
    assert linear["max_position_embeddings"] == 4096
    assert linear["rope_parameters"] == {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}
    yarn = extend_config(BASE, "yarn", 16384)
    assert yarn["max_position_embeddings"] == 16384
    assert yarn["rope_parameters"]["original_max_position_embeddings"] == 4096
    assert yarn["rope_parameters"]["factor"] == 4.0


@pytest.mark.parametrize("method", ["linear", "yarn", "dynamic"])
def test_a_partial_rotary_factor_is_kept(method):
    """Dropping it would rotate every channel of a family that rotates only some (and transformers 5
    validates some families' configs for it)."""
    partial = {**BASE, "rope_parameters": {**BASE["rope_parameters"], "partial_rotary_factor": 0.5}}
    assert extend_config(partial, method, 16384)["rope_parameters"]["partial_rotary_factor"] == 0.5
    assert "partial_rotary_factor" not in extend_config(BASE, method, 16384)["rope_parameters"]


def test_factor_composes_with_an_already_scaled_base():
    """LongLoRA issue #81: 8k (already x2 from 4k) -> 16k is x4 of the true original, not x2."""
    scaled = extend_config(BASE, "linear", 8192)
    again = extend_config(scaled, "linear", 16384)
    assert again["rope_parameters"]["factor"] == 4.0
    assert original_context(again) == 4096
    assert serving_length(again) == vllm_max_len(again) == 16384
    yarn_on_yarn = extend_config(extend_config(BASE, "yarn", 8192), "yarn", 32768)
    assert yarn_on_yarn["rope_parameters"]["factor"] == 8.0
    assert vllm_max_len(yarn_on_yarn) == 32768


def test_original_context_from_a_vendor_yarn_config_without_metadata():
    vendor = {"max_position_embeddings": 32768, "rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 1e6}}
    assert original_context(vendor) == 8192
    assert serving_length(vendor) == vllm_max_len(vendor) == 32768


def test_old_style_rope_scaling_is_read():
    old = {"max_position_embeddings": 2048, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert rope_params_of(old) == {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}
    assert serving_length(old) == 4096


@pytest.mark.parametrize("target,original", [(4096, 4096), (2048, 4096)])
def test_target_must_exceed_the_original(target, original):
    with pytest.raises(RopeConfigError, match="not above"):
        extension_factor(target, original)


def test_bad_inputs_name_the_fix():
    with pytest.raises(RopeConfigError, match="unknown RoPE method 'ntk'"):
        extend_config(BASE, "ntk", 8192)
    with pytest.raises(RopeConfigError, match="no RoPE"):
        extend_config({"max_position_embeddings": 1024}, "linear", 4096)
    with pytest.raises(RopeConfigError, match="exactly"):
        # 1001 / 1000 x 1000 is 1000.9999... in floats: vLLM would serve 1000 tokens, not 1001
        extend_config(dict(BASE, max_position_embeddings=1000), "linear", 1001)


def test_check_refuses_a_merge_that_forgot_the_rope():
    """LongLoRA issue #181: metadata says 16k, config still serves 4k -> refused, with the fix."""
    broken = dict(extend_config(BASE, "linear", 16384))
    broken["rope_parameters"] = dict(BASE["rope_parameters"])
    with pytest.raises(RopeConfigError, match=r"trained for 16384 tokens but .* allows only 4096.*rope_type"):
        check_config(broken)


def test_check_refuses_disagreeing_metadata_and_accepts_good_configs():
    good = extend_config(BASE, "yarn", 16384)
    check_config(good)
    check_config(BASE)  # no metadata: nothing to check against
    wrong = dict(good, rope_parameters=dict(good["rope_parameters"], rope_type="linear"))
    with pytest.raises(RopeConfigError, match="disagree"):
        check_config(wrong)
    with pytest.raises(RopeConfigError, match="no RoPE"):
        check_config({"max_position_embeddings": 1024})


def test_serving_rope_covers_the_whole_length_for_dynamic():
    dyn = extend_config(BASE, "dynamic", 16384)
    rope = serving_rope(dyn)
    assert rope.max_position == rope.max_model_len == 16384
    assert rope.rope_parameters["max_trained_positions"] == 4096
    linear = serving_rope(extend_config(BASE, "linear", 16384))
    assert linear.max_position == 4096 and linear.max_model_len == 16384


@pytest.mark.parametrize("original,factor,length", [(4096, 1.1, 4505), (1000, 2.3, 2300), (8192, 4, 32768),
                                                     (3000, 1.5, 4500)])
def test_one_rule_turns_a_factor_into_a_length(original, factor, length):
    """floor, as vLLM's own int(); 4096 x 1.1 once gave 4505 in the launcher and 4506 in eval."""
    config = dict(BASE, max_position_embeddings=original)
    assert length_for_factor(config, factor) == length
    assert length_for_factor(extend_config(config, "linear", 2 * original), factor) == length  # true original


def test_the_launcher_and_eval_extend_to_the_same_length(tiny_model):
    """`python -m serve --rope linear --factor 1.1` and `finetune eval --rope linear --factor 1.1` agree."""
    import json

    import torch

    from finetune.eval import load_model
    from serve.args import hf_overrides
    from serve.config import ServeConfig

    config = json.loads((tiny_model / "config.json").read_text())  # context 64: 64 x 1.1 = 70.4
    served = hf_overrides(config, ServeConfig(rope="linear", factor=1.1))["longctx"]["trained_context"]
    evaluated = load_model(tiny_model, "linear", 1.1, torch.device("cpu")).config
    assert served == 70 == round(evaluated.rope_parameters["factor"] * evaluated.max_position_embeddings)


LLAMA31 = {"model_type": "llama", "max_position_embeddings": 131072, "rope_parameters": {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192, "rope_theta": 500000.0}}
VENDOR_YARN = {"model_type": "qwen2", "max_position_embeddings": 32768, "rope_parameters": {
    "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192, "rope_theta": 1e6}}


@pytest.mark.parametrize("method", ["linear", "yarn", "dynamic"])
def test_a_base_scaled_another_way_is_refused_not_replaced(method):
    """A Llama-3.1 base 'extended' to 32k used to lose its llama3 scaling and shrink from 128k."""
    with pytest.raises(RopeConfigError, match="already carries llama3 RoPE scaling .*131072 tokens.*without it"):
        extend_config(LLAMA31, method, 32768)
    if method != "yarn":
        with pytest.raises(RopeConfigError, match="already carries yarn .*use --rope yarn"):
            extend_config(VENDOR_YARN, method, 65536)


def test_the_same_method_composes_and_must_grow():
    grown = extend_config(VENDOR_YARN, "yarn", 65536)
    assert grown["rope_parameters"]["factor"] == 8.0 and vllm_max_len(grown) == 65536
    with pytest.raises(RopeConfigError, match="already serves 32768 tokens.*16384 would shrink it"):
        extend_config(VENDOR_YARN, "yarn", 16384)
    for method in ("linear", "yarn", "dynamic"):  # to where it already is: a no-op (a resumed full run does it)
        extended = extend_config(BASE, method, 16384)
        assert extend_config(extended, method, 16384) == extended


def test_as_served_fixes_dynamic_ntk_at_the_served_base_and_leaves_the_rest():
    from longctx.rope import as_served

    small = dict(BASE, hidden_size=512, num_attention_heads=8)  # head_dim 64
    for method in ("linear", "yarn"):
        extended = extend_config(small, method, 16384)
        assert as_served(extended) is extended
    served = as_served(extend_config(small, "dynamic", 16384))
    # factor 4, served 16384 over 4096: 10000 * (4 * 4 - 3) ** (64 / 62)
    assert served["rope_parameters"] == {"rope_type": "default", "rope_theta": pytest.approx(10000 * 13 ** (64 / 62))}
    assert served["max_position_embeddings"] == serving_length(served) == 16384
    prepared = extend_config(small, "dynamic", 16384)  # what the plugin leaves in vLLM's config
    rope = serving_rope(prepared)
    prepared.update(rope_parameters=rope.rope_parameters, max_position_embeddings=rope.max_position)
    assert as_served(prepared) == served


PHI3 = {"model_type": "phi3", "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
        "hidden_size": 3072, "num_attention_heads": 32,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}}


def test_phi3_holds_linear_interpolation_as_uniform_longrope():
    extended = extend_config(PHI3, "linear", 16384)
    params = extended["rope_parameters"]
    assert params["rope_type"] == "longrope" and params["short_factor"] == params["long_factor"] == [4.0] * 48
    assert params["attention_factor"] == params["short_mscale"] == params["long_mscale"] == 1.0
    assert extended["max_position_embeddings"] == 16384 and serving_length(extended) == 16384
    assert original_context(extended) == 4096 and extended[META_KEY]["rope_method"] == "linear"
    check_config(extended)  # the metadata's linear x4 is what the LongRoPE parameters hold
    assert extend_config(extended, "linear", 32768)["rope_parameters"]["long_factor"] == [8.0] * 48  # composes
    with pytest.raises(RopeConfigError, match="take only LongRoPE scaling.*use --rope linear"):
        extend_config(PHI3, "yarn", 16384)


def test_a_vendors_longrope_is_not_taken_for_linear():
    vendor = {**PHI3, "max_position_embeddings": 131072, "rope_parameters": {
        "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 4096,
        "short_factor": [1.0, 1.1] * 24, "long_factor": [1.0, 5.0] * 24}}
    with pytest.raises(RopeConfigError, match="already carries longrope RoPE scaling"):
        extend_config(vendor, "linear", 262144)


def test_longrope_is_linear_only_when_its_factors_are_the_factor():
    params = extend_config(PHI3, "linear", 16384)["rope_parameters"]
    assert method_of(params) == "linear"
    assert method_of({**params, "short_factor": [2.0] * 48, "long_factor": [2.0] * 48}) == "longrope"  # factor 4
    assert method_of({**params, "attention_factor": 1.2}) == "longrope"


def test_one_check_refuses_a_rope_factor_pair_that_cannot_extend():
    from longctx.cli import UsageError
    from longctx.rope import check_extension

    check_extension(None, None)
    check_extension("yarn", 4.0)
    for rope, factor, message in ((None, 2.0, "--rope and --factor together"), ("linear", None, "go together"),
                                  ("ntk", 2.0, "unknown RoPE method 'ntk'"), ("dynamic", 1.0, "above 1 \\(got 1\\)")):
        with pytest.raises(UsageError, match=message):
            check_extension(rope, factor)
