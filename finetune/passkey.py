"""Passkey retrieval, LongLoRA's protocol (`passkey_retrivial.py`, after Mohtashami & Jaggi 2023).

A task line, the same filler sentences repeated, "The pass key is K. Remember it. K is the pass key."
at some depth, then "What is the pass key? The pass key is"; K uniform in 1..50000; greedy decoding;
correct only when the answer is exactly K. Prompts are built from token ids so that a prompt has exactly
the asked length and the needle sits exactly at the asked depth. Below it, the harder multi-key needle
(several keys of one form in real text, one of them asked for). Pure functions: no torch, no HF."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from longctx.passkey import first_number

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


def is_correct(answer: str, key: int) -> bool:
    """Exact match: the first number of the answer is the key (not a prefix of it, not a longer number)."""
    return first_number(answer) == key


def plan_trials(lengths: tuple[int, ...], depth_bins: int, trials: int, seed: int) -> list[Trial]:
    """`trials` per length and depth bin; each draws its depth uniformly inside its bin and a key in 1..50000."""
    rng = random.Random(seed)
    return [Trial(length, b, depth, rng.randint(1, MAX_KEY))
            for length, b, depth in cells(lengths, depth_bins, trials, rng)]


def cells(lengths: tuple[int, ...], depth_bins: int, trials: int, rng: random.Random):
    """(length, depth bin, depth) for `trials` trials per length and bin, the depth drawn inside its bin;
    the caller draws the rest of each trial from the same `rng` after each one, so plans stay seeded."""
    for length in lengths:
        for b in range(depth_bins):
            for _ in range(trials):
                yield length, b, (b + rng.random()) / depth_bins


def accuracy_grid(trials: list[Trial], correct: list[bool], lengths: tuple[int, ...], depth_bins: int) -> list[list[float]]:
    """Share correct, one row per length, one column per depth bin."""
    hits = {(length, b): [] for length in lengths for b in range(depth_bins)}
    for trial, ok in zip(trials, correct, strict=True):
        hits[(trial.length, trial.depth_bin)].append(ok)
    return [[sum(h) / len(h) if (h := hits[(length, b)]) else float("nan") for b in range(depth_bins)]
            for length in lengths]


# ---------------------------------------------------------------- multi-key needle
# RULER's multi-key needle-in-a-haystack (Hsieh et al. 2024, "RULER: What's the Real Context Size of Your
# Long-Context Language Models?", §3.1 MK-NIAH): several needles of one form hide in the text, each binding
# a different name to a number, and the question names one of them. A model that only spots "the odd
# sentence out" scores 1/K; it has to bind the asked name to its own number.
#
# The haystack is real text (the caller's token ids), not the repeated filler above: between identical
# filler sentences every needle is the only sentence that differs, so retrieval reduces to novelty
# detection; RULER likewise draws its haystack from real essays. The single key keeps LongLoRA's filler so
# its figures stay comparable with the paper's.

MULTI_TASK = ("There are several pass keys hidden inside a lot of irrelevant text, each for a different name. "
              "Find them and memorize them. I will quiz you about one of them.")
MULTI_NEEDLE = "\nThe pass key for {name} is {key}. Remember it. {key} is the pass key for {name}.\n"
MULTI_QUESTION = "\nWhat is the pass key for {name}? The pass key for {name} is"
NAMES = ("apple", "river", "violin", "lemon", "tiger", "garden", "candle", "mountain", "pencil", "ocean",
         "window", "carpet", "falcon", "silver", "meadow", "harbor", "lantern", "orchid", "pepper", "thunder",
         "copper", "island", "saddle", "walnut")
MULTI_KEYS = (10000, 99999)  # five digits each: no key stands out by its length


@dataclass(frozen=True)
class MultikeyTrial:
    length: int
    depth_bin: int
    depth: float
    """depth of the asked needle (share of the filler tokens before it)"""
    names: tuple[str, ...]
    """one name per needle; the first is the one the question asks for"""
    keys: tuple[int, ...]
    """the needles' keys, distinct, in the order of `names`"""
    offset: float
    """where in the haystack text the filler starts, as a share of its length"""

    @property
    def key(self) -> int:
        """The asked key."""
        return self.keys[0]


