"""The layout's contract: `longctx` is the shared core; finetune, plugin, serve and loadtest import it and
never each other, and the load tester imports neither torch, transformers nor matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("finetune", "plugin", "serve", "loadtest")


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of `package` imports (at any depth, lazy imports included)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", PARTS + ("longctx",))
def test_parts_import_the_core_and_never_each_other(package):
    forbidden = set(PARTS) - {package} if package != "longctx" else set(PARTS)
    crossings = {module: sorted(names & forbidden) for module, names in imported_packages(package).items()
                 if names & forbidden}
    assert crossings == {}


def test_the_checker_sees_a_crossing(tmp_path, monkeypatch):
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "x.py").write_text("def f():\n    from finetune.rope import METHODS\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imported_packages("serve") == {"serve/x.py": {"finetune"}}


def test_the_load_tester_and_the_core_import_no_torch_transformers_or_matplotlib():
    code = ("import sys, loadtest, loadtest.__main__, loadtest.runner, loadtest.soak, longctx.cli, longctx.rope, "
            "longctx.corpus, longctx.hardware, longctx.default_model, longctx.home; "
            "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'finetune') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
