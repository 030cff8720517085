"""The one command-line builder: flags, help and errors from a typed frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from longctx import cli


@dataclass(frozen=True)
class Demo:
    model: Path
    """checkpoint folder"""
    lengths: tuple[int, ...] = (1024, 2048)
    """context lengths in tokens"""
    data: tuple[Path, ...] = ()
    """text files"""
    mode: Literal["fast", "exact"] = "fast"
    """how to measure"""
    factor: float | None = None
    """extension factor"""
    eager: bool = False
    """skip compilation"""
    modes: tuple[Literal["fast", "exact"], ...] = ()
    """several of them"""

    def __post_init__(self) -> None:
        if self.factor is not None and self.factor <= 1:
            raise ValueError("--factor must be above 1")


@dataclass(frozen=True)
class Extra:
    out: Path = Path("out")
    """results folder"""


def parse(*argv: str) -> Demo:
    return cli.parse(Demo, list(argv), "demo", positional=("model",))


def test_types_come_from_the_hints():
    cfg = parse("m", "--lengths", "4096", "8192", "--data", "a,b.txt", "--mode", "exact",
                "--factor", "4", "--eager")
    assert cfg == Demo(Path("m"), (4096, 8192), (Path("a,b.txt"),), "exact", 4.0, True)
    assert parse("m", "--lengths", "1,2,3").lengths == (1, 2, 3)  # comma-separated too (paths excepted)
    assert parse("m") == Demo(Path("m")) and not parse("m", "--no-eager").eager


def test_help_lists_every_field_with_its_docstring_and_default(capsys):
    with pytest.raises(SystemExit) as done:
        parse("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    for text in ("checkpoint folder", "context lengths in tokens (default: 1024 2048)", "{fast,exact}",
                 "--eager, --no-eager", "extension factor (default: none)"):
        assert text in out


@pytest.mark.parametrize("argv, says", [(["m", "--lengths", "x"], "--lengths must be an integer, not 'x'"),
                                        (["m", "--factor", "0.5"], "--factor must be above 1"),
                                        (["m", "--modes", "fast,slow"],
                                         "--modes: unknown value 'slow'; choose from fast, exact"),
                                        ([], "`demo` needs MODEL")])
def test_bad_values_are_one_line_and_exit_2(argv, says, capsys):
    assert cli.run("demo", lambda: parse(*argv) and 0) == 2
    err = capsys.readouterr().err
    assert err == f"demo: error: {says}\n"


def test_argparse_own_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        parse("m", "--mode", "slow")
    assert done.value.code == 2 and "invalid choice: 'slow'" in capsys.readouterr().err


def test_a_preset_fills_what_the_command_line_leaves(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text("#!/usr/bin/env -S demo run --preset\nmodel = \"m\"\nlengths = [7, 8]\nmode = \"exact\"\n")
    cfg = cli.build(Demo, {"mode": "fast"}, "demo run", preset, positional=("model",), presets=True)
    assert cfg == Demo(Path("m"), (7, 8), (), "fast")
    preset.write_text("#!/usr/bin/env -S other --preset\nmodel = \"m\"\n")
    with pytest.raises(cli.UsageError, match="must start with the command that runs it"):
        cli.build(Demo, {}, "demo run", preset, presets=True)
    preset.write_text("#!/usr/bin/env -S demo run --preset\nmodle = \"m\"\n")
    with pytest.raises(cli.UsageError, match="unknown setting 'modle'"):
        cli.build(Demo, {}, "demo run", preset, presets=True)


def test_several_classes_share_one_command_line():
    demo, extra = cli.parse_many((Demo, Extra), ["--model", "m", "--out", "r", "--lengths", "5"], "demo")
    assert demo == Demo(Path("m"), (5,)) and extra == Extra(Path("r"))
