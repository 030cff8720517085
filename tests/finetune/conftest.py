"""Shared fixtures: one tiny random Llama (context 64) and a private LONGCTX_HOME per test."""

from __future__ import annotations

import pytest

from tests.tiny import make_tiny_checkpoint, training_text

CONTEXT = 64  # the tiny model's original context; tests train at 2x or 4x it


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), context=CONTEXT)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGCTX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def corpus(tmp_path):
    """A few text files, repeated so they pack into several 256-token blocks."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(training_text()):
        (folder / f"doc{i}.txt").write_text(text * 3)
    return folder
