"""What the machine can do fast: the dtype for training and serving, the cores to use, the memory free.

bf16 only where the hardware computes it natively: on CPUs without AVX512-BF16 or AMX, PyTorch and vLLM
emulate it, far slower than float32; with AVX512-BF16, bf16 matmuls run several times faster than float32.
`LONGCTX_DTYPE=float32|bfloat16` overrides the choice everywhere (train, eval, serve), so a developer on
one kind of CPU can run the other kind's code path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DTYPE_ENV = "LONGCTX_DTYPE"
DTYPES = ("float32", "bfloat16")
_FAST_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
# The flags that decide (or explain) the dtype; results files list those the CPU has.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


class DtypeError(ValueError):
    """A bad LONGCTX_DTYPE; the message is one line naming the fix."""


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype the machine runs best, and why (for results files and eval.json)."""

    dtype: str
    reason: str
    """'LONGCTX_DTYPE', 'cuda' or 'cpu flags'"""
    cpu_flags: tuple[str, ...]
    """the REPORTED_FLAGS this CPU has"""

    def as_dict(self) -> dict:
        return {"dtype": self.dtype, "chosen_by": self.reason, "cpu_flags": list(self.cpu_flags)}


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


def dtype_override(env: dict[str, str] | None = None) -> str | None:
    """The dtype LONGCTX_DTYPE forces, or None when it is unset or empty."""
    value = (os.environ if env is None else env).get(DTYPE_ENV, "").strip().lower()
    if not value:
        return None
    value = {"fp32": "float32", "bf16": "bfloat16"}.get(value, value)
    if value not in DTYPES:
        raise DtypeError(f"{DTYPE_ENV}={value!r} is not a dtype; use {DTYPE_ENV}=float32 or bfloat16, or unset it")
    return value


def choose_dtype(cuda: bool, flags: set[str] | None = None, cuda_bf16: bool = True,
                 env: dict[str, str] | None = None) -> DtypeChoice:
    """LONGCTX_DTYPE if set; else bfloat16 where the hardware runs it natively, else float32 (float16 on
    CUDA devices without bf16)."""
    flags = cpu_flags() if flags is None else flags
    shown = tuple(f for f in REPORTED_FLAGS if f in flags)
    forced = dtype_override(env)
    if forced:
        return DtypeChoice(forced, DTYPE_ENV, shown)
    if cuda:
        return DtypeChoice("bfloat16" if cuda_bf16 else "float16", "cuda", shown)
    return DtypeChoice("bfloat16" if cpu_has_fast_bf16(flags) else "float32", "cpu flags", shown)


def best_dtype(cuda: bool, flags: set[str] | None = None, cuda_bf16: bool = True,
               env: dict[str, str] | None = None) -> str:
    """'bfloat16' where the hardware runs it natively (or LONGCTX_DTYPE says so), else 'float32'."""
    return choose_dtype(cuda, flags, cuda_bf16, env).dtype


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
