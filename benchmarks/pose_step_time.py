"""Seconds per optimizer step of PoSE training of the default model to 32k (x4), on this machine.

For each row it runs `finetune train --max-steps 2` (one cold step, one warm step; the warm one is the
figure), S²-Attn, gradient accumulation 1, `--precision auto`, on `corpus:mix`, with no held-out
evaluation (`--eval-fraction 0`) so the run's wall time is model loading, two steps and one checkpoint.
It writes benchmarks/results/pose-step-time.md (and .json) with the machine, load average per row and
the exact command of each row.

    python benchmarks/pose_step_time.py [--windows 4096 8192] [--ropes yarn linear]
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import REPO, check_positive, finetune, machine_header  # noqa: E402
from longctx import cli  # noqa: E402
from longctx.rope import Method  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET = 32768
PROG = "python benchmarks/pose_step_time.py"


@dataclass(frozen=True)
class Settings:
    """The rows to measure: every window with every RoPE method."""

    windows: tuple[int, ...] = (4096, 8192)
    """PoSE windows (tokens), as `finetune train --pose-window`"""
    ropes: tuple[Method, ...] = ("yarn", "linear")
    """RoPE methods, as `finetune train --rope`"""
    data: str = "corpus:mix"
    """training data, as `finetune train --data`"""

    def __post_init__(self) -> None:
        check_positive(self, "windows")


def train_args(out: Path, window: int, rope: str, data: str) -> list[str]:
    """`finetune train` arguments of one row."""
    return ["train", "--target-length", str(TARGET), "--pose-window", str(window), "--rope", rope,
            "--attention", "s2", "--grad-accum", "1", "--max-steps", "2", "--warmup-steps", "1",
            "--precision", "auto", "--eval-fraction", "0", "--data", data, "--out", str(out)]


def measure(window: int, rope: str, data: str, scratch: Path) -> dict:
    """Run one row; its per-step seconds, precision, wall time, peak RSS and load averages."""
    out = scratch / f"pose-{window}-{rope}"
    args = train_args(out, window, rope, data)
    load_before = os.getloadavg()
    wall, rss = finetune(*args)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    run = json.loads((out / "run.json").read_text())
    return {"window": window, "rope": rope, "cold_s": steps[0]["seconds"], "warm_s": steps[1]["seconds"],
            "warm_tokens_per_s": steps[1]["tokens_per_s"], "precision": run["precision"], "wall_s": wall,
            "peak_rss_mib": rss, "load_before": load_before, "load_after": os.getloadavg(),
            "command": shlex.join(["python", "-m", "finetune", *args])}


def report(rows: list[dict], header: str) -> str:
    """The results file: header, table, commands."""
    lines = ["# PoSE step time: SmolLM2-135M-Instruct 8k -> 32k (x4), S²-Attn, grad_accum 1", "", header, "",
             "The machine is shared with other sessions while this runs: compare rows measured in the same run, "
             "and read the load average of each row (1-minute figure before and after it).", "",
             "| PoSE window | RoPE | precision | cold step s | warm step s | warm tokens/s | run wall s | "
             "peak RSS MiB | load before / after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['window']} | {r['rope']} | {r['precision']} | {r['cold_s']:.1f} | {r['warm_s']:.1f} | "
                     f"{r['warm_tokens_per_s']:.0f} | {r['wall_s']:.0f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")
    lines += ["", "Commands (run from the repository root; the output folders were temporary):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: measure_all(cli.parse(Settings, argv, PROG, __doc__), argv))


def measure_all(args: Settings, argv: list[str] | None) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="pose-step-time-") as scratch:
        for window in args.windows:
            for rope in args.ropes:
                rows.append(measure(window, rope, args.data, Path(scratch)))
                print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pose-step-time.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = report(rows, machine_header(argv if argv is not None else sys.argv))
    (RESULTS / "pose-step-time.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
