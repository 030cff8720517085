"""What a long run does to the server over time: a sampler of its memory and /metrics, the run cut into
time windows (latency drift, failures, memory growth), and the thresholds that make the run fail.

The sampler reads the server's memory from /proc (the whole process tree: vLLM's API server, engine core
and workers), so it needs the server on this machine: found from the port of --host, or given as a pid."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from longctx.procs import listening_pid, tree_memory
from loadtest.accuracy import dropped, tally
from loadtest.metrics import parse_prometheus
from loadtest.server import scrape
from loadtest.summary import failures, groups, values
from longctx.stats import percentile

GAUGES = {"running": "vllm:num_requests_running", "waiting": "vllm:num_requests_waiting",
          "kv_cache": "vllm:kv_cache_usage_perc"}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
MIB = 2**20


def server_pid(host: str) -> int | None:
    """The pid serving `host` when it is on this machine (found from its port), else None."""
    url = urlparse(host)
    if url.hostname not in LOCAL_HOSTS:
        return None
    return listening_pid(url.port or (443 if url.scheme == "https" else 80))


class Sampler:
    """Every `every` seconds, in a thread: the server tree's memory and its /metrics gauges, one JSON line
    each to `path` (and kept in `samples`). `pid` None samples /metrics only."""

    def __init__(self, host: str, api_key: str | None, pid: int | None, every: float, path: Path):
        self.host, self.api_key, self.pid, self.every, self.path = host, api_key, pid, every, path
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> dict:
        row: dict = {"t": time.time()}
        mem = tree_memory(self.pid) if self.pid else None
        if mem:
            row.update(pss_mib=mem.pss / MIB, rss_mib=mem.rss / MIB, processes=mem.processes)
        text = scrape(self.host, self.api_key)
        if text:
            metrics = parse_prometheus(text)
            row.update({k: metrics[name] for k, name in GAUGES.items() if name in metrics})
        return row

    def _loop(self) -> None:
        with open(self.path, "a") as f:
            while True:
                row = self.sample()
                self.samples.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                if self._stop.wait(self.every):
                    return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.sample())  # the state after the load, once the last requests are done


@dataclass(frozen=True)
class Window:
    """One slice of the run: requests by the time they were sent, samples by the time they were taken."""

    start_s: float
    end_s: float
    requests: int
    failures: int
    ttft_p95: float | None
    itl_p95: float | None
    memory_mib: float | None
    """Mean PSS of the server's process tree over the window's samples."""
    running_max: float | None
    waiting_max: float | None


def windows(records: list[dict], samples: list[dict], n: int) -> list[Window]:
    """The run from its first request to its last answer, cut into `n` equal windows."""
    if not records or n < 1:
        return []
    t0 = min(r["start"] for r in records)
    span = max(r["start"] + r["e2e"] for r in records) - t0
    width = span / n
    out = []
    for i in range(n):
        lo, hi = t0 + i * width, t0 + (i + 1) * width
        last = i == n - 1
        rs = [r for r in records if lo <= r["start"] < hi or (last and r["start"] == hi)]
        ss = [s for s in samples if lo <= s["t"] < hi or (last and s["t"] >= hi)]
        mem = [s["pss_mib"] for s in ss if "pss_mib" in s]
        run, wait = [s["running"] for s in ss if "running" in s], [s["waiting"] for s in ss if "waiting" in s]
        out.append(Window(lo - t0, hi - t0, len(rs), sum(1 for r in rs if r["failure"]),
                          percentile(values(rs, "ttft"), 95), percentile(values(rs, "itl"), 95),
                          sum(mem) / len(mem) if mem else None, max(run, default=None), max(wait, default=None)))
    return out


def drift(spans: list[Window], key: str) -> float | None:
    """The last window's `key` against the first's (change), None without windows."""
    return change(getattr(spans[0], key), getattr(spans[-1], key)) if spans else None


def change(first: float | None, last: float | None) -> float | None:
    """last / first - 1, None where either is missing."""
    return None if first is None or last is None or first <= 0 else last / first - 1


@dataclass(frozen=True)
class Thresholds:
    """What makes a run fail (exit code 3); None: not checked."""

    max_failures: int | None = None
    max_memory_growth: float | None = None
    max_p95_drift: float | None = None
    min_accuracy: float | None = None
    no_accuracy_drop: bool = False

    def given(self) -> bool:
        return any(v not in (None, False) for v in asdict(self).values())


@dataclass(frozen=True)
class Verdict:
    """The run's figures against the thresholds."""

    failures: int
    memory_growth: float | None
    """Mean PSS of the last window against the first's."""
    ttft_drift: float | None
    """TTFT p95 of the last window against the first's."""
    itl_drift: float | None
    accuracy: float | None
    """Share of spread-depth needles answered under load."""
    drops: list[str]
    """Buckets whose accuracy under load fell below the baseline's beyond sampling noise."""
    broken: list[str]


