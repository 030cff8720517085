"""The one command-line builder: argparse from a typed, frozen dataclass.

Every command (`finetune train|merge|eval`, `python -m serve`, `python -m loadtest`) and every benchmark
script declares its settings as a dataclass whose fields carry a docstring each; this module turns that
into flags, `--help`, TOML presets and one-line errors. It is the standard library's argparse driven by
the type hints, as litgpt does with jsonargparse and tyro or simple-parsing do: those libraries add a
dependency and their own help layout for features the project does not use (nested configs, YAML), and
none reads a preset whose first line is the command that runs it.

    @dataclass(frozen=True)
    class Config:
        model: Path
        \"\"\"checkpoint folder\"\"\"
        lengths: tuple[int, ...] = (1024,)
        \"\"\"context lengths in tokens\"\"\"

    cfg = parse(Config, argv, prog="python -m tool", positional=("model",))

Types understood: str, int, float, Path, bool (--x/--no-x), Literal (choices, checked in tuples and
presets too), tuples (several values, space- or comma-separated, except paths
and fields marked `field(metadata={"split": False})`) and any of these `| None`. Bad input raises UsageError (a ValueError), which
`run` prints as `PROG: error: MESSAGE` and turns into exit status 2, as argparse does for its own errors."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import tomllib
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Callable, Sequence


class UsageError(ValueError):
    """Bad input from the user: the CLI prints the one-line message and exits with code 2."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right after each field)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for field, doc in zip(body, body[1:]):
        if isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
            docs[field.target.id] = " ".join(str(doc.value.value).split())
    return docs


def add_fields(p: argparse.ArgumentParser, cls: type, positional: Sequence[str] = (),
               skip: Sequence[str] = ()) -> None:
    """One argument per field of `cls`: `positional` names become optional positionals, the other fields
    `--flags`. Defaults stay out of the namespace (argparse.SUPPRESS), so that a preset can fill them and
    `build` knows what was given."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = default_of(f)
        help_text = docs.get(f.name, "")
        if default is not dataclasses.MISSING and "default" not in help_text:
            help_text += f" (default: {show(default)})"
        kwargs = dict(argument_type(hints[f.name]), help=help_text)
        if kwargs.get("nargs") == "+":
            kwargs["metavar"] = f.name.upper()
        if f.name in positional:  # checked in `build`, so that a preset may give it; None: absent
            p.add_argument(f.name, nargs="?", default=None, **kwargs)  # (argparse misreads SUPPRESS here)
        else:  # a required flag is marked so in the usage line; argparse then names it when absent
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
                           required=default is dataclasses.MISSING, **kwargs)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default (calling its factory), or MISSING for a required field."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def argument_type(hint: Any) -> dict[str, Any]:
    """argparse settings for a field's type: scalars, optionals, tuples, bools and Literals."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return argument_type(args[0])
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        return {"type": str, "nargs": "+"}
    if typing.get_origin(hint) is typing.Literal:
        return {"choices": list(args)}
    return {"type": hint}


def show(value: Any) -> str:
    """A default as --help shows it."""
    if isinstance(value, tuple) and value:
        return " ".join(map(str, value))
    return "none" if value is None or value == () else str(value)


def build(cls: type, given: dict[str, Any], command: str, preset: Path | None = None,
          positional: Sequence[str] = (), presets: bool = False):
    """The config: dataclass defaults, then the preset's settings, then the values given. Converts what
    argparse and TOML give (strings, lists) to the field's type; raises UsageError on bad input, including
    the ValueErrors of the config's own checks."""
    values = {**(read_preset(preset, command, cls) if preset is not None else {}), **given}
    missing = [f.name for f in dataclasses.fields(cls) if default_of(f) is dataclasses.MISSING and f.name not in values]
    if missing:
        name = missing[0].upper() if missing[0] in positional else "--" + missing[0].replace("_", "-")
        raise UsageError(f"`{command}` needs {name}" + (" (on the command line or in the preset)" if presets else ""))
    hints, split = typing.get_type_hints(cls), {f.name: f.metadata.get("split", True) for f in dataclasses.fields(cls)}
    try:
        return cls(**{name: coerce(hints[name], value, name, split[name]) for name, value in values.items()})
    except UsageError:
        raise
    except ValueError as e:  # a config's __post_init__ names the flag and the fix
        raise UsageError(str(e)) from None


