"""Token-exact passkey prompts built from real text.

Each prompt is `INTRO + filler[:a] + NEEDLE + filler[a:] + QUESTION`, where the filler is a window of the
corpus and `a` puts the needle at the asked depth. The length is measured with the served model's tokenizer
(through the `Tokenizer` seam), as the server renders the whole request (chat template included)."""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Callable

# Passkey retrieval wording after LongLoRA's `passkey_retrivial.py`; the filler is real text instead of
# the repeated "The grass is green..." so attention cannot find the needle as the only odd sentence out.
INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.\n\n")
NEEDLE = "\n\nThe pass key is {key}. Remember it. {key} is the pass key.\n\n"
QUESTION = "\n\nWhat is the pass key? The pass key is"
MAX_TRIES = 16


@dataclass(frozen=True)
class Tokenizer:
    """The three tokenizer calls prompt planning needs: the server's (/tokenize) or a local HF tokenizer's."""

    encode: Callable[[str], list[int]]
    """Raw text to token ids, without special tokens or template."""
    decode: Callable[[list[int]], str]
    """Token ids back to text."""
    count: Callable[[str], int]
    """Token count of the whole request the server renders for this text (template, BOS included)."""


def local_tokenizer(hf, endpoint: str) -> Tokenizer:
    """`hf` (a transformers tokenizer of the served model) rendering requests as vLLM does: the chat
    template with the generation prompt for chat, the tokenizer's own special tokens for completions."""
    def count(text: str) -> int:
        if endpoint == "chat":
            return len(hf.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])
        return len(hf(text)["input_ids"])

    return Tokenizer(encode=lambda text: hf(text, add_special_tokens=False)["input_ids"],
                     decode=lambda ids: hf.decode(ids), count=count)


@dataclass(frozen=True)
class Prompt:
    """One planned request: its text, bucket, exact token length, and the passkey hidden in it."""

    text: str
    bucket: str
    tokens: int
    key: int
    depth: float
    """Share of the filler tokens that come before the needle."""

    def to_dict(self) -> dict:
        return asdict(self)


def parse_bucket(name: str) -> int:
    """'4k' -> 4096, '1500' -> 1500: the token length a bucket name stands for."""
    match = re.fullmatch(r"(\d+)([kK]?)", name.strip())
    if not match:
        raise ValueError(f"bad bucket {name!r}: use a token count like 512, 1k or 8k")
    return int(match.group(1)) * (1024 if match.group(2) else 1)


def compose(tok: Tokenizer, filler: list[int], n_filler: int, depth: float, key: int) -> str:
    """The prompt text with `n_filler` filler tokens and the needle after `depth` of them."""
    split = round(depth * n_filler)
    before, after = _decode(tok, filler[:split]), _decode(tok, filler[split:n_filler])
    return INTRO + before + NEEDLE.format(key=key) + after + QUESTION


def _decode(tok: Tokenizer, ids: list[int]) -> str:
    return tok.decode(ids) if ids else ""  # spares the server a call for an empty piece


def build_prompt(tok: Tokenizer, filler: list[int], length: int, depth: float, key: int, bucket: str = "") -> Prompt:
    """A prompt of exactly `length` tokens (as `tok.count` measures it) with the passkey at `depth`.

    Token boundaries can merge where the pieces meet, so the filler size is corrected until the measured
    count matches; a correction that cycles is broken by sliding the filler window one token."""
    n = length - tok.count(compose(tok, [], 0, depth, key))
    if n <= 0:
        raise ValueError(f"bucket {bucket or length} is too short for the passkey question ({length} tokens)")
    seen: set[int] = set()
    for _ in range(MAX_TRIES):
        if n > len(filler):
            raise ValueError(f"filler of {len(filler)} tokens is too short for {length} tokens")
        text = compose(tok, filler, n, depth, key)
        got = tok.count(text)
        if got == length:
            return Prompt(text=text, bucket=bucket, tokens=length, key=key, depth=depth)
        if n in seen:  # oscillating around a merge at a seam: slide the window one token to move the seams
            filler, seen = filler[1:], set()
        seen.add(n)
        n += length - got
    raise ValueError(f"could not hit exactly {length} tokens after {MAX_TRIES} tries")


def filler_window(tok: Tokenizer, corpus: str, start: int, length: int) -> list[int]:
    """At least `length` tokens of corpus text from character `start` on (wrapping around the end)."""
    chars = length * 6 + 1000  # ~4 chars a token in English; widen until enough
    while True:
        text = (corpus[start:] + "\n" + corpus)[:chars]
        ids = tok.encode(text)
        if len(ids) >= length + 16 or chars > 2 * len(corpus):
            return ids
        chars *= 2


def plan_prompts(tok: Tokenizer, corpus: str, buckets: list[str], per_bucket: int, shared_prefix: bool = False,
                 seed: int = 0) -> list[Prompt]:
    """`per_bucket` prompts for each bucket, each from its own corpus window unless `shared_prefix`.

    Keys are uniform in 1..50000 and depths uniform in [0, 1], as in LongLoRA's passkey test."""
    rng = random.Random(seed)
    prompts = []
    for bucket in buckets:
        length = parse_bucket(bucket)
        shared = filler_window(tok, corpus, rng.randrange(len(corpus)), length) if shared_prefix else None
        for _ in range(per_bucket):
            filler = shared or filler_window(tok, corpus, rng.randrange(len(corpus)), length)
            prompts.append(build_prompt(tok, filler, length, rng.random(), rng.randint(1, 50000), bucket))
    return prompts


def passkey_answer(text: str) -> int | None:
    """The first whole number in a model's answer, or None."""
    match = re.search(r"\d+", text)
    return int(match.group()) if match else None
