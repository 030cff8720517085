"""Passkey retrieval, LongLoRA's protocol (`passkey_retrivial.py`, after Mohtashami & Jaggi 2023).

A task line, the same filler sentences repeated, "The pass key is K. Remember it. K is the pass key."
at some depth, then "What is the pass key? The pass key is"; K uniform in 1..50000; greedy decoding;
correct only when the answer is exactly K. Prompts are built from token ids so that a prompt has exactly
the asked length and the needle sits exactly at the asked depth. Pure functions: no torch, no HF."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "\nWhat is the pass key? The pass key is"
MAX_KEY = 50000

Encode = Callable[[str], list[int]]  # text to token ids, no special tokens


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]
    key: int
    depth: float
    """share of the filler tokens that come before the needle"""
    needle_at: int
    """token index where the needle starts"""


@dataclass(frozen=True)
class Trial:
    length: int
    depth_bin: int
    depth: float
    key: int


def passkey_prompt(encode: Encode, length: int, depth: float, key: int) -> PasskeyPrompt:
    """A prompt of exactly `length` tokens with the needle after `depth` of the filler tokens.

    Pieces are tokenized apart and concatenated, so lengths and positions are exact (the text of a seam
    may tokenize differently when re-encoded as a whole; the model sees these ids, not the text)."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth {depth} is outside [0, 1]")
    task, needle, question = encode(TASK), encode(NEEDLE.format(key=key)), encode(QUESTION)
    n_filler = length - len(task) - len(needle) - len(question)
    if n_filler < 0:
        raise ValueError(f"{length} tokens cannot hold the passkey task ({length - n_filler} tokens without filler)")
    unit = encode(FILLER)
    filler = (unit * (n_filler // len(unit) + 1))[:n_filler]
    split = round(depth * n_filler)
    ids = task + filler[:split] + needle + filler[split:] + question
    return PasskeyPrompt(ids=ids, key=key, depth=depth, needle_at=len(task) + split)


def task_tokens(encode: Encode) -> int:
    """Tokens of a prompt without filler (with the longest key): the shortest length a prompt can have."""
    return len(encode(TASK)) + len(encode(NEEDLE.format(key=MAX_KEY))) + len(encode(QUESTION))


def answer_tokens(encode: Encode, key: int) -> int:
    """New tokens to generate: the key as the model would write it, plus one to see whether it stops there."""
    return len(encode(f" {key}")) + 1


def first_number(text: str) -> int | None:
    """The first whole number in an answer, or None."""
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None


def is_correct(answer: str, key: int) -> bool:
    """Exact match: the first number of the answer is the key (not a prefix of it, not a longer number)."""
    return first_number(answer) == key


def plan_trials(lengths: tuple[int, ...], depth_bins: int, trials: int, seed: int) -> list[Trial]:
    """`trials` per length and depth bin; each draws its depth uniformly inside its bin and a key in 1..50000."""
    rng = random.Random(seed)
    plan = []
    for length in lengths:
        for b in range(depth_bins):
            for _ in range(trials):
                depth = (b + rng.random()) / depth_bins
                plan.append(Trial(length, b, depth, rng.randint(1, MAX_KEY)))
    return plan


def accuracy_grid(trials: list[Trial], correct: list[bool], lengths: tuple[int, ...], depth_bins: int) -> list[list[float]]:
    """Share correct, one row per length, one column per depth bin."""
    hits = {(length, b): [] for length in lengths for b in range(depth_bins)}
    for trial, ok in zip(trials, correct, strict=True):
        hits[(trial.length, trial.depth_bin)].append(ok)
    return [[sum(h) / len(h) if (h := hits[(length, b)]) else float("nan") for b in range(depth_bins)]
            for length in lengths]
