"""A soak of `python -m serve` (the default model unless --model): `python -m loadtest --scenario soak` for a
fixed time against a fresh server, judged by the issue's thresholds (no failed request, memory growth under
10%, TTFT and ITL p95 drift under 20%, no accuracy drop against the single-request baseline). Results in
benchmarks/results/soak.md (the machine header, then the run's summary) and benchmarks/results/soak/ (the
whole loadtest folder: records, samples, plots).

    python benchmarks/soak.py                       # 4 users, 10 minutes, after a baseline (~20 min on 2 cores)
    python benchmarks/soak.py --users 2 --duration 2m --per-bucket 2"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import PORT, REPO, URL, machine_header, start_server  # noqa: E402
from benchmarks.common import check_duration, check_positive  # noqa: E402
from longctx import cli  # noqa: E402
from longctx.home import longctx_home  # noqa: E402
from longctx.procs import terminate  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
THRESHOLDS = ("--max-failures", "0", "--max-memory-growth", "0.1", "--max-p95-drift", "0.2", "--fail-on-accuracy-drop")
PROG = "python benchmarks/soak.py"


@dataclass(frozen=True)
class Settings:
    """The soak's server and load; every field is a flag."""

    model: Path | None = None
    """checkpoint folder (default: the embedded SmolLM2-135M-Instruct)"""
    users: int = 4
    """concurrent Locust users, as `python -m loadtest --users`"""
    duration: str = "10m"
    """run time of the load, after the baseline: 30s, 10m, 1h30m"""
    per_bucket: int = 4
    """prompts planned per bucket (the baseline sends each once)"""
    max_tokens: int = 16
    """output tokens per request (at most)"""
    eager: bool = True
    """`python -m serve --enforce-eager` (starts in ~1 min instead of ~4)"""
    out: Path = RESULTS / "soak"
    """the loadtest folder; the report goes beside it as OUT.md (default: benchmarks/results/soak)"""

    def __post_init__(self) -> None:
        check_duration(self.duration)
        check_positive(self, "users", "per_bucket", "max_tokens")


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: soak(cli.parse(Settings, argv, PROG, __doc__), argv))


def soak(args: Settings, argv: list[str] | None) -> int:
    from longctx.default_model import ensure_default_model

    model_dir = (args.model or ensure_default_model()).resolve()
    header = machine_header(sys.argv if argv is None else [__file__, *argv])
    home = longctx_home()
    log = Path("/tmp/longctx-soak-server.log")
    server, ready = start_server(model_dir, "latency", home, args.eager, log, ("--per-request-metrics",))
    print(f"soak: server ready after {ready:.0f} s on port {PORT} (log: {log})", flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, "-m", "loadtest", "--host", URL, "--scenario", "soak", "--users", str(args.users),
           "--duration", args.duration, "--per-bucket", str(args.per_bucket), "--max-tokens", str(args.max_tokens),
           "--out", str(args.out), *THRESHOLDS]
    try:
        code = subprocess.run(cmd, cwd=REPO).returncode
    finally:
        terminate(server, grace=120)
    summary = (args.out / "summary.md").read_text() if (args.out / "summary.md").exists() else "(no summary)\n"
    body = summary.split("\n", 1)[1]  # its own title line replaced by ours
    served = f"`python -m serve {args.model or '(default model)'} --per-request-metrics" + (
        " --enforce-eager`" if args.eager else "`")
    text = "\n".join([
        "# Soak: the server over a long run", "", header, "",
        f"Server: {served} (latency preset), started fresh. Load: "
        f"`{' '.join(['python', *cmd[1:]]).replace(str(REPO) + '/', '')}` "
        f"(exit code {code}: 0 thresholds met, 3 broken). Full results: [{args.out.name}/]({args.out.name}/).",
        "", f"![the server over time]({args.out.name}/over_time.png)", "", body])
    out = args.out.with_suffix(".md")
    out.write_text(text)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