def judge(records: list[dict], spans: list[Window], baseline: list[dict] | None, th: Thresholds) -> Verdict:
    """The figures a soak is judged by, and which of the given thresholds they break."""
    n_fail = sum(1 for r in records if r["failure"])
    mem, ttft, itl = (drift(spans, key) for key in ("memory_mib", "ttft_p95", "itl_p95"))
    spread = [r for r in records if r.get("kind", "spread") == "spread"]
    accuracy = tally(spread).rate
    load, base = groups(records), groups(baseline or [])
    drops = [bucket for (bucket, kind), rows in load.items()
             if (bucket, kind) in base and dropped(tally(base[(bucket, kind)]), tally(rows))]
    broken = []
    if th.max_failures is not None and n_fail > th.max_failures:
        broken.append(f"{n_fail} failed requests > --max-failures {th.max_failures}")
    if th.max_memory_growth is not None and (mem is None or mem > th.max_memory_growth):
        broken.append("memory growth not measured (is the server on this machine? give --server-pid)" if mem is None
                      else f"memory grew {mem:+.1%} > --max-memory-growth {th.max_memory_growth:.0%}")
    if th.max_p95_drift is not None:
        for name, moved in (("TTFT", ttft), ("ITL", itl)):
            if moved is None:
                broken.append(f"{name} p95 drift not measured (too few requests in the first or last window)")
            elif moved > th.max_p95_drift:
                broken.append(f"{name} p95 drifted {moved:+.1%} > --max-p95-drift {th.max_p95_drift:.0%}")
    if th.min_accuracy is not None and (accuracy is None or accuracy < th.min_accuracy):
        broken.append(f"passkey accuracy under load {'-' if accuracy is None else f'{accuracy:.1%}'} "
                      f"< --min-accuracy {th.min_accuracy:.0%}")
    if th.no_accuracy_drop and drops:
        broken.append(f"accuracy dropped under load (Fisher p < 0.05) at {', '.join(drops)}")
    return Verdict(n_fail, mem, ttft, itl, accuracy, drops, broken)


def swing(spans: list[Window], key: str) -> float | None:
    """The window whose `key` differs most from the first window's, as a change against it."""
    changes = [c for w in spans[1:] if (c := change(getattr(spans[0], key), getattr(w, key))) is not None]
    return max(changes, key=abs, default=None) if spans else None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "-" if x is None else format(x, fmt)


def section(records: list[dict], samples: list[dict], spans: list[Window], verdict: Verdict | None,
            th: Thresholds) -> list[str]:
    """summary.md's "Over time" part: the verdict against the thresholds, then one row per window."""
    lines = ["## Over time", ""]
    if th.given() and verdict is not None:
        lines += ["**Thresholds: " + ("all met**" if not verdict.broken else "broken**: " + "; ".join(verdict.broken)),
                  ""]
    if verdict is not None:
        kinds = ", ".join(f"{k} {n}" for k, n in failures(records).items() if k != "wrong passkey") or "none"
        lines += [f"- failed requests: {verdict.failures} ({kinds})",
                  f"- memory growth (server process tree, PSS, last window against the first): "
                  f"{_pct(verdict.memory_growth)}",
                  f"- p95 drift, last window against the first: TTFT {_pct(verdict.ttft_drift)}, "
                  f"ITL {_pct(verdict.itl_drift)}; the largest swing of any window against the first: "
                  f"TTFT {_pct(swing(spans, 'ttft_p95'))}, ITL {_pct(swing(spans, 'itl_p95'))}",
                  f"- passkey accuracy under load (spread needles): "
                  f"{'-' if verdict.accuracy is None else f'{verdict.accuracy:.1%}'}; drops against the "
                  f"baseline beyond noise: {', '.join(verdict.drops) or 'none'}",
                  f"- samples: {len(samples)} (memory in {sum('pss_mib' in s for s in samples)})", ""]
    rows = [[f"{w.start_s:.0f}-{w.end_s:.0f}", w.requests, w.failures, _num(w.ttft_p95 and w.ttft_p95 * 1000),
             _num(w.itl_p95 and w.itl_p95 * 1000, ".1f"), _num(w.memory_mib), _num(w.running_max),
             _num(w.waiting_max)] for w in spans]
    head = ["seconds", "requests sent", "failed", "TTFT p95 (ms)", "ITL p95 (ms)", "server PSS (MiB)",
            "running (max)", "waiting (max)"]
    return lines + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                    *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]
