"""The launcher's pure argument builder: every long-context default is a visible decision."""

import json
import math
from pathlib import Path

import pytest

from longctx.rope import extend_config
from serve.__main__ import parse_args
from serve.args import Machine, build_command, cpu_ranges, kv_bytes_per_token, kv_cache_gib, max_model_len
from serve.config import PROFILES, ProfileName, ServeConfig

SMOL = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 8192,
        "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3, "num_hidden_layers": 30,
        "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}
CPU = Machine(cuda=False, dtype="float32", cpus=(0, 1), available_bytes=24 * 2**30, cache_root=Path("/h/vc"))
GPU = Machine(cuda=True, dtype="bfloat16", cpus=(0, 1), available_bytes=24 * 2**30, cache_root=Path("/h/vc"))


def opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_cpu_defaults():
    argv, env = build_command(SMOL, ServeConfig(), CPU, Path("/m/SmolLM2"), python="py")
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.launchers.api_server.entry"]
    assert opt(argv, "--host") == "127.0.0.1" and opt(argv, "--port") == "8000"
    assert opt(argv, "--max-model-len") == "8192" and opt(argv, "--dtype") == "float32"
    assert "--enable-chunked-prefill" in argv and "--enable-prefix-caching" in argv
    assert opt(argv, "--max-num-batched-tokens") == str(PROFILES["latency"].max_num_batched_tokens)
    assert opt(argv, "--served-model-name") == "SmolLM2"
    assert json.loads(opt(argv, "--hf-overrides")) == {"architectures": ["LongctxLlamaForCausalLM"]}
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and env["VLLM_CACHE_ROOT"] == "/h/vc"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"  # 8 x 8192 tokens x 46080 B = 2.8 GiB
    assert "VLLM_API_KEY" not in env and "--api-key" not in argv


def test_unknown_chat_roles_are_refused_by_our_middleware():
    """vLLM imports --middleware by splitting the dotted path at its last dot (init_entrypoints_middleware)."""
    import importlib
    import inspect

    from serve.middleware import RoleCheck

    argv, _ = build_command(SMOL, ServeConfig(), CPU, Path("/m/x"))
    module, name = opt(argv, "--middleware").rsplit(".", 1)
    middleware = getattr(importlib.import_module(module), name)
    assert middleware is RoleCheck and inspect.isclass(middleware)


def test_throughput_profile_and_overrides():
    argv, _ = build_command(SMOL, ServeConfig(profile="throughput"), CPU, Path("/m/x"))
    assert opt(argv, "--max-num-batched-tokens") == "8192" and "--long-prefill-token-threshold" not in argv
    argv, _ = build_command(SMOL, ServeConfig(max_num_batched_tokens=2048, max_model_len=4096), CPU, Path("/m/x"))
    assert opt(argv, "--max-num-batched-tokens") == "2048" and opt(argv, "--max-model-len") == "4096"
    with pytest.raises(ValueError, match="exceeds"):
        build_command(SMOL, ServeConfig(max_model_len=9000), CPU, Path("/m/x"))


def test_api_key_goes_through_the_environment():
    argv, env = build_command(SMOL, ServeConfig(api_key="s3cret"), CPU, Path("/m/x"))
    assert env["VLLM_API_KEY"] == "s3cret" and "s3cret" not in " ".join(argv)


def test_gpu_has_no_cpu_settings():
    argv, env = build_command(SMOL, ServeConfig(kv_cache_gib=4), GPU, Path("/m/x"))
    assert "VLLM_CPU_KVCACHE_SPACE" not in env and "VLLM_CPU_OMP_THREADS_BIND" not in env
    assert opt(argv, "--kv-cache-memory-bytes") == str(4 * 2**30) and opt(argv, "--dtype") == "bfloat16"


@pytest.mark.parametrize("method,length", [("linear", 16384), ("yarn", 16384), ("dynamic", 16384)])
def test_inference_time_rope_extension(method, length):
    cfg = ServeConfig(rope=method, factor=2.0)
    argv, _ = build_command(SMOL, cfg, CPU, Path("/m/x"))
    overrides = json.loads(opt(argv, "--hf-overrides"))
    assert overrides["rope_parameters"]["rope_type"] == method and overrides["rope_parameters"]["factor"] == 2.0
    assert opt(argv, "--max-model-len") == str(length) == str(max_model_len(SMOL, cfg))


