"""PoSE: positional skip-wise training (Zhu et al., ICLR 2024, arXiv 2309.10400 §3).

A training window of Lc tokens stands in for the target length Lt: it is split into two chunks (the paper's
default number) and the second chunk's position ids are shifted by a skipping bias u ~ U{0, ..., Lt - Lc},
so the window's relative distances reach up to Lt - 1 while it costs only Lc tokens of compute. The first
chunk's length is drawn from {1, ..., ceil(Lc / 2)}, as the paper's reference code (`train_pose.py`) does;
the text itself stays the window's consecutive tokens.

The draw for the k-th sample the data stream hands out depends only on (seed, k), so a resumed or
data-parallel run sees exactly the same position ids as an uninterrupted single process."""

from __future__ import annotations

import hashlib
from typing import Callable

import torch

CHUNKS = 2  # PoSE §3 and its experiments: two chunks


def skipped_positions(window: int, target: int, generator: torch.Generator) -> torch.Tensor:
    """(window,) strictly increasing position ids in [0, target): [0, l0) then [l0 + u, window + u)."""
    if not 1 < window <= target:
        raise ValueError(f"PoSE needs 1 < window <= target, got window {window}, target {target}")
    first = int(torch.randint(1, (window + 1) // 2 + 1, (1,), generator=generator))  # l0, PoSE reference code
    skip = int(torch.randint(0, target - window + 1, (1,), generator=generator))  # u, PoSE §3.2
    ids = torch.arange(window, dtype=torch.int64)  # (window,)
    ids[first:] += skip
    return ids


def sampler(window: int, target: int, seed: int) -> Callable[[int], torch.Tensor]:
    """position_ids for the stream's k-th sample, a pure function of (seed, k)."""

    def positions(k: int) -> torch.Tensor:
        # torch's CPU generator keeps only 32 bits of a seed, so mix both numbers into those 32 bits
        mixed = int.from_bytes(hashlib.sha256(f"pose:{seed}:{k}".encode()).digest()[:4], "big")
        return skipped_positions(window, target, torch.Generator().manual_seed(mixed))

    return positions
