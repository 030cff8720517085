"""RoPE context extension: factors, `rope_parameters`, serving lengths and the longctx metadata block.

Pure Python on plain `config.json` dicts (no torch, no transformers), because training, merge, the
vLLM plugin and the server launcher all import it and must agree to the token.

Conventions (what transformers 5.x and vLLM 0.32 both read):
- linear (position interpolation, LongLoRA's default) and dynamic NTK: `max_position_embeddings` stays the
  *original* context; vLLM serves `max_position_embeddings * factor`.
- yarn: `max_position_embeddings` is the *target*; `original_max_position_embeddings` (inside
  `rope_parameters`) is the old context; vLLM serves `max_position_embeddings` as is.
- Phi-3: transformers 5 keeps only LongRoPE in a Phi-3 config (it rewrites yarn to it and refuses linear),
  so linear interpolation is written as LongRoPE with every channel's short and long factor equal to the
  factor and its attention scaling off (1.0): the same frequencies at every length, which transformers and
  vLLM then compute as position interpolation. `max_position_embeddings` is the *target*, as for yarn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

Method = Literal["linear", "yarn", "dynamic"]
METHODS: tuple[str, ...] = get_args(Method)
LONGROPE_ONLY = ("phi3",)  # model types whose config takes only LongRoPE scaling: linear is written in it
META_KEY = "longctx"  # the metadata block's key in config.json
# vLLM multiplies max_position_embeddings by the factor for every rope type except these
# (vllm/config/model.py, _get_and_verify_max_len).
_ALREADY_SCALED = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")
_DEFAULT_THETA = 10000.0


class RopeConfigError(ValueError):
    """A checkpoint's RoPE configuration cannot serve or train what it claims. The message is one line."""


def check_extension(rope: str | None, factor: float | None) -> None:
    """Refuse, in one line naming the fix, a --rope/--factor pair that cannot extend a model: one without the
    other, an unknown method, or a factor that does not extend (every CLI that takes the pair calls this)."""
    from longctx.cli import UsageError

    if (rope is None) != (factor is None):
        raise UsageError("give --rope and --factor together or neither: they go together (e.g. --rope linear "
                         "--factor 4)")
    if rope is not None and rope not in METHODS:
        raise UsageError(f"unknown RoPE method {rope!r}; use --rope {'|'.join(METHODS)}")
    if factor is not None and factor <= 1:
        raise UsageError(f"--factor must be above 1 (got {factor:g})")


