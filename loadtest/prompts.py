"""Token-exact passkey prompts built from real text.

Each prompt is `INTRO + filler[:a] + NEEDLE + filler[a:] + QUESTION`, where the filler is a window of the
corpus and `a` puts the needle at the asked depth. The length is measured with the served model's tokenizer
(through the `Tokenizer` seam), as the server renders the whole request (chat template included)."""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Callable

# Passkey retrieval after LongLoRA's `passkey_retrivial.py`, reworded until the default 135M instruct model
# answers it one request at a time in 8k tokens of Shakespeare (docs/loadtest.md has the measured table):
# - the prompt ends on an answer prefix the model continues, so the next tokens are the key, not a chat reply;
# - the prefix repeats the needle's lead-in word for word, and the needle states it twice before the key;
#   a lead-in longer than LongLoRA's "The pass key is", which at 8k the model continued with prose
#   ("a piece of the great...") where it continued this one with the key.
# The filler is real text instead of the repeated "The grass is green...", so the needle is not the only
# odd sentence out.
INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.\n\n")
NEEDLE = "\n\nThe secret pass key of the vault is {key}. Remember it: the secret pass key of the vault is {key}.\n\n"
QUESTION = "\n\nWhat is the secret pass key of the vault?"
ANSWER = "The secret pass key of the vault is"
"""The answer prefix: the last assistant message the model continues (chat), or the prompt's end (completions)."""
KEYS = (10000, 99999)  # five digits: every key is the same number of tokens, and none is a short common number
MAX_TRIES = 16
PLACE_TRIES = 6


def request_fields(endpoint: str, text: str) -> dict:
    """The request body fields that carry `text`: chat continues an assistant message holding the answer
    prefix (vLLM's `continue_final_message`, with `add_generation_prompt` off, as the two exclude each
    other); completions ends the prompt on it."""
    if endpoint == "chat":
        return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": ANSWER}],
                "add_generation_prompt": False, "continue_final_message": True}
    return {"prompt": f"{text}\n{ANSWER}"}


@dataclass(frozen=True)
class Tokenizer:
    """The three tokenizer calls prompt planning needs: the server's (/tokenize) or a local HF tokenizer's."""

    encode: Callable[[str], list[int]]
    """Raw text to token ids, without special tokens or template."""
    decode: Callable[[list[int]], str]
    """Token ids back to text."""
    render: Callable[[str], list[int]]
    """Token ids of the whole request the server renders around this text (`request_fields`, template, BOS)."""

    def count(self, text: str) -> int:
        return len(self.render(text))


def local_tokenizer(hf, endpoint: str) -> Tokenizer:
    """`hf` (a transformers tokenizer of the served model) rendering requests as vLLM does: the chat
    template continuing the answer prefix for chat, the tokenizer's own special tokens for completions."""
    def render(text: str) -> list[int]:
        fields = request_fields(endpoint, text)
        if endpoint == "chat":
            return list(hf.apply_chat_template(fields["messages"], continue_final_message=True, tokenize=True,
                                               return_dict=True)["input_ids"])
        return hf(fields["prompt"])["input_ids"]

    return Tokenizer(encode=lambda text: hf(text, add_special_tokens=False)["input_ids"],
                     decode=lambda ids: hf.decode(ids), render=render)


@dataclass(frozen=True)
class Prompt:
    """One planned request: its text, bucket, exact token length, and the passkey hidden in it."""

    text: str
    bucket: str
    tokens: int
    key: int
    depth: float
    """Share of the filler tokens that come before the needle."""
    key_at: int = -1
    """Token index of the key's first token in the rendered request."""
    kind: str = "spread"
    """Why the needle is where it is: spread (depths spread over the filler), chunk (across a prefill chunk
    boundary), past-original (just past the model's original context)."""

    def to_dict(self) -> dict:
        return asdict(self)


def parse_bucket(name: str) -> int:
    """'4k' -> 4096, '1500' -> 1500: the token length a bucket name stands for."""
    match = re.fullmatch(r"(\d+)([kK]?)", name.strip())
    if not match:
        raise ValueError(f"bad bucket {name!r}: use a token count like 512, 1k or 8k")
    return int(match.group(1)) * (1024 if match.group(2) else 1)


def compose(tok: Tokenizer, filler: list[int], n_filler: int, split: int, key: int) -> str:
    """The prompt text with `n_filler` filler tokens and the needle after the first `split` of them."""
    before, after = _decode(tok, filler[:split]), _decode(tok, filler[split:n_filler])
    return INTRO + before + NEEDLE.format(key=key) + after + QUESTION


def _decode(tok: Tokenizer, ids: list[int]) -> str:
    return tok.decode(ids) if ids else ""  # spares the server a call for an empty piece


def key_position(tok: Tokenizer, text: str, ids: list[int], key: int) -> int:
    """Token index of the key in the rendered request `ids`: where they first differ from the same request
    with the key's first digit changed (robust to however the tokenizer groups digits)."""
    digits = str(key)
    other = str(int(digits[0]) % 9 + 1) + digits[1:]  # 1->2 ... 9->1: still five digits
    alt = tok.render(text.replace(digits, other))
    return next(i for i, (a, b) in enumerate(zip(ids, alt)) if a != b)


