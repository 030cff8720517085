"""python -m loadtest --host URL --scenario NAME --users N --duration 5m --out DIR [...]"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from finetune.config import field_docs
from loadtest.runner import RunConfig, run


def parser() -> argparse.ArgumentParser:
    """One flag per RunConfig field; each field's docstring is its help (read from the source)."""
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    helps = field_docs(RunConfig)
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=helps.get(f.name))
        else:
            required = f.default is dataclasses.MISSING
            p.add_argument(flag, required=required, default=None if required else f.default, help=helps.get(f.name))
    return p


def config(args: argparse.Namespace) -> RunConfig:
    """Typed config from parsed flags; the API key falls back to $OPENAI_API_KEY."""
    return RunConfig(host=args.host.rstrip("/"), out=Path(args.out), scenario=args.scenario, users=int(args.users),
                     duration=args.duration, api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
                     buckets=tuple(args.buckets.split(",")) if isinstance(args.buckets, str) else None,
                     per_bucket=int(args.per_bucket), max_tokens=int(args.max_tokens), ignore_eos=args.ignore_eos,
                     slo_ttft_ms=_num(args.slo_ttft_ms), slo_tpot_ms=_num(args.slo_tpot_ms),
                     slo_e2e_ms=_num(args.slo_e2e_ms), metrics=args.metrics, seed=int(args.seed),
                     tokenizer=args.tokenizer, baseline=args.baseline, chunk_tokens=_int(args.chunk_tokens),
                     original_context=_int(args.original_context), sample_every=float(args.sample_every),
                     server_pid=_int(args.server_pid), windows=int(args.windows), max_failures=_int(args.max_failures),
                     max_memory_growth=_num(args.max_memory_growth), max_p95_drift=_num(args.max_p95_drift),
                     min_accuracy=_num(args.min_accuracy), fail_on_accuracy_drop=args.fail_on_accuracy_drop)


def _num(x) -> float | None:
    return None if x is None else float(x)


def _int(x) -> int | None:
    return None if x is None else int(x)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config(args)
    except ValueError as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return 2
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
