"""The workload where chunked prefill matters, measured side by side: Locust's `long-vs-short`
scenario (one user sending prompts near max_model_len, the others short ones) against `python -m serve`
with the latency preset, then with a large batched-token budget (the throughput preset).

    python benchmarks/chunked_prefill.py                     # default model, 5 users, 4 minutes each
    python benchmarks/chunked_prefill.py --duration 2m --users 3

Prints the figures and writes benchmarks/results/chunked-prefill.{md,json}; each run's Locust folder
(CSV, HTML, summary, plots) goes to benchmarks/results/chunked-prefill-<profile>/."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import URL, check_duration, machine_header, start_server  # noqa: E402
from longctx import cli  # noqa: E402
from serve.config import ProfileName  # noqa: E402
from longctx.stats import percentile  # noqa: E402

RESULTS = Path("benchmarks/results")
PROG = "python benchmarks/chunked_prefill.py"


@dataclass(frozen=True)
class Settings:
    """The servers and the load; every field is a flag."""

    model: Path | None = None
    """checkpoint folder (default: the embedded default model)"""
    profiles: tuple[ProfileName, ...] = ("latency", "throughput")
    """`python -m serve --profile` presets to run, one fresh server each, e.g. latency,throughput"""
    users: int = 5
    """Locust users: one sends prompts near max_model_len, the others short ones (at least 2)"""
    duration: str = "4m"
    """Locust run time per server: 30s, 4m, 1h30m"""
    short_bucket: str = "1k"
    """prompt length of the short users, in tokens (1k = 1024), as `python -m loadtest --buckets`"""
    eager: bool = False
    """`python -m serve --enforce-eager` (starts faster)"""

    def __post_init__(self) -> None:
        check_duration(self.duration)
        if self.users < 2:
            raise ValueError("--users must be at least 2: one long user and one short")


def digest(records: list[dict]) -> dict:
    """Short and long requests' TTFT percentiles and passkey accuracy per bucket."""
    out: dict = {}
    for role in ("ShortUser", "LongUser"):
        ttft = [r["ttft"] for r in records if r["user"] == role and not r["failure"] and r["ttft"] is not None]
        p50, p95 = (percentile(ttft, q) for q in (50, 95))
        out[role] = {"n": len(ttft), "ttft_p50": float("nan") if p50 is None else p50,
                     "ttft_p95": float("nan") if p95 is None else p95}
    buckets = sorted({r["bucket"] for r in records}, key=str)
    out["passkey"] = {b: {"ok": sum(r["passkey_ok"] for r in records if r["bucket"] == b),
                          "n": sum(1 for r in records if r["bucket"] == b)} for b in buckets}
    out["transport_failures"] = sum(1 for r in records if r["failure"])
    return out


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: measure(cli.parse(Settings, argv, PROG, __doc__)))


def measure(args: Settings) -> None:
    from longctx.default_model import ensure_default_model
    from longctx.home import longctx_home

    model = (args.model or ensure_default_model()).resolve()
    runs = {}
    for profile in args.profiles:
        out = RESULTS / f"chunked-prefill-{profile}"
        log = Path(f"/tmp/longctx-bench-{profile}.log")
        proc, ready = start_server(model, profile, longctx_home(), args.eager, log)
        print(f"[{profile}] server ready after {ready:.0f} s; running long-vs-short for {args.duration}", flush=True)
        try:
            cmd = [sys.executable, "-m", "loadtest", "--host", URL, "--scenario", "long-vs-short", "--users",
                   str(args.users), "--duration", args.duration, "--buckets", args.short_bucket, "--out", str(out)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode not in (0, 1):
                raise SystemExit(f"loadtest failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        runs[profile] = {"command": " ".join(cmd[1:]), **digest(records)}
        print(f"[{profile}] {json.dumps(runs[profile])}", flush=True)
    write(runs, model, args)


def write(runs: dict, model: Path, args: Settings) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chunked-prefill.json").write_text(json.dumps(runs, indent=2))
    from serve.config import PROFILES

    lines = [f"# Chunked prefill under load: `long-vs-short` on {model.name}", "", machine_header(), "",
             f"{args.users} Locust users for {args.duration} per server: one sends prompts near max_model_len, "
             f"the others {args.short_bucket}-token prompts; each prompt hides a passkey.", "",
             "| profile | max_num_batched_tokens | long-prefill threshold | short TTFT p50 (s) | short TTFT p95 (s) "
             "| long TTFT p50 (s) | short requests | long requests | transport failures |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        p = PROFILES[name]
        s, lo = r["ShortUser"], r["LongUser"]
        lines.append(f"| {name} | {p.max_num_batched_tokens} | {p.long_prefill_token_threshold or '-'} | "
                     f"{s['ttft_p50']:.2f} | {s['ttft_p95']:.2f} | {lo['ttft_p50']:.2f} | {s['n']} | {lo['n']} | "
                     f"{r['transport_failures']} |")
    if {"latency", "throughput"} <= runs.keys():
        ratio = runs["throughput"]["ShortUser"]["ttft_p95"] / runs["latency"]["ShortUser"]["ttft_p95"]
        lines += ["", f"Short-request TTFT p95, large budget / latency preset: **{ratio:.2f}x**."]
    lines += ["", "Passkey accuracy per bucket:", "", "| profile | bucket | correct / requests |", "|---|---|---|"]
    for name, r in runs.items():
        for bucket, v in r["passkey"].items():
            lines.append(f"| {name} | {bucket} | {v['ok']} / {v['n']} |")
    lines += ["", "Commands (each against `python -m serve --profile <profile>` on port 8765):", ""]
    lines += [f"- {name}: `python {r['command']}`" for name, r in runs.items()]
    (RESULTS / "chunked-prefill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
