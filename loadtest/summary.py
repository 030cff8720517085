"""summary.md from the per-request records the Locust users write (records.jsonl): passkey accuracy under
load beside the single-request baseline (first, with the effective context length), then percentiles,
throughput, goodput against SLOs, latency per bucket, failures by kind, server-side metrics."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from loadtest.accuracy import (DEPTH_BINS, RULER_THRESHOLD, Tally, bin_label, depth_bin, drop_p_value, dropped,
                               effective_length, tally, wilson)
from loadtest.prompts import parse_bucket
from longctx.stats import percentile

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


def ttft_split(records: list[dict]) -> list[str]:
    """TTFT split by the server's per-request metrics, per bucket: queue (arrival to scheduling) and prefill
    (scheduling to first token); nothing where the server sent none (start it with --per-request-metrics)."""
    if not values(records, "queue") and not values(records, "prefill"):
        return []
    rows = [[bucket, len(values(rs, "prefill")), _ms(percentile(values(rs, "ttft"), 50)),
             *(_ms(percentile(values(rs, key), q)) for key in ("queue", "prefill") for q in (50, 95))]
            for bucket, rs in by_bucket(records).items()]
    return ["", "## TTFT split by the server (vLLM per-request metrics, ms)", "",
            *_table(["bucket", "requests", "client TTFT p50", "queue p50", "queue p95", "prefill p50",
                     "prefill p95"], rows)]


def kind_of(r: dict) -> str:
    return r.get("kind", "spread")


KINDS = ("spread", "chunk", "past-original")


def _order(key: tuple[str, str]) -> tuple[int, int]:
    """Spread needles first, then chunk and past-original; shortest bucket first."""
    bucket, kind = key
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), parse_bucket(bucket))


def groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Rows (records or baseline trials) by (bucket, needle kind)."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["bucket"], kind_of(r)), []).append(r)
    return out


def _rate(t: Tally) -> str:
    if not t.n:
        return "-"
    lo, hi = wilson(t)
    return f"{t.ok}/{t.n} = {t.rate:.0%} [{lo:.0%}, {hi:.0%}]"


def _length(tallies: list[tuple[int, Tally]], names: dict[int, str]) -> str:
    best = effective_length(tallies)
    return "below the shortest bucket" if best is None else f"{names[best]} ({best} tokens)"


def accuracy_section(records: list[dict], baseline: list[dict] | None) -> list[str]:
    """The lead of summary.md: the effective context length under load and alone, then accuracy per bucket
    and needle kind with Wilson 95% intervals and a one-sided Fisher test for a drop under load."""
    load, base = groups(records), groups(baseline or [])
    names = {parse_bucket(b): b for b, k in [*load, *base] if k == "spread"}
    spread = sorted(names)
    load_t = [(n, tally(load.get((names[n], "spread"), []))) for n in spread]
    lines = ["## Passkey accuracy: under load against one request at a time", "",
             f"- **Effective context under load: {_length(load_t, names)}**"]
    if baseline is not None:
        base_t = [(n, tally(base.get((names[n], "spread"), []))) for n in spread]
        lines.append(f"- Effective context one request at a time: {_length(base_t, names)}")
    lines += [f"- Effective: the longest bucket up to which every bucket's spread-depth accuracy is at least "
              f"{RULER_THRESHOLD:.1%} (RULER's threshold). Intervals: Wilson 95%. Drop: one-sided Fisher exact "
              f"test of load against alone, p < 0.05 (trials under load repeat the same prompts).", ""]
    rows = []
    for bucket, kind in sorted({*base, *load}, key=_order):
        b, l = tally(base.get((bucket, kind), [])), tally(load.get((bucket, kind), []))
        p = drop_p_value(b, l)
        rows.append([bucket, kind, _rate(b) if baseline is not None else "not run", _rate(l),
                     "-" if p is None else f"{p:.3g}", "**drop**" if dropped(b, l) else ""])
    lines += _table(["bucket", "needle", "one at a time", "under load", "p (drop)", ""], rows)
    return lines + ["", *depth_table(load, base, baseline is not None)]


def _bin_cell(rows: list[dict], i: int) -> str:
    t = tally([r for r in rows if r.get("depth") is not None and depth_bin(r["depth"]) == i])
    return f"{t.ok}/{t.n}" if t.n else "-"


def depth_table(load: dict, base: dict, with_base: bool) -> list[str]:
    """Spread-depth accuracy per bucket and depth bin (share of the filler before the needle)."""
    rows = []
    for bucket in sorted({b for b, k in [*load, *base] if k == "spread"}, key=parse_bucket):
        here, alone = load.get((bucket, "spread"), []), base.get((bucket, "spread"), [])
        cells = [(_bin_cell(alone, i), _bin_cell(here, i)) for i in range(DEPTH_BINS)]
        rows.append([bucket, *(f"{a} · {h}" if with_base and (a, h) != ("-", "-") else h for a, h in cells)])
    head = "Correct by needle depth" + (" (one at a time · under load)" if with_base else " (under load)")
    return [f"### {head}", "", *_table(["bucket", *(bin_label(i) for i in range(DEPTH_BINS))], rows)]


def render(records: list[dict], slo: Slo, title: str, server: dict[str, float | None] | None = None,
           baseline: list[dict] | None = None, over_time: list[str] | None = None,
           about: list[str] | None = None) -> str:
    """The whole summary.md; `baseline`: the single-request trials (None: not run); `over_time`: the soak's
    section (thresholds, windows), placed after accuracy; `about`: lines under the title (date, command)."""
    t = throughput(records, slo)
    lines = [f"# {title}", "", *(about or []), *([""] if about else []), *accuracy_section(records, baseline), "",
             *(over_time or []),
             *([""] if over_time else []), "## Load", "",
             *(f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in t.items()),
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
                     "passkey accuracy (all needles)"], rows)
    lines += ttft_split(records)
    lines += ["", "## Failures by kind", ""]
    lines += _table(["kind", "count"], [[k, n] for k, n in failures(records).items()] or [["none", 0]])
    if server:
        lines += ["", "## Server side (Prometheus /metrics, after minus before)", ""]
        lines += _table(["metric", "value"], [[k, "-" if v is None else f"{v:.4g}"] for k, v in server.items()])
    return "\n".join(lines) + "\n"
