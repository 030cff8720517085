"""Every benchmark script's command line comes from its settings dataclasses (longctx/cli.py): `--help`
lists every field, each with its docstring, and bad values exit with status 2 and one `PROG: error:` line."""

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from longctx import cli

REPO = Path(__file__).resolve().parents[2]
# script: (its settings classes, positional fields, a non-number where a number goes, a value its checks refuse)
SCRIPTS = {
    "chunked_prefill": (("Settings",), (), ["--users", "five"], ["--users", "1"]),
    "efficiency": (("Settings",), (), ["--repeats", "x"], ["--repeats", "-1"]),
    "extend_default": (("Settings", "Invocation"), (), ["--factor", "x"], ["--keys", "0"]),
    "faults": (("Settings",), (), ["--clients", "x"], ["--faults", "crash"]),
    "hf_server": (("Settings",), ("model",), ["--port", "x"], ["--port", "99999"]),
    "passkey_baseline": (("Settings",), (), ["--host", "h", "--per-bucket", "x"], ["--host", "h", "--per-bucket", "0"]),
    "passkey_reach": (("Settings",), (), ["--host", "h", "--trials", "x"], ["--host", "h", "--depth-to", "2"]),
    "pose_step_time": (("Settings",), (), ["--windows", "4k"], ["--ropes", "ntk"]),
    "replicate": (("Settings", "Invocation"), (), ["--steps", "x"], ["--passkey-drill", "2"]),
    "retrieval": (("Invocation", "Retrieval"), (), ["--url", "u", "--model", "m", "--keys", "x"],
                  ["--url", "u", "--model", "m", "--keys", "0"]),
    "serve_latency": (("Settings",), (), ["--max-tokens", "x"], ["--lengths", "1024,4k"]),
    "serving_baseline": (("Settings",), (), ["--port-patience", "soon"], ["--profiles", "fast"]),
    "soak": (("Settings",), (), ["--users", "x"], ["--duration", "ten minutes"]),
}


def test_every_script_with_a_command_line_is_listed():
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py") if "def main(" in p.read_text()}
    assert scripts == set(SCRIPTS)


def settings_classes(name: str) -> list[type]:
    module = importlib.import_module(f"benchmarks.{name}")
    return [getattr(module, c) for c in SCRIPTS[name][0]]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_lists_every_field_with_its_docstring(name):
    """As the script runs from the repository root: `python benchmarks/NAME.py --help`."""
    done = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    usage = " ".join(done.stdout.split())  # argparse wraps long help lines
    for cls in settings_classes(name):
        docs = cli.field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
            if f.name in SCRIPTS[name][1]:
                assert f"[{f.name}]" in usage
            else:
                assert f"--{f.name.replace('_', '-')} " in usage, f.name
            assert " ".join(docs[f.name].split()[:4]) in usage  # its docstring is its help


def run_main(name: str, argv: list[str]) -> int:
    main = importlib.import_module(f"benchmarks.{name}").main
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_bad_value_exits_2_with_one_error_line(name, capsys):
    prog = importlib.import_module(f"benchmarks.{name}").PROG
    not_a_number, refused = SCRIPTS[name][2:]
    assert run_main(name, not_a_number) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{prog}: error: ") and sum("error:" in line for line in err) == 1, err
    assert run_main(name, refused) == 2  # the settings' own checks: that line alone, naming the flag
    err = capsys.readouterr().err.strip().splitlines()
    flag = [a for a in refused if a.startswith("--")][-1]
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: ") and flag in err[0], err
