"""PNG plots of a run's records: latency percentiles by prompt length, TTFT distribution, timeline, and
the server over time (memory, queue, TTFT) when it was sampled."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the runner may have no display
import matplotlib.pyplot as plt  # noqa: E402

from loadtest.summary import PCTS, by_bucket, values  # noqa: E402
from longctx.stats import percentile  # noqa: E402


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


def over_time(records: list[dict], samples: list[dict], out: Path) -> Path:
    """The soak's view: the server's memory, its running and waiting requests, and each request's TTFT
    (colour: bucket; red x: failed) against the time since the first request."""
    t0 = min((r["start"] for r in records), default=0.0)
    fig, (mem, queue, ttft) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ts = [s["t"] - t0 for s in samples if "pss_mib" in s]
    mem.plot(ts, [s["pss_mib"] for s in samples if "pss_mib" in s], "o-", ms=3, label="PSS (counted once)")
    mem.plot(ts, [s["rss_mib"] for s in samples if "pss_mib" in s], ".--", ms=3, label="RSS summed")
    mem.set(ylabel="MiB", title="Server memory (its process tree)")
    mem.legend()
    for key in ("running", "waiting"):
        queue.step([s["t"] - t0 for s in samples if key in s], [s[key] for s in samples if key in s], where="post",
                   label=key)
    queue.set(ylabel="requests", title="Requests in the engine (/metrics)")
    queue.legend()
    colors = {b: f"C{i}" for i, b in enumerate(by_bucket(records))}
    for bucket, rs in by_bucket(records).items():
        ok = [r for r in rs if not r["failure"] and r.get("ttft") is not None]
        ttft.plot([r["start"] - t0 for r in ok], [r["ttft"] for r in ok], "o", ms=4, color=colors[bucket], label=bucket)
    bad = [r for r in records if r["failure"]]
    ttft.plot([r["start"] - t0 for r in bad], [0] * len(bad), "x", color="red", label="failed")
    ttft.set(xlabel="seconds since the first request", ylabel="TTFT (s)", title="TTFT by send time")
    ttft.legend(fontsize="small", ncol=4)
    return _save(fig, out / "over_time.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(records: list[dict], out: Path, samples: list[dict] | None = None) -> list[Path]:
    """The plots into `out`: three always, and the view over time when the server was sampled."""
    plots = [latency_by_length(records, out), ttft_distribution(records, out), timeline(records, out)]
    return plots + ([over_time(records, samples, out)] if samples else [])