def read_preset(path: Path, command: str, cls: type) -> dict[str, Any]:
    """Settings from a TOML preset, after checking that its first line names the command."""
    try:
        text = Path(path).read_text()
    except OSError:
        raise UsageError(f"cannot read preset {path}") from None
    first = text.splitlines()[0] if text else ""
    words = first.lstrip("#!").split()
    if not first.startswith("#") or not all(w in words for w in command.split()):
        raise UsageError(f"preset {path} must start with the command that runs it, e.g. "
                         f"`#!/usr/bin/env -S {command} --preset`")
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"preset {path} is not valid TOML: {e}") from None
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"preset {path}: unknown setting {unknown[0]!r} for `{command}`")
    return values  # relative paths stay relative to the working directory, as on the command line


def coerce(hint: Any, value: Any, name: str = "value", split: bool = True) -> Any:
    """A value from the command line or a preset, as the field's type: numbers from strings, paths,
    tuples from lists or comma-separated strings (not paths, and not a field declared with
    `field(metadata={"split": False})`, such as arguments passed on as they are). Raises UsageError
    naming the flag."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return coerce(args[0], value, name, split)
    if typing.get_origin(hint) is tuple:
        items = [value] if isinstance(value, (str, Path)) else list(value)
        if split and args[0] is not Path:  # 1k,4k,8k as well as 1k 4k 8k
            items = [part for item in items for part in str(item).split(",") if part]
        return tuple(coerce(args[0], item, name) for item in items)
    if typing.get_origin(hint) is typing.Literal and value not in args:  # argparse checks only a lone flag
        raise UsageError(f"--{name.replace('_', '-')}: unknown value {value!r}; choose from {', '.join(map(str, args))}")
    if hint in (int, float) and isinstance(value, str):
        try:
            return hint(value)
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise UsageError(f"--{name.replace('_', '-')} must be {kind}, not {value!r}") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return Path(value) if hint is Path else value


def parser(cls: type, prog: str, description: str | None = None, positional: Sequence[str] = (),
           skip: Sequence[str] = (), preset: bool = False) -> argparse.ArgumentParser:
    """A parser for one config class (see `add_fields`); `preset` adds --preset TOML."""
    p = argparse.ArgumentParser(prog=prog, description=description or cls.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if preset:
        add_preset_flag(p)
    add_fields(p, cls, positional, skip)
    return p


def add_preset_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", type=Path, default=argparse.SUPPRESS,
                   help="TOML file of settings (its first line is the command that runs it); flags override it")


def parse(cls: type, argv: Sequence[str] | None, prog: str, description: str | None = None,
          positional: Sequence[str] = (), skip: Sequence[str] = (), **extra: Any):
    """Parse `argv` into a `cls`; `extra` sets skipped fields. argparse's own errors exit with status 2;
    the config's raise UsageError (see `run`)."""
    given = vars(parser(cls, prog, description, positional, skip).parse_args(argv))
    return build(cls, {**given_values(given, positional), **extra}, prog, positional=positional)


def given_values(namespace: dict[str, Any], positional: Sequence[str] = ()) -> dict[str, Any]:
    """What the command line gave: an absent positional parses as None."""
    return {k: v for k, v in namespace.items() if not (k in positional and v is None)}


def parse_many(classes: Sequence[type], argv: Sequence[str] | None, prog: str, description: str | None = None,
               may_be_empty: Sequence[str] = ()) -> tuple[Any, ...]:
    """One command line for several settings classes : a flag per field of each, one instance
    of each back, in order. The tuple flags named in `may_be_empty` also take no value at all (`--measure`
    alone: the empty tuple); their values are checked against the field's Literal, if it has one. argparse's
    own errors exit with status 2; the classes' checks raise UsageError (see run)."""
    p = parser(classes[0], prog, description, skip=may_be_empty)
    for cls in classes[1:]:
        add_fields(p, cls, skip=may_be_empty)
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name in may_be_empty:
                item = typing.get_args(typing.get_type_hints(cls)[f.name])[0]
                choices = list(typing.get_args(item)) if typing.get_origin(item) is typing.Literal else None
                p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, nargs="*", choices=choices,
                               default=argparse.SUPPRESS, help=f"{field_docs(cls).get(f.name, '')} "
                               f"(default: {show(default_of(f))})")
    given = vars(p.parse_args(argv))
    return tuple(build(cls, {f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given}, prog)
                 for cls in classes)


def run(prog: str, body: Callable[[], int | None]) -> int:
    """Call `body`; bad input (UsageError) prints one line, `PROG: error: MESSAGE`, and returns 2."""
    try:
        return body() or 0
    except UsageError as e:
        return fail(prog, str(e))


def fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
