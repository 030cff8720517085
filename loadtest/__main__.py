"""python -m loadtest --host URL --scenario NAME --users N --duration 5m --out DIR [...]"""

from __future__ import annotations

import os
import shlex
import sys

from longctx import cli
from loadtest.runner import RunConfig, run

PROG = "python -m loadtest"


def parse_args(argv: list[str] | None) -> RunConfig:
    """One flag per RunConfig field (longctx/cli.py); the API key falls back to $OPENAI_API_KEY."""
    given = vars(cli.parser(RunConfig, PROG, __doc__).parse_args(argv))
    given["api_key"] = given.get("api_key") or os.environ.get("OPENAI_API_KEY") or None
    if "host" in given:
        given["host"] = given["host"].rstrip("/")
    return cli.build(RunConfig, given, PROG)


def command_line(argv: list[str]) -> str:
    """The command as a shell would take it back, with the API key's value hidden."""
    shown = ["***" if prev == "--api-key" else arg.split("=")[0] + "=***" if arg.startswith("--api-key=") else arg
             for prev, arg in zip(["", *argv], argv)]
    return shlex.join(["python", "-m", "loadtest", *shown])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.run(PROG, lambda: run(parse_args(argv), command=command_line(argv)))


if __name__ == "__main__":
    sys.exit(main())
