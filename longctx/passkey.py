"""The passkey task's answer rule, shared by `finetune eval`, the served retrieval benchmark and the load
tester: an answer is right when its first whole number is the key (not a prefix of it, not a longer one)."""

from __future__ import annotations

import re


def first_number(text: str) -> int | None:
    """The first whole number in an answer, or None."""
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None
