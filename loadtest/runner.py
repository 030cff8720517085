"""`python -m loadtest`: plan the prompts, run `locust --headless`, then write summary.md and plots.

Locust runs in its own process: it monkey-patches sockets with gevent on import, so it never shares a
process with this runner's planning, with pytest, or with vLLM."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from longctx.procs import running

from loadtest.metrics import parse_prometheus, server_side
from loadtest.baseline import run_baseline
from loadtest.plan import load_plan, make_plan, save_plan
from loadtest.scenarios import SCENARIOS
from loadtest.server import ServerError, scrape
from loadtest.soak import Sampler, Thresholds, judge, section, server_pid, windows
from loadtest.summary import Slo, load_records, render

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunConfig:
    """One load test run."""

    host: str
    """Server root, e.g. http://127.0.0.1:8000 (no /v1)."""
    out: Path
    """Results folder: Locust CSV and HTML, records.jsonl, summary.md, PNG plots."""
    scenario: str = "chat"
    """One of: chat, completions, long-vs-short, ramp, shared-prefix, soak."""
    users: int = 4
    """Concurrent users (ramp: the last step's count)."""
    duration: str = "5m"
    """Run time: 30s, 5m, 1h30m."""
    api_key: str | None = None
    """Bearer token (default: $OPENAI_API_KEY)."""
    buckets: tuple[str, ...] | None = None
    """Prompt lengths in tokens, e.g. 1k,4k,8k (default: those of 1k,4k,8k that fit max_model_len)."""
    per_bucket: int = 32
    """Distinct prompts planned per bucket; users cycle through them (cache_salt keeps them uncached)."""
    max_tokens: int = 32
    """Output tokens per request (at most; see --ignore-eos)."""
    ignore_eos: bool = False
    """Generate exactly --max-tokens tokens, past the end-of-sequence token (vLLM's `ignore_eos` request field),
    so servers are compared on equal output; passkeys are still read from the answer's first number."""
    slo_ttft_ms: float | None = None
    """Goodput: a request must have its first token within this many ms."""
    slo_tpot_ms: float | None = None
    """Goodput: and at most this many ms per output token."""
    slo_e2e_ms: float | None = None
    """Goodput: and finish within this many ms."""
    metrics: bool = True
    """Scrape the server's Prometheus /metrics before and after."""
    seed: int = 0
    """Seed for prompt windows, passkeys and depths."""
    tokenizer: str | None = None
    """Local folder with the served model's tokenizer, for servers without /tokenize (default: the server's)."""
    baseline: bool = True
    """Before the load, send every planned prompt alone (greedy) for a per-bucket accuracy baseline."""
    chunk_tokens: int | None = None
    """The server's prefill chunk, vLLM's --max-num-batched-tokens (`make serve`'s latency preset: 512): adds
    needles whose key straddles its multiples."""
    original_context: int | None = None
    """The model's context before extension (a merged checkpoint's config.json, longctx.original): adds needles
    just past it."""
    sample_every: float = 10.0
    """Seconds between samples of the server's memory (its process tree, when it runs on this machine) and
    its /metrics gauges during the load (0: no sampling)."""
    server_pid: int | None = None
    """The server's pid, for its memory (default: found from --host's port when the server is local)."""
    windows: int = 5
    """Equal time windows the run is cut into for drift and memory growth (last window against the first)."""
    max_failures: int | None = None
    """Threshold: at most this many failed requests (exit code 3 when any threshold is broken)."""
    max_memory_growth: float | None = None
    """Threshold: the server's memory (PSS of its process tree) grows at most this fraction, e.g. 0.1."""
    max_p95_drift: float | None = None
    """Threshold: TTFT and ITL p95 of the last window at most this fraction above the first's, e.g. 0.2."""
    min_accuracy: float | None = None
    """Threshold: at least this share of spread-depth passkeys right under load, e.g. 0.9."""
    fail_on_accuracy_drop: bool = False
    """Threshold: no bucket's accuracy under load below the baseline's beyond sampling noise (Fisher p < 0.05)."""

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown --scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if self.users < 1 or (SCENARIOS[self.scenario].long_vs_short and self.users < 2):
            raise ValueError("--users must be at least 1 (long-vs-short: at least 2, one long and one short)")
        parse_duration(self.duration)
        for name in ("chunk_tokens", "original_context"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive token count")
        if self.sample_every < 0 or self.windows < 1:
            raise ValueError("--sample-every must be >= 0 seconds and --windows at least 1")
        if self.server_pid is not None and not running(self.server_pid):
            raise ValueError(f"--server-pid {self.server_pid}: no such process")
        for name in ("max_failures", "max_memory_growth", "max_p95_drift", "min_accuracy"):
            if (getattr(self, name) or 0) < 0 or (name == "min_accuracy" and (self.min_accuracy or 0) > 1):
                raise ValueError(f"--{name.replace('_', '-')} must be at least 0"
                                 + (" and at most 1" if name == "min_accuracy" else ""))

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.max_failures, self.max_memory_growth, self.max_p95_drift, self.min_accuracy,
                          self.fail_on_accuracy_drop)


