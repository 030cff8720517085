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
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable

from finetune.config import EvalConfig, MergeConfig, TrainConfig, UsageError, field_docs
from finetune.hardware import DtypeError
from finetune.rope import RopeConfigError

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
    print(f"finetune: error: {message}", file=sys.stderr)
    return 2


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


# ---------------------------------------------------------------- argparse from dataclasses


def parser() -> argparse.ArgumentParser:
    """`finetune` with one subcommand per config dataclass."""
    top = argparse.ArgumentParser(prog="finetune", description="LongLoRA context extension for RoPE models.")
    sub = top.add_subparsers(dest="command", required=True)
    for name, cls in COMMANDS.items():
        p = sub.add_parser(name, help=cls.__doc__, description=cls.__doc__)
        p.add_argument("--preset", type=Path, default=argparse.SUPPRESS,
                       help="TOML file of settings (its first line is the command that runs it); flags override it")
        add_fields(p, cls)
    return top


def add_fields(p: argparse.ArgumentParser, cls: type) -> None:
    """One argument per field; defaults are left out of the namespace so a preset can fill them."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        default = f.default
        help_text = docs.get(f.name, "")
        if default is not dataclasses.MISSING and "default" not in help_text:
            help_text += f" (default: {show(default)})"
        kwargs = dict(argument_type(hints[f.name]), help=help_text)
        if default is dataclasses.MISSING:  # a required field is positional (or comes from the preset)
            p.add_argument(f.name, nargs="?", default=None, **kwargs)  # (SUPPRESS misbehaves for positionals)
        else:
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS, **kwargs)


def argument_type(hint: Any) -> dict[str, Any]:
    """argparse settings for a field's type: scalars, optionals, tuples, bools and Literals."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return argument_type(args[0])
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        return {"type": args[0], "nargs": "+", "metavar": args[0].__name__.upper()}
    if typing.get_origin(hint) is typing.Literal:
        return {"choices": list(args)}
    return {"type": hint}


def show(value: Any) -> str:
    """A default as --help shows it."""
    return "none" if value is None or value == () else str(value)


# ---------------------------------------------------------------- presets


def make_config(cls: type, given: dict[str, Any]):
    """Dataclass defaults, then the preset, then the flags given."""
    given = {k: v for k, v in given.items() if v is not None}  # an absent positional is None
    command = given.pop("command")
    preset = read_preset(given.pop("preset"), command, cls) if "preset" in given else {}
    values = {**preset, **given}
    missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        raise UsageError(f"`finetune {command}` needs {missing[0].upper()} (on the command line or in the preset)")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():  # TOML gives strings and lists where the config wants paths/tuples
        values[name] = coerce(hints[name], value)
    return cls(**values)


def read_preset(path: Path, command: str, cls: type) -> dict[str, Any]:
    """Settings from a TOML preset, after checking its first line names `finetune <command>`."""
    try:
        text = Path(path).read_text()
    except OSError:
        raise UsageError(f"cannot read preset {path}") from None
    first = text.splitlines()[0] if text else ""
    words = first.lstrip("#!").split()
    if not first.startswith("#") or "finetune" not in words or command not in words:
        raise UsageError(f"preset {path} must start with the command that runs it, e.g. "
                         f"`#!/usr/bin/env -S finetune {command} --preset`")
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"preset {path} is not valid TOML: {e}") from None
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"preset {path}: unknown setting {unknown[0]!r} for `finetune {command}`")
    return values  # relative paths stay relative to the working directory, as on the command line


def coerce(hint: Any, value: Any) -> Any:
    """Paths from strings and tuples from lists, so a preset and the flags give equal configs."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType):
        return coerce(args[0], value)
    if typing.get_origin(hint) is tuple:
        return tuple(coerce(args[0], v) for v in value)
    return Path(value) if hint is Path else value


if __name__ == "__main__":
    sys.exit(main())
