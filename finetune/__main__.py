"""`finetune train ...`, `finetune merge RUN --out DIR` and `finetune eval MODEL` (also `python -m finetune`).

Flags come from the config dataclasses (their field docstrings are the help). Settings may also come
from a TOML preset whose first line is the command that runs it, e.g.

    #!/usr/bin/env -S finetune train --preset
    target_length = 16384
    max_steps = 20

Flags given on the command line override the preset. Bad input prints one line and exits with code 2."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
from typing import Any, Callable

from finetune.config import EvalConfig, MergeConfig, TrainConfig
from longctx import cli
from longctx.cli import UsageError
from longctx.hardware import DtypeError
from longctx.rope import RopeConfigError

COMMANDS: dict[str, type] = {"train": TrainConfig, "merge": MergeConfig, "eval": EvalConfig}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def main(argv: list[str] | None = None) -> int:
    """Parse, build the config, run the command; bad input exits with status 2 and one line."""
    args = parser().parse_args(argv)
    try:
        cfg = make_config(COMMANDS[args.command], vars(args))
        runner(args.command)(cfg)
    except (UsageError, RopeConfigError, DtypeError) as e:
        return fail(str(e))
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        return fail(f"disk full writing {e.filename or 'the output'}; the unfinished folder was removed, "
                    f"free space and run again")
    return 0


def fail(message: str) -> int:
    """Print the one-line error; return the exit status for bad input."""
    return cli.fail("finetune", message)


def runner(command: str) -> Callable[[Any], Any]:
    """The command's function, imported only when used (torch and transformers are slow to import)."""
    if command == "train":
        from finetune import distributed
        from finetune.train import train

        def train_and_leave(cfg: Any) -> Any:
            """Train, then leave the process group (under torchrun)."""
            try:
                return train(cfg)
            finally:
                distributed.finish(distributed.init())

        return train_and_leave
    if command == "eval":
        from finetune.eval import evaluate

        return evaluate
    from finetune.merge import merge

    return merge


def parser() -> argparse.ArgumentParser:
    """`finetune` with one subcommand per config dataclass (flags built by longctx/cli.py)."""
    top = argparse.ArgumentParser(prog="finetune", description="LongLoRA context extension for RoPE models.")
    sub = top.add_subparsers(dest="command", required=True)
    for name, cls in COMMANDS.items():
        p = sub.add_parser(name, help=cls.__doc__, description=cls.__doc__)
        cli.add_preset_flag(p)
        cli.add_fields(p, cls, positional=required(cls))  # a required field may come from the preset instead
    return top


def make_config(cls: type, given: dict[str, Any]):
    """Dataclass defaults, then the preset, then the flags given."""
    given = cli.given_values(given, required(cls))
    command = f"finetune {given.pop('command')}"
    return cli.build(cls, given, command, given.pop("preset", None), positional=required(cls), presets=True)


def required(cls: type) -> list[str]:
    """Fields without a default: positionals, which a preset may give instead."""
    return [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]


if __name__ == "__main__":
    sys.exit(main())