def parse_duration(text: str) -> float:
    """'1h30m' -> 5400.0, '20s' -> 20.0, '90' -> 90.0 (seconds)."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or not parts:
        raise ValueError(f"bad --duration {text!r}: use e.g. 30s, 5m or 1h30m")
    h, m, s = (int(g or 0) for g in parts.groups())
    return float(h * 3600 + m * 60 + s)


def locust_command(cfg: RunConfig) -> list[str]:
    """The `locust --headless` command line: CSV (with history) and HTML into cfg.out."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", cfg.host,
            "--users", str(cfg.users), "--spawn-rate", str(cfg.users), "--run-time", cfg.duration,
            "--csv", str(cfg.out / "locust"), "--csv-full-history", "--html", str(cfg.out / "locust.html"),
            "--stop-timeout", "30", "--only-summary", "--loglevel", "WARNING"]


def locust_env(cfg: RunConfig, plan: Path, records: Path) -> dict[str, str]:
    """The environment the locustfile reads its plan, key and shape from."""
    env = {**os.environ, "LOADTEST_PLAN": str(plan), "LOADTEST_RECORDS": str(records),
           "LOADTEST_SCENARIO": cfg.scenario, "LOADTEST_USERS": str(cfg.users),
           "LOADTEST_DURATION_S": str(parse_duration(cfg.duration)),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if cfg.api_key:
        env["LOADTEST_API_KEY"] = cfg.api_key
    return env


def prepare(cfg: RunConfig) -> Path:
    """Check the server and plan the prompts into cfg.out/plan.json; ServerError/ValueError on bad input."""
    plan = make_plan(cfg.host, cfg.api_key, cfg.scenario, list(cfg.buckets) if cfg.buckets else None,
                     cfg.per_bucket, cfg.max_tokens, cfg.seed, tokenizer=cfg.tokenizer, ignore_eos=cfg.ignore_eos,
                     chunk_tokens=cfg.chunk_tokens, original_context=cfg.original_context)
    cfg.out.mkdir(parents=True, exist_ok=True)
    return save_plan(plan, cfg.out / "plan.json")


def run(cfg: RunConfig, log=print, command: str | None = None) -> int:
    """The whole run; 2 on bad input (nothing started), 3 when a threshold given is broken, else 1 on
    transport failures (unless --max-failures allows them), else 0. `command`: how the run was started, for
    summary.md."""
    try:
        plan = prepare(cfg)
    except (ServerError, ValueError) as e:
        log(f"loadtest: {e}")
        return 2
    records = cfg.out / "records.jsonl"
    records.unlink(missing_ok=True)
    base = None
    if cfg.baseline:  # before the load, so it measures the same server and prompts unloaded
        base = run_baseline(cfg.host, cfg.api_key, load_plan(plan), cfg.out / "baseline.jsonl", log)
    before = scrape(cfg.host, cfg.api_key) if cfg.metrics else None
    sampler = start_sampler(cfg, log)
    log(f"loadtest: {cfg.scenario} with {cfg.users} users for {cfg.duration} against {cfg.host}")
    with sampler or contextlib.nullcontext():
        code = subprocess.run(locust_command(cfg), env=locust_env(cfg, plan, records)).returncode
    after = scrape(cfg.host, cfg.api_key) if before else None
    server = server_side(parse_prometheus(before), parse_prometheus(after)) if before and after else None
    rows = load_records(records)
    broken = write_results(cfg, rows, server, base, sampler.samples if sampler else [], command)
    log(f"loadtest: results in {cfg.out}/summary.md")
    for line in broken:
        log(f"loadtest: threshold broken: {line}")
    return 3 if broken else exit_code(code, rows, allowed=cfg.max_failures or 0)


def start_sampler(cfg: RunConfig, log) -> Sampler | None:
    """The sampler of the server's memory and /metrics, or None with --sample-every 0."""
    if not cfg.sample_every:
        return None
    pid = cfg.server_pid or server_pid(cfg.host)
    if pid is None:
        log("loadtest: the server's process is not visible on this machine: sampling /metrics only "
            "(give --server-pid for its memory)")
    (cfg.out / "samples.jsonl").unlink(missing_ok=True)
    return Sampler(cfg.host, cfg.api_key, pid, cfg.sample_every, cfg.out / "samples.jsonl")


def exit_code(locust_code: int, records: list[dict], allowed: int = 0) -> int:
    """0 when requests completed with at most `allowed` transport failures (--max-failures): wrong passkeys
    are a result, not an error (Locust itself exits 1 on any failed event, passkeys included)."""
    if locust_code not in (0, 1):
        return locust_code
    return 1 if not records or sum(1 for r in records if r["failure"]) > allowed else 0


def write_results(cfg: RunConfig, records: list[dict], server: dict | None, baseline: list[dict] | None = None,
                  samples: list[dict] | None = None, command: str | None = None) -> list[str]:
    """summary.md and the PNG plots; returns the thresholds broken, each as a line to show."""
    slo = Slo(cfg.slo_ttft_ms, cfg.slo_tpot_ms, cfg.slo_e2e_ms)
    title = f"{cfg.scenario}: {cfg.users} users, {cfg.duration}, {cfg.host}"
    spans = windows(records, samples or [], cfg.windows)
    verdict = judge(records, spans, baseline, cfg.thresholds) if records else None
    over_time = section(records, samples or [], spans, verdict, cfg.thresholds) if samples or verdict else []
    about = [f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", *([f"- command: `{command}`"] if command else []),
             f"- load generator: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"]
    (cfg.out / "summary.md").write_text(render(records, slo, title, server, baseline, over_time, about))
    if records:
        from loadtest.plots import write_plots  # matplotlib loads only when a run draws

        write_plots(records, cfg.out, samples or [])
    if verdict is None:
        return ["no request completed"] if cfg.thresholds.given() else []
    return verdict.broken
