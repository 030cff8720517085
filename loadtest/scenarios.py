"""Scenarios as data: which endpoint, which users, which prompts. Selected by name (`--scenario`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """One workload the runner can start."""

    endpoint: str
    """`chat` (/v1/chat/completions) or `completions` (/v1/completions)."""
    about: str
    """One line for --help and the summary."""
    long_vs_short: bool = False
    """One user sends prompts near max_model_len, the others the shortest bucket."""
    ramp: bool = False
    """Step the user count up to --users over the run instead of starting them all."""
    shared_prefix: bool = False
    """All prompts of a bucket share their text up to the needle, so prefix caching can help."""
    soak: bool = False
    """Default buckets mixed from 256 tokens to the limit (doubling), for a long run judged over time."""


SCENARIOS = {
    "chat": Scenario("chat", "mixed prompt lengths on /v1/chat/completions"),
    "completions": Scenario("completions", "mixed prompt lengths on /v1/completions"),
    "long-vs-short": Scenario("chat", "one user near max_model_len, the rest short: where chunked prefill matters",
                              long_vs_short=True),
    "ramp": Scenario("chat", "users step up to --users: where latency breaks", ramp=True),
    "shared-prefix": Scenario("chat", "prompts share a prefix: exercises prefix caching", shared_prefix=True),
    "soak": Scenario("chat", "prompt lengths mixed from 256 tokens to max_model_len for a long run: memory, "
                             "drift, accuracy over time", soak=True),
}
RAMP_STEPS = 4


def ramp_users(users: int, duration_s: float, run_time: float, steps: int = RAMP_STEPS) -> int | None:
    """Users wanted `run_time` seconds into a ramp of equal steps up to `users`; None once it is over."""
    if run_time >= duration_s:
        return None
    step = int(run_time / (duration_s / steps))
    return max(1, round(users * (step + 1) / steps))
