"""PNG plots of a run's records: latency percentiles by prompt length, TTFT distribution, timeline."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the runner may have no display
import matplotlib.pyplot as plt  # noqa: E402

from loadtest.summary import PCTS, by_bucket, percentile, values  # noqa: E402


def latency_by_length(records: list[dict], out: Path) -> Path:
    """p50/p90/p99 of TTFT and E2E against prompt tokens, one point per bucket."""
    groups = by_bucket(records)
    x = [rs[0]["prompt_tokens"] for rs in groups.values()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("ttft", "e2e")):
        for q in PCTS:
            ax.plot(x, [(percentile(values(rs, key), q) or 0) * 1000 for rs in groups.values()], "o-", label=f"p{q}")
        ax.set(xlabel="prompt tokens", ylabel=f"{key.upper()} (ms)", title=f"{key.upper()} by prompt length")
        ax.legend()
    return _save(fig, out / "latency_by_length.png")


def ttft_distribution(records: list[dict], out: Path) -> Path:
    """Histogram of TTFT, one series per bucket."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for bucket, rs in by_bucket(records).items():
        ax.hist([v * 1000 for v in values(rs, "ttft")], bins=30, alpha=0.6, label=bucket)
    ax.set(xlabel="TTFT (ms)", ylabel="requests", title="TTFT distribution")
    ax.legend()
    return _save(fig, out / "ttft_distribution.png")


def timeline(records: list[dict], out: Path) -> Path:
    """Each request as a bar from send to last token, coloured by bucket; failures in red."""
    fig, ax = plt.subplots(figsize=(10, 4))
    t0 = min((r["start"] for r in records), default=0.0)
    colors = {b: f"C{i}" for i, b in enumerate(by_bucket(records))}
    for i, r in enumerate(sorted(records, key=lambda r: r["start"])):
        ax.plot([r["start"] - t0, r["start"] - t0 + r["e2e"]], [i, i], color="red" if r["failure"] else colors[r["bucket"]])
    ax.set(xlabel="seconds since start", ylabel="request", title="Timeline (colour: bucket, red: failed)")
    return _save(fig, out / "timeline.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(records: list[dict], out: Path) -> list[Path]:
    """All three plots into `out`."""
    return [latency_by_length(records, out), ttft_distribution(records, out), timeline(records, out)]
