"""The launcher's settings: one typed dataclass, each field's docstring is its --help."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from longctx.rope import Method, check_extension


@dataclass(frozen=True)
class Profile:
    """A chunked-prefill preset: how many tokens one engine step may batch, and when a prompt counts
    as long (a long prefill is capped per step so short requests can be scheduled beside it)."""

    max_num_batched_tokens: int
    long_prefill_token_threshold: int  # 0: no cap


PROFILES = {
    # Small chunks: a short request waits at most one small step behind a long prefill.
    "latency": Profile(max_num_batched_tokens=512, long_prefill_token_threshold=256),
    # Large chunks: fewer, bigger steps; best tokens/s when prompts arrive one at a time.
    "throughput": Profile(max_num_batched_tokens=8192, long_prefill_token_threshold=0),
}
ProfileName = Literal["latency", "throughput"]  # the keys of PROFILES (tests/serve checks they agree)
DEFAULT_PROFILE = "latency"  # chosen by measurement: docs/measurements.md (serving-latency, chunked-prefill)


@dataclass(frozen=True)
class ServeConfig:
    model: Path | None = None
    """Checkpoint folder to serve (default: the embedded SmolLM2-135M-Instruct, prepared once)."""
    host: str = "127.0.0.1"
    """Address to listen on; 127.0.0.1 keeps the server private to this machine."""
    port: int = 8000
    """TCP port."""
    api_key: str | None = None
    """Require this bearer token (default: $LONGCTX_API_KEY, else no key)."""
    profile: ProfileName = DEFAULT_PROFILE
    """Chunked-prefill preset: latency (small chunks, fair time to first token) or throughput."""
    max_num_batched_tokens: int | None = None
    """Override the preset's token budget per engine step."""
    max_model_len: int | None = None
    """Serve fewer tokens than the checkpoint's trained length."""
    kv_cache_gib: float | None = None
    """KV-cache size in GiB (default: what 8 full-length sequences need, at most a quarter of free RAM)."""
    dtype: str | None = None
    """Weights' dtype (default: bfloat16 where the hardware runs it natively, else float32)."""
    rope: Method | None = None
    """Extend a base checkpoint at inference time: linear, yarn or dynamic (needs --factor)."""
    factor: float | None = None
    """Context extension factor for --rope (served length = original context x factor)."""
    name: str | None = None
    """Model name clients use (default: the folder's name)."""
    tensor_parallel_size: int = 1
    """vLLM ranks sharing each layer's heads (on CPU: one process per rank, each bound to its own cores)."""
    pipeline_parallel_size: int = 1
    """vLLM ranks each holding a slice of the layers."""
    data_parallel_size: int = 1
    """Whole replicas of the model, each with its own KV cache, behind one server."""
    enforce_eager: bool = False
    """Skip torch.compile: a faster start (73 s here with it, 229 s compiling from an empty cache; separate runs)."""
    per_request_metrics: bool = False
    """Add vLLM's own timing (queue, time to first token) to each response, for the load tester's TTFT split."""
    vllm_args: tuple[str, ...] = field(default_factory=tuple, metadata={"split": False})
    """Extra arguments passed to vLLM as they are (after `--`)."""

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown --profile {self.profile!r}; choose {' or '.join(PROFILES)}")
        check_extension(self.rope, self.factor)
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")

    @property
    def ranks(self) -> int:
        """vLLM worker processes: tensor x pipeline x data parallel."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size
