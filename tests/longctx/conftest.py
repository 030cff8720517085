"""The trainer's fixtures serve the shared package's tests too: the tiny Llama, a text corpus and a
private LONGCTX_HOME per test."""

from tests.finetune.conftest import corpus, home, tiny_model  # noqa: F401 (pytest finds fixtures by name)
