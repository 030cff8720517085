"""summary.md from the per-request records the Locust users write (records.jsonl): percentiles,
throughput, goodput against SLOs, passkey accuracy per bucket, failures by kind, server-side metrics."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from loadtest.prompts import parse_bucket

PCTS = (50, 90, 95, 99)
LATENCIES = ("ttft", "itl", "tpot", "e2e")


@dataclass(frozen=True)
class Slo:
    """Goodput thresholds in milliseconds; None: not checked."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None


def load_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()] if path.exists() else []


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def values(records: list[dict], key: str) -> list[float]:
    """All values of one latency over successful requests (ITL: every gap of every request)."""
    ok = [r for r in records if not r["failure"]]
    if key == "itl":
        return [gap for r in ok for gap in r["itl"]]
    return [r[key] for r in ok if r.get(key) is not None]


def meets(r: dict, slo: Slo) -> bool:
    """A request counts for goodput when it completed and met every threshold that is set."""
    checks = [(slo.ttft_ms, r.get("ttft")), (slo.tpot_ms, r.get("tpot")), (slo.e2e_ms, r.get("e2e"))]
    return not r["failure"] and all(t is None or (v is not None and v * 1000 <= t) for t, v in checks)


def throughput(records: list[dict], slo: Slo) -> dict[str, float]:
    """Requests/s, output tokens/s and goodput over the span from the first send to the last answer."""
    if not records:
        return {"requests": 0, "requests/s": 0.0, "output tokens/s": 0.0, "goodput (share)": 0.0, "goodput/s": 0.0}
    span = max(r["start"] + r["e2e"] for r in records) - min(r["start"] for r in records)
    good = sum(meets(r, slo) for r in records)
    out = sum(r["output_tokens"] for r in records if not r["failure"])
    return {"requests": len(records), "requests/s": len(records) / span, "output tokens/s": out / span,
            "goodput (share)": good / len(records), "goodput/s": good / span}


def by_bucket(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by bucket, shortest first."""
    groups: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: parse_bucket(r["bucket"])):
        groups.setdefault(r["bucket"], []).append(r)
    return groups


def failures(records: list[dict]) -> Counter:
    """Failures by kind: transport kinds (connect, http <code>, stream) and wrong passkeys."""
    kinds = Counter(r["failure"].split(":")[0] for r in records if r["failure"])
    kinds["wrong passkey"] = sum(1 for r in records if not r["failure"] and not r["passkey_ok"])
    return +kinds


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render(records: list[dict], slo: Slo, title: str, server: dict[str, float | None] | None = None) -> str:
    """The whole summary.md."""
    t = throughput(records, slo)
    lines = [f"# {title}", "", *(f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in t.items()),
             f"- SLO for goodput (ms): TTFT {slo.ttft_ms}, TPOT {slo.tpot_ms}, E2E {slo.e2e_ms}", "",
             "## Latency (ms)", ""]
    lines += _table(["metric", "n", *(f"p{q}" for q in PCTS)],
                    [[k.upper(), len(values(records, k)), *(_ms(percentile(values(records, k), q)) for q in PCTS)]
                     for k in LATENCIES])
    lines += ["", "## By prompt length", ""]
    rows = []
    for bucket, rs in by_bucket(records).items():
        ttft, e2e = values(rs, "ttft"), values(rs, "e2e")
        acc = sum(r["passkey_ok"] for r in rs) / len(rs)
        rows.append([bucket, rs[0]["prompt_tokens"], len(rs), *(_ms(percentile(ttft, q)) for q in PCTS),
                     _ms(percentile(e2e, 50)), _ms(percentile(e2e, 99)), f"{acc:.0%}"])
    lines += _table(["bucket", "tokens", "requests", *(f"TTFT p{q}" for q in PCTS), "E2E p50", "E2E p99",
                     "passkey accuracy"], rows)
    lines += ["", "## Failures by kind", ""]
    lines += _table(["kind", "count"], [[k, n] for k, n in failures(records).items()] or [["none", 0]])
    if server:
        lines += ["", "## Server side (Prometheus /metrics, after minus before)", ""]
        lines += _table(["metric", "value"], [[k, "-" if v is None else f"{v:.4g}"] for k, v in server.items()])
    return "\n".join(lines) + "\n"