def rope_params_of(config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's RoPE parameters in transformers-5 form (`rope_type`, `rope_theta`, ...), or None.

    Accepts the older `rope_scaling` + top-level `rope_theta` spelling too (transformers 4.x checkpoints).
    A dict that is already keyed by layer type (Gemma-style) is not a family we support."""
    params = config.get("rope_parameters") or config.get("rope_scaling")
    theta = config.get("rope_theta")
    if params is None and theta is None:
        return None
    params = dict(params or {})
    params.setdefault("rope_type", params.pop("type", "default"))
    params.setdefault("rope_theta", theta if theta is not None else _DEFAULT_THETA)
    return params


def serving_length(config: dict[str, Any]) -> int:
    """The max_model_len vLLM 0.32 derives from this config (its rule, reimplemented and tested against it)."""
    length = float(config["max_position_embeddings"])
    params = rope_params_of(config)
    if params and params["rope_type"] not in _ALREADY_SCALED:
        length *= float(params.get("factor") or 1.0)
    return int(length)


def original_context(config: dict[str, Any]) -> int:
    """The context the base model was *pretrained* at, before any scaling it already carries."""
    meta = config.get(META_KEY)
    if meta and meta.get("original_context"):
        return int(meta["original_context"])
    params = rope_params_of(config) or {}
    if params.get("original_max_position_embeddings"):
        return int(params["original_max_position_embeddings"])
    return int(config["max_position_embeddings"])


def length_for_factor(config: dict[str, Any], factor: float) -> int:
    """The context `factor` gives over the model's original one: vLLM's `int()` (floor) rule for derived
    lengths, tolerant of binary fractions (1000 x 2.3 is 2299.9999... in floats). The one place where a
    `--factor` becomes a length, for the launcher and `finetune eval` alike."""
    return math.floor(original_context(config) * factor + 1e-6)


def extension_factor(target_length: int, original: int) -> float:
    """LongLoRA's interpolation factor, from the *true* original context (the reference code took the
    already-scaled one and replaced the old factor, LongLoRA issue #81). Integral ratios stay exact."""
    if target_length <= original:
        raise RopeConfigError(
            f"target length {target_length} is not above the model's original context {original}; "
            f"pick --target-length > {original}"
        )
    return target_length / original


def extend_config(config: dict[str, Any], method: str, target_length: int) -> dict[str, Any]:
    """A copy of `config` whose RoPE serves exactly `target_length` tokens with `method`.

    Composes with a scaling of the same method the base already has: the factor is always target / original
    context. A base scaled another way (Llama 3.1's llama3, a vendor's yarn under --rope linear) is refused:
    replacing its scaling would change every position's frequencies, and could even shrink its context."""
    if method not in METHODS:
        raise RopeConfigError(f"unknown RoPE method {method!r}; choose one of {', '.join(METHODS)}")
    base = rope_params_of(config)
    if base is None:
        raise RopeConfigError("the model has no RoPE (no rope_parameters/rope_theta in config.json); "
                              "longctx extends RoPE models only (Llama, Mistral, Qwen2, Qwen3, Phi-3)")
    if config.get("model_type") in LONGROPE_ONLY and method != "linear":
        raise RopeConfigError(f"{config['model_type']} configs take only LongRoPE scaling in transformers 5, "
                              f"which writes linear interpolation but not {method}: use --rope linear")
    check_composes(config, base, method, target_length)
    original = original_context(config)
    factor = extension_factor(target_length, original)
    if config.get("model_type") in LONGROPE_ONLY:
        return _as_longrope(config, base, original, target_length, factor)
    params: dict[str, Any] = {"rope_type": method, "factor": factor, "rope_theta": base["rope_theta"]}
    if "partial_rotary_factor" in base:  # a family that rotates part of each head keeps doing so
        params["partial_rotary_factor"] = base["partial_rotary_factor"]
    out = {k: v for k, v in config.items() if k not in ("rope_scaling", "rope_theta")}
    if method == "yarn":
        params["original_max_position_embeddings"] = original
        out["max_position_embeddings"] = target_length
    else:
        out["max_position_embeddings"] = original
    out["rope_parameters"] = params
    out[META_KEY] = metadata(original, target_length, method, factor)
    if serving_length(out) != target_length:  # a non-power-of-two ratio that does not round-trip
        raise RopeConfigError(f"factor {factor} x {original} does not give {target_length} tokens exactly; "
                              f"choose a target length that is a multiple of the original context")
    return out


def _as_longrope(config: dict[str, Any], base: dict[str, Any], original: int, target_length: int,
                 factor: float) -> dict[str, Any]:
    """Linear interpolation by `factor` in LongRoPE's form (see the module's docstring)."""
    half = rotary_dim(config) // 2
    params = {"rope_type": "longrope", "factor": factor, "rope_theta": base["rope_theta"],
              "short_factor": [factor] * half, "long_factor": [factor] * half,
              "original_max_position_embeddings": original,
              "attention_factor": 1.0, "short_mscale": 1.0, "long_mscale": 1.0}  # transformers' and vLLM's names
    if "partial_rotary_factor" in base:
        params["partial_rotary_factor"] = base["partial_rotary_factor"]
    out = {k: v for k, v in config.items() if k not in ("rope_scaling", "rope_theta")}
    out.update(rope_parameters=params, max_position_embeddings=target_length, original_max_position_embeddings=original)
    out[META_KEY] = metadata(original, target_length, "linear", factor)
    return out


def method_of(params: dict[str, Any]) -> str:
    """The extension a checkpoint's RoPE parameters carry: its rope_type, except that LongRoPE with every
    factor equal and no attention scaling is linear interpolation (how Phi-3 configs hold it)."""
    if params["rope_type"] == "longrope":
        factors = {float(f) for f in (params.get("short_factor") or []) + (params.get("long_factor") or [])}
        if factors == {float(params.get("factor") or 0)} and float(params.get("attention_factor", 0)) == 1.0 and \
                float(params.get("short_mscale", 1.0)) == float(params.get("long_mscale", 1.0)) == 1.0:
            return "linear"
    return params["rope_type"]


def check_composes(config: dict[str, Any], base: dict[str, Any], method: str, target_length: int) -> None:
    """Refuse to replace a base's RoPE scaling of another kind, or to 'extend' it to less than it serves."""
    current = method_of(base)
    if current == "default":
        return
    serves = serving_length(config)
    if current != method:
        fix = f"use --rope {current}" if current in METHODS else "choose a base without it"
        raise RopeConfigError(f"the base already carries {current} RoPE scaling (factor {base.get('factor')}, "
                              f"{serves} tokens); --rope {method} would replace it, not extend it: {fix}")
    if target_length < serves:  # equal: extending to where it is already is a no-op (a resumed full run)
        raise RopeConfigError(f"the base already serves {serves} tokens with {current} RoPE scaling; "
                              f"a --target-length of {target_length} would shrink it")


def metadata(original: int, trained: int, method: str | None, factor: float) -> dict[str, Any]:
    """The block longctx writes into config.json: what the RoPE was extended from, to, and how."""
    return {"original_context": int(original), "trained_context": int(trained),
            "rope_method": method or "none", "rope_factor": float(factor)}


@dataclass(frozen=True)
class ServingRope:
    """How vLLM must build this checkpoint's RoPE to match transformers, and how long it may serve."""

    rope_parameters: dict[str, Any]
    max_position: int  # the `max_position` vLLM's get_rope receives (size of its cos/sin cache)
    max_model_len: int


def serving_rope(config: dict[str, Any]) -> ServingRope:
    """vLLM's dynamic-NTK rope caches only `max_position_embeddings` positions, while vLLM serves that
    times the factor: past it, outputs are NaN. We build the cache for the whole served length with
    the NTK base transformers uses at that length (`max_trained_positions` = the original context)."""
    params = rope_params_of(config)
    if params is None:
        raise RopeConfigError("the model has no RoPE (no rope_parameters/rope_theta in config.json)")
    length = served_length(config)
    if params["rope_type"] != "dynamic":
        return ServingRope(params, int(config["max_position_embeddings"]), length)
    fixed = dict(params, max_trained_positions=int(config["max_position_embeddings"]))
    return ServingRope(fixed, length, length)


def as_served(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` whose RoPE transformers computes exactly as the plugin serves it, for evaluation.

    Dynamic NTK becomes the default RoPE at the one base vLLM 0.32's DynamicNTKScalingRotaryEmbedding
    builds its whole cache with, for every position (transformers' `dynamic` instead rescales the base
    with each sequence's length, so below the served length it is another model). Training keeps
    transformers' `dynamic`: on its pretraining blocks, all of the target length, the two bases agree
    (shorter SFT samples train with a smaller base than the server uses).
    Other RoPE types are served as transformers computes them: `config` is returned as it is."""
    config = unprepared(config)
    params = rope_params_of(config)
    if params is None or params["rope_type"] != "dynamic":
        return config
    rope = serving_rope(config)
    fixed = rope.rope_parameters
    factor, dim = float(fixed["factor"]), rotary_dim(config)
    # vLLM: base * (factor * max_position / max_trained_positions - (factor - 1)) ** (dim / (dim - 2))
    ratio = factor * rope.max_position / fixed["max_trained_positions"] - (factor - 1)
    served = {"rope_type": "default", "rope_theta": fixed["rope_theta"] * ratio ** (dim / (dim - 2))}
    if "partial_rotary_factor" in params:
        served["partial_rotary_factor"] = params["partial_rotary_factor"]
    return {**config, "rope_parameters": served, "max_position_embeddings": rope.max_position}


def rotary_dim(config: dict[str, Any]) -> int:
    """How many channels of each head RoPE rotates (vLLM's `get_rope` and transformers agree on it)."""
    params = rope_params_of(config) or {}
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return int(head_dim * params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)))


def unprepared(config: dict[str, Any]) -> dict[str, Any]:
    """`config` as the checkpoint wrote it, even after the plugin applied `serving_rope` to it (vLLM may
    build a model twice on one hf_config): for dynamic NTK, `max_trained_positions` (which only
    `serving_rope` writes; transformers never does) holds the original max_position_embeddings."""
    params = rope_params_of(config) or {}
    if params.get("rope_type") != "dynamic" or "max_trained_positions" not in params:
        return config
    original = params.pop("max_trained_positions")
    return {**config, "rope_parameters": params, "max_position_embeddings": int(original)}


def served_length(config: dict[str, Any]) -> int:
    """What longctx serves: the trained length when the metadata gives one, else vLLM's derived length."""
    meta = config.get(META_KEY) or {}
    return int(meta.get("trained_context") or serving_length(config))


def check_config(config: dict[str, Any]) -> None:
    """Refuse a checkpoint whose RoPE cannot serve what its metadata says it was trained for.

    The classic failure: LongLoRA's merge never wrote `rope_scaling`, so servers ran the base RoPE past
    its trained length and generated garbage (LongLoRA issue #181)."""
    params = rope_params_of(config)
    if params is None:
        raise RopeConfigError("config.json has no RoPE parameters (rope_parameters or rope_theta): "
                              "longctx serves RoPE models only")
    meta = config.get(META_KEY)
    if not meta:
        return
    trained, original = int(meta["trained_context"]), int(meta["original_context"])
    method, factor = meta.get("rope_method", "none"), float(meta.get("rope_factor", 1.0))
    allowed = serving_length(config)
    if trained > allowed:
        fix = "run `finetune merge` again" + ("" if config.get("model_type") in LONGROPE_ONLY else
                                              f", or add rope_parameters {_expected(method, factor, params)}")
        raise RopeConfigError(f"trained for {trained} tokens but its RoPE config allows only {allowed}: {fix}")
    if method == "none":
        return
    if method_of(params) != method or not math.isclose(float(params.get("factor", 1.0)), factor):
        raise RopeConfigError(
            f"rope_parameters ({params['rope_type']}, factor {params.get('factor')}) disagree with the "
            f"longctx metadata ({method}, factor {factor}); re-run `finetune merge`")
    if not math.isclose(original * factor, trained):
        raise RopeConfigError(f"metadata says original {original} x factor {factor} != trained {trained}; "
                              f"re-run `finetune merge`")


def _expected(method: str, factor: float, params: dict[str, Any]) -> dict[str, Any]:
    return {"rope_type": method if method != "none" else "linear", "factor": factor,
            "rope_theta": params["rope_theta"]}
