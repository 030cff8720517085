"""What the machine can do fast: the dtype for training and serving, the cores to use, the memory free.

The team's developer guide reports, for this project's CPUs (AVX2, no AVX512-BF16; not re-measured here):
a bf16 matmul at 0.3 GFLOP/s against 130-160 GFLOP/s in float32, and vLLM serving 5.5x slower in bf16. So bf16 only where it is native."""

from __future__ import annotations

import os
from pathlib import Path

_FAST_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    return bool(_FAST_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def best_dtype(cuda: bool, flags: set[str] | None = None, cuda_bf16: bool = True) -> str:
    """'bfloat16' where the hardware runs it natively, else 'float32'."""
    if cuda:
        return "bfloat16" if cuda_bf16 else "float16"
    return "bfloat16" if cpu_has_fast_bf16(flags) else "float32"


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be used without swapping)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