def build_prompt(tok: Tokenizer, filler: list[int], length: int, depth: float, key: int, bucket: str = "",
                 before: int | None = None, kind: str = "spread") -> Prompt:
    """A prompt of exactly `length` tokens (as `tok.count` measures it) with the passkey after `depth` of
    the filler, or after exactly `before` filler tokens when given.

    Token boundaries can merge where the pieces meet, so the filler size is corrected until the measured
    count matches; a correction that cycles is broken by sliding the filler window one token."""
    n = length - tok.count(compose(tok, [], 0, 0, key))
    if n <= 0:
        raise ValueError(f"bucket {bucket or length} is too short for the passkey question ({length} tokens)")
    seen: set[int] = set()
    for _ in range(MAX_TRIES):
        if n > len(filler):
            raise ValueError(f"filler of {len(filler)} tokens is too short for {length} tokens")
        split = min(n, round(depth * n) if before is None else before)
        text = compose(tok, filler, n, split, key)
        ids = tok.render(text)
        if len(ids) == length:
            return Prompt(text=text, bucket=bucket, tokens=length, key=key, depth=split / n,
                          key_at=key_position(tok, text, ids, key), kind=kind)
        if n in seen:  # oscillating around a merge at a seam: slide the window one token to move the seams
            filler, seen = filler[1:], set()
        seen.add(n)
        n += length - len(ids)
    raise ValueError(f"could not hit exactly {length} tokens after {MAX_TRIES} tries")


def place_key(tok: Tokenizer, filler: list[int], length: int, target: int, key: int, bucket: str = "",
              kind: str = "chunk") -> Prompt:
    """A prompt of exactly `length` tokens whose key starts at token `target`, or one token off where merges
    at the seams allow no exact fit (the closest of a few corrections); ValueError when out of reach."""
    before, best = max(0, target - tok.count(INTRO)), None
    for _ in range(PLACE_TRIES):
        p = build_prompt(tok, filler, length, 0.0, key, bucket, before=before, kind=kind)
        if best is None or abs(p.key_at - target) < abs(best.key_at - target):
            best = p
        if p.key_at == target:
            break
        before = max(0, before + target - p.key_at)
    if abs(best.key_at - target) > 1:
        raise ValueError(f"cannot put the key at token {target} of a {length}-token prompt (nearest: {best.key_at}): "
                         f"the intro or the question is in the way; use a longer bucket or another boundary")
    return best


def filler_window(tok: Tokenizer, corpus: str, start: int, length: int) -> list[int]:
    """At least `length` tokens of corpus text from character `start` on (wrapping around the end)."""
    chars = length * 6 + 1000  # ~4 chars a token in English; widen until enough
    while True:
        text = (corpus[start:] + "\n" + corpus)[:chars]
        ids = tok.encode(text)
        if len(ids) >= length + 16 or chars > 2 * len(corpus):
            return ids
        chars *= 2


KEY_STRADDLE = 2  # key digits left before a chunk boundary: the rest of the key falls in the next chunk
PAST_ORIGINAL = 16  # tokens past the original context where the "past-original" key starts
MARGIN = 64  # special needles keep this many tokens from the prompt's start and end (intro, question)


def spread_depths(n: int, rng: random.Random) -> list[float]:
    """`n` depths, one uniform draw in each of n equal strata of [0, 1), shuffled: every depth bin gets its
    share even for small n (plain uniform draws can leave a bin empty)."""
    depths = [(i + rng.random()) / n for i in range(n)]
    rng.shuffle(depths)
    return depths


def special_targets(length: int, count: int, chunk_tokens: int | None = None,
                    original_context: int | None = None) -> list[tuple[str, int]]:
    """(kind, key token index) for the needles where servers break, in a prompt of `length` tokens:
    `count` across prefill chunk boundaries (multiples of `chunk_tokens`, spread over the prompt) and
    `count` just past the original context of an extended model (when the prompt reaches past it)."""
    targets = []
    if chunk_tokens:
        bounds = [b for b in range(chunk_tokens, length, chunk_tokens) if MARGIN <= b - KEY_STRADDLE <= length - MARGIN]
        picks = sorted({bounds[int((i + 0.5) * len(bounds) / count)] for i in range(count)}) if bounds else []
        targets += [("chunk", b - KEY_STRADDLE) for b in picks]
    if original_context and original_context + PAST_ORIGINAL <= length - MARGIN:
        targets += [("past-original", original_context + PAST_ORIGINAL)] * count
    return targets


def plan_prompts(tok: Tokenizer, corpus: str, buckets: list[str], per_bucket: int, shared_prefix: bool = False,
                 seed: int = 0, chunk_tokens: int | None = None, original_context: int | None = None) -> list[Prompt]:
    """`per_bucket` prompts for each bucket, each from its own corpus window unless `shared_prefix`, with
    their depths spread over the filler; then the `special_targets` needles (a quarter as many of each).

    Keys are uniform five-digit numbers (LongLoRA draws 1..50000)."""
    rng = random.Random(seed)
    prompts = []
    for bucket in buckets:
        length = parse_bucket(bucket)
        shared = filler_window(tok, corpus, rng.randrange(len(corpus)), length) if shared_prefix else None

        def window() -> list[int]:
            return shared or filler_window(tok, corpus, rng.randrange(len(corpus)), length)

        for depth in spread_depths(per_bucket, rng):
            prompts.append(build_prompt(tok, window(), length, depth, rng.randint(*KEYS), bucket))
        for kind, target in special_targets(length, max(1, per_bucket // 4), chunk_tokens, original_context):
            prompts.append(place_key(tok, window(), length, target, rng.randint(*KEYS), bucket, kind))
    return prompts