def test_merged_checkpoint_serves_its_trained_length():
    merged = extend_config(SMOL, "linear", 32768) | {"architectures": ["LongctxLlamaForCausalLM"]}
    argv, _ = build_command(merged, ServeConfig(), CPU, Path("/m/x"))
    assert opt(argv, "--max-model-len") == "32768" and "--hf-overrides" not in argv


def test_kv_cache_is_capped_by_free_memory():
    small = Machine(cuda=False, dtype="float32", cpus=(0,), available_bytes=6 * 2**30, cache_root=Path("/x"))
    assert kv_bytes_per_token(SMOL, "float32") == 46080
    assert kv_cache_gib(SMOL, ServeConfig(), small, 131072) == 1
    assert kv_cache_gib(SMOL, ServeConfig(kv_cache_gib=2.5), small, 131072) == 3


def test_cpu_ranges():
    assert cpu_ranges((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8" and cpu_ranges((3,)) == "3"


def test_cli_parsing(monkeypatch):
    monkeypatch.setenv("LONGCTX_API_KEY", "from-env")
    cfg = parse_args(["/m", "--port", "9000", "--rope", "yarn", "--factor", "4", "--", "--seed", "1"])
    assert cfg.model == Path("/m") and cfg.port == 9000 and cfg.factor == 4.0 and cfg.api_key == "from-env"
    assert cfg.vllm_args == ("--seed", "1")
    assert parse_args(["--api-key", ""]).api_key == "from-env"  # empty: the environment's, as before
    # after `--`, arguments reach vLLM as they are: commas, JSON and empty strings included
    passed = ("--served-model-name", "a,b", "--hf-overrides", '{"a": 1, "b": 2}', "--x", "")
    assert parse_args(["--", *passed]).vllm_args == passed
    with pytest.raises(ValueError, match="go together"):
        parse_args(["--rope", "linear"])


def test_parallel_sizes_reach_vllm_with_cores_and_kv_cache_per_rank():
    four = Machine(cuda=False, dtype="float32", cpus=(0, 1, 2, 3), available_bytes=64 * 2**30, cache_root=Path("/x"))
    argv, env = build_command(SMOL, ServeConfig(tensor_parallel_size=2, kv_cache_gib=None), four, Path("/m/x"))
    assert opt(argv, "--tensor-parallel-size") == "2" and "--pipeline-parallel-size" not in argv
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1|2-3"
    one = kv_cache_gib(SMOL, ServeConfig(), four, 8192)
    assert kv_cache_gib(SMOL, ServeConfig(tensor_parallel_size=2), four, 8192) == math.ceil(one / 2)
    argv, env = build_command(SMOL, ServeConfig(pipeline_parallel_size=2, data_parallel_size=2), four, Path("/m"))
    assert opt(argv, "--pipeline-parallel-size") == "2" and opt(argv, "--data-parallel-size") == "2"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1|2|3"
    assert parse_args(["--tensor-parallel-size", "2"]).tensor_parallel_size == 2


def test_more_ranks_than_cores_is_refused():
    with pytest.raises(ValueError, match="4 vLLM ranks .* need at least 4 cores; this process may use 2"):
        build_command(SMOL, ServeConfig(tensor_parallel_size=2, data_parallel_size=2), CPU, Path("/m"))
    with pytest.raises(ValueError, match="--tensor-parallel-size must be at least 1"):
        ServeConfig(tensor_parallel_size=0)


def test_per_request_metrics_flag():
    argv, _ = build_command(SMOL, parse_args(["--per-request-metrics"]), CPU, Path("/m/x"))
    assert "--enable-per-request-metrics" in argv
    argv, _ = build_command(SMOL, parse_args([]), CPU, Path("/m/x"))
    assert "--enable-per-request-metrics" not in argv


def test_the_profile_names_are_the_presets():
    from typing import get_args

    assert set(get_args(ProfileName)) == set(PROFILES)
