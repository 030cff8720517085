"""Does the load test's passkey check measure the server? Its planned prompts sent one at a time, greedy,
through the runner's own baseline code, on both endpoints, against a running server.

    python -m serve --port 8812 --enforce-eager          # the default model, default (latency) preset
    python benchmarks/passkey_baseline.py --host http://127.0.0.1:8812 --buckets 1k,2k,4k,8160 --per-bucket 10

Prints accuracy per endpoint, bucket and depth bin (Wilson 95% intervals) and writes
benchmarks/results/passkey-baseline.{md,json}."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import check_choices, check_positive, machine_header  # noqa: E402
from loadtest.accuracy import DEPTH_BINS, bin_label, depth_bin, tally, wilson  # noqa: E402
from loadtest.baseline import run_baseline  # noqa: E402
from loadtest.plan import make_plan  # noqa: E402
from loadtest.prompts import ANSWER, INTRO, NEEDLE, QUESTION  # noqa: E402
from loadtest.scenarios import SCENARIOS  # noqa: E402
from loadtest.server import probe  # noqa: E402
from longctx import cli  # noqa: E402

RESULTS = Path("benchmarks/results")
PROG = "python benchmarks/passkey_baseline.py"


@dataclass(frozen=True)
class Settings:
    """The server, the plan and the results file; every field is a flag."""

    host: str
    """server root, e.g. http://127.0.0.1:8812"""
    buckets: tuple[str, ...] = ("1k", "2k", "4k", "8160")
    """prompt lengths in tokens, e.g. 1k,2k,4k,8160"""
    per_bucket: int = 10
    """prompts per bucket (depths spread over the filler)"""
    endpoints: tuple[str, ...] = ("chat", "completions")
    """scenarios to plan: chat, completions"""
    max_tokens: int = 8
    """output tokens per answer (a 5-digit key fits)"""
    seed: int = 0
    """seed of the plan's prompts, passkeys and depths"""
    served_with: str = "python -m serve --port 8812 --enforce-eager (bfloat16, latency preset)"
    """how the server was started, for the results file"""
    name: str = "passkey-baseline"
    """results file stem"""
    trials: Path = Path("/tmp")
    """folder for each endpoint's trials (<name>-<endpoint>.jsonl)"""
    reuse: bool = False
    """keep an endpoint's trials from its file up to the first transport failure; ask the rest"""

    def __post_init__(self) -> None:
        check_positive(self, "per_bucket", "max_tokens")
        check_choices("--endpoints", self.endpoints, SCENARIOS)


def cell(rows: list[dict]) -> str:
    t = tally(rows)
    if not t.n:
        return "-"
    lo, hi = wilson(t)
    return f"{t.ok}/{t.n} = {t.rate:.0%} [{lo:.0%}, {hi:.0%}]"


def table(runs: dict[str, list[dict]], buckets: list[str]) -> list[str]:
    """One row per endpoint and bucket: accuracy, then correct/trials per depth bin."""
    lines = ["| endpoint | bucket | correct | " + " | ".join(bin_label(i) for i in range(DEPTH_BINS)) + " |",
             "|---|---|---|" + "---|" * DEPTH_BINS]
    for endpoint, rows in runs.items():
        for b in buckets:
            here = [r for r in rows if r["bucket"] == b]
            bins = [tally([r for r in here if depth_bin(r["depth"]) == i]) for i in range(DEPTH_BINS)]
            lines.append(f"| {endpoint} | {b} | {cell(here)} | " + " | ".join(f"{t.ok}/{t.n}" for t in bins) + " |")
    return lines


def cpu_flags() -> str:
    """The vector flags that decide the CPU's dtype and kernels."""
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return " ".join(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) or "-"


def answered(path: Path) -> list[dict]:
    """The trials in `path` up to the first transport failure (a server that died mid-run)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return rows[:next((i for i, r in enumerate(rows) if r["failure"]), len(rows))]


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: measure(cli.parse(Settings, argv, PROG, __doc__)))


def measure(args: Settings) -> None:
    buckets = list(args.buckets)
    runs, seconds, model = {}, {}, probe(args.host, None).model
    for endpoint in args.endpoints:
        path = args.trials / f"{args.name}-{endpoint}.jsonl"
        done = answered(path) if args.reuse else []
        if len(done) < args.per_bucket * len(buckets):  # ask the prompts not answered yet, in plan order
            start = time.monotonic()
            plan = make_plan(args.host, None, endpoint, buckets, args.per_bucket, args.max_tokens, args.seed)
            if [r["key_at"] for r in done] != [q["key_at"] for q in plan["prompts"][:len(done)]]:
                raise SystemExit(f"{path} holds trials of another plan: remove it or drop --reuse")
            rest = path.with_suffix(".rest.jsonl")
            done += run_baseline(args.host, None, {**plan, "prompts": plan["prompts"][len(done):]}, rest)
            path.write_text("".join(json.dumps(r) + "\n" for r in done))
            seconds[endpoint] = time.monotonic() - start
        runs[endpoint] = done
        print("\n".join(table({endpoint: runs[endpoint]}, buckets)), flush=True)
    write(runs, buckets, seconds, model, args)


def write(runs: dict, buckets: list[str], seconds: dict, model: str, args: Settings) -> None:
    wording = {"intro": INTRO, "needle": NEEDLE, "question": QUESTION, "answer prefix": ANSWER}
    md = [f"# Passkey accuracy one request at a time: {model}", "", machine_header(), f"- CPU flags: {cpu_flags()}",
          f"- server: `{args.served_with}`", f"- greedy, max_tokens {args.max_tokens}, {args.per_bucket} prompts "
          f"per bucket planned, seed {args.seed}; seconds per endpoint (this invocation): "
          + (", ".join(f"{e} {s:.0f}" for e, s in seconds.items()) or "- (trials reused)"), "",
          "Depth bins: share of the filler before the needle (correct / trials). Intervals: Wilson 95%.", "",
          *table(runs, buckets), "", "Wording (`loadtest/prompts.py`):", "", "```",
          *(f"{k}: {v!r}" for k, v in wording.items()), "```", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(md))
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"model": model, "wording": wording, "runs": runs},
                                                          indent=1))
    print(f"wrote {RESULTS / args.name}.md")


if __name__ == "__main__":
    sys.exit(main())
