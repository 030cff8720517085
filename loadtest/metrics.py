"""The server's Prometheus /metrics before and after a run, reduced to a few vLLM numbers."""

from __future__ import annotations

import re

SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Each metric's value summed over its label sets (one engine, one model: the sum is the total)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            try:
                values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
            except ValueError:
                continue
    return values


def _mean_delta(before: dict, after: dict, name: str) -> float | None:
    n = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    return (after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)) / n if n > 0 else None


def _delta(before: dict, after: dict, name: str) -> float | None:
    return after[name] - before.get(name, 0.0) if name in after else None


def server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Server-side means over the run (seconds) and counters' growth, by vLLM's metric names."""
    hits, queries = _delta(before, after, "vllm:prefix_cache_hits_total"), _delta(
        before, after, "vllm:prefix_cache_queries_total")
    return {
        "mean TTFT (s)": _mean_delta(before, after, "vllm:time_to_first_token_seconds"),
        "mean queue time (s)": _mean_delta(before, after, "vllm:request_queue_time_seconds"),
        "mean prefill time (s)": _mean_delta(before, after, "vllm:request_prefill_time_seconds"),
        "mean time per output token (s)": _mean_delta(before, after, "vllm:request_time_per_output_token_seconds"),
        "KV-cache use at end": after.get("vllm:kv_cache_usage_perc"),
        "prefix-cache hit rate": hits / queries if hits is not None and queries else None,
        "preemptions": _delta(before, after, "vllm:num_preemptions_total"),
    }