@dataclass(frozen=True)
class MultikeyPrompt:
    ids: list[int]
    depths: tuple[float, ...]
    """each needle's depth, in the order of the trial's names"""
    needles_at: tuple[int, ...]
    """token index where each needle starts, in the order of the trial's names"""


def needle_depths(depth: float, n_keys: int) -> list[float]:
    """The asked needle at `depth`; the n_keys - 1 distractors spread evenly, at the centres of equal bins."""
    return [depth] + [(j + 0.5) / (n_keys - 1) for j in range(n_keys - 1)]


def haystack(text: list[int], start: int, n: int) -> list[int]:
    """`n` tokens of `text` from `start` on, wrapping around its end as often as needed."""
    if not text:
        raise ValueError("the haystack text is empty")
    start %= len(text)
    out = text[start:start + n]
    while len(out) < n:
        out += text[:n - len(out)]
    return out


def multikey_prompt(encode: Encode, text: list[int], trial: MultikeyTrial) -> MultikeyPrompt:
    """A prompt of exactly `trial.length` tokens: the task, `text` (token ids) with every needle at its
    depth, and the question naming the first name. Pieces are tokenized apart, as in `passkey_prompt`."""
    task, question = encode(MULTI_TASK), encode(MULTI_QUESTION.format(name=trial.names[0]))
    needles = [encode(MULTI_NEEDLE.format(name=n, key=k)) for n, k in zip(trial.names, trial.keys, strict=True)]
    n_filler = trial.length - len(task) - sum(map(len, needles)) - len(question)
    if n_filler < 0:
        raise ValueError(f"{trial.length} tokens cannot hold {len(needles)} needles and the question "
                         f"({trial.length - n_filler} tokens without filler)")
    filler = haystack(text, round(trial.offset * len(text)), n_filler)
    depths = needle_depths(trial.depth, len(needles))
    splits = [round(d * n_filler) for d in depths]
    ids, at, done = list(task), [0] * len(needles), 0
    for i in sorted(range(len(needles)), key=lambda i: (splits[i], i)):
        ids += filler[done:splits[i]]
        done = splits[i]
        at[i] = len(ids)
        ids += needles[i]
    ids += filler[done:] + question
    return MultikeyPrompt(ids=ids, depths=tuple(depths), needles_at=tuple(at))


def multikey_task_tokens(encode: Encode, n_keys: int) -> int:
    """Tokens of a multi-key prompt without filler, with the longest names: its shortest possible length."""
    needle = sorted(len(encode(MULTI_NEEDLE.format(name=n, key=MULTI_KEYS[1]))) for n in NAMES)
    question = max(len(encode(MULTI_QUESTION.format(name=n))) for n in NAMES)
    return len(encode(MULTI_TASK)) + sum(needle[-n_keys:]) + question


def plan_multikey_trials(lengths: tuple[int, ...], depth_bins: int, trials: int, n_keys: int,
                         seed: int) -> list[MultikeyTrial]:
    """`trials` per length and depth bin, each with `n_keys` distinct names and keys and its own haystack."""
    if not 2 <= n_keys <= len(NAMES):
        raise ValueError(f"a multi-key prompt takes 2 to {len(NAMES)} keys (got {n_keys})")
    rng = random.Random(seed)
    plan = []
    for length, b, depth in cells(lengths, depth_bins, trials, rng):
        names = tuple(rng.sample(NAMES, n_keys))
        keys = tuple(rng.sample(range(MULTI_KEYS[0], MULTI_KEYS[1] + 1), n_keys))
        plan.append(MultikeyTrial(length, b, depth, names, keys, rng.random()))
    return plan


def grade_multikey(answer: str, trial: MultikeyTrial) -> dict:
    """Exact match on the asked key; `distractor` says the answer was another needle's key instead."""
    got = first_number(answer)
    return {"correct": got == trial.key, "distractor": got in trial.keys[1:]}


def multikey_record(trial: MultikeyTrial, answer: str) -> dict:
    """A graded multi-key answer as results record it (eval.json and the served benchmark alike)."""
    return {"name": trial.names[0], "key": trial.key, "distractors": dict(zip(trial.names[1:], trial.keys[1:])),
            "answer": answer, **grade_multikey(answer, trial)}
