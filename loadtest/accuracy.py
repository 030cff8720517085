"""Passkey accuracy as a measurement: counts with a Wilson interval, a test for a drop under load against
the single-request baseline, and the effective context length (RULER's 85.6% threshold)."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959964  # two-sided 95% normal quantile
ALPHA = 0.05
RULER_THRESHOLD = 0.856
"""RULER (Hsieh et al., 2024) calls a length effective while the score stays at or above Llama-2-7B's
score at 4k, 85.6%."""
DEPTH_BINS = 5


@dataclass(frozen=True)
class Tally:
    """Correct answers out of trials."""

    ok: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.ok / self.n if self.n else None


def tally(rows: list[dict]) -> Tally:
    """Correct passkeys among `rows` (records or baseline rows; a transport failure counts as wrong)."""
    return Tally(sum(bool(r["passkey_ok"]) for r in rows), len(rows))


def wilson(t: Tally, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval (Wilson 1927) of a proportion: unlike the normal approximation it stays inside
    [0, 1] and keeps its coverage at 0 or n successes and small n, which is where passkey counts live."""
    if not t.n:
        return None
    p, n = t.ok / t.n, t.n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def drop_p_value(base: Tally, load: Tally) -> float | None:
    """One-sided Fisher exact test that accuracy under load is lower than the baseline's.

    Exact (hypergeometric) rather than the two-proportion z-test, because the counts are small (tens of
    trials, often 0 or n correct) where the z-test's normal approximation is poor; one-sided, because
    only a drop is a finding. Trials under load repeat the baseline's prompts, so they are not independent
    draws of new prompts: the test asks whether load changed the answers, not whether the model would
    do as well on other prompts."""
    if not base.n or not load.n:
        return None
    wrong_base, wrong = base.n - base.ok, load.n - load.ok
    total_ok, total = base.ok + load.ok, base.n + load.n
    # P(load gets <= load.ok of the correct answers | margins), under no difference
    return sum(_hypergeom(k, total_ok, total, load.n) for k in range(max(0, load.n - (wrong_base + wrong)),
                                                                        load.ok + 1))


def _hypergeom(k: int, successes: int, population: int, draws: int) -> float:
    """P(k successes in `draws` draws without replacement from `population` holding `successes`)."""
    return (math.comb(successes, k) * math.comb(population - successes, draws - k)) / math.comb(population, draws)


def dropped(base: Tally, load: Tally, alpha: float = ALPHA) -> bool:
    """Accuracy under load fell beyond sampling noise (one-sided Fisher p below `alpha`)."""
    p = drop_p_value(base, load)
    return p is not None and p < alpha


def effective_length(tallies: list[tuple[int, Tally]], threshold: float = RULER_THRESHOLD) -> int | None:
    """The longest length (tokens) up to which every measured length scores at least `threshold`: RULER's
    effective length. None when the shortest already fails; lengths without trials are skipped."""
    best = None
    for length, t in sorted(tallies):
        if t.rate is None:
            continue
        if t.rate < threshold:
            break
        best = length
    return best


def depth_bin(depth: float, bins: int = DEPTH_BINS) -> int:
    """0..bins-1: which equal share of the filler the needle sits in (depth 1.0 goes in the last bin)."""
    return min(bins - 1, int(depth * bins))


def bin_label(i: int, bins: int = DEPTH_BINS) -> str:
    return f"{100 * i // bins}-{100 * (i + 1) // bins}%"
