"""Retrieval drills mixed into long-context fine-tuning (`finetune train --drills SHARE`).

Plain-text fine-tuning teaches a model the statistics of long text, not to look something up far back: the
×4 runs in benchmarks/results/default-extended.md lowered perplexity at 32k and still missed every pass key
at 8k. A drill is a training window of real text in which 1 to MAX_KEYS notes of one form ("the number for
<name> is <k>") overwrite text at random places, and whose end is a question naming one of them, followed
by its answer. Only the answer is scored, so a drill's loss is the retrieval error alone, and the text the
notes sit in (and, under PoSE, the skipped position ids) sets the distances. Several notes of one form make
the model bind the asked name to its own number (RULER's multi-key needle, Hsieh et al. 2024), not just spot
the one odd sentence.

The wording and names are not those of the evaluation (finetune/passkey.py): the retrieval columns then
measure whether the skill transfers to another phrasing, not whether the model learnt the test's.

A whole micro-batch is a drill or text, drawn from (seed, micro-batch index): each micro-batch's loss is its
own mean, so a drill's few scored tokens are not drowned by a text row's thousands, and a resumed or
data-parallel run drills exactly the same micro-batches."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

import torch

from finetune.passkey import NAMES as EVAL_NAMES

IGNORE = -100  # label value the loss skips
NOTE = "\nNote: the number for {name} is {key}.\n"
QUESTION = "\nQuestion: what is the number for {name}? Answer: the number for {name} is"
ANSWER = " {key}."
NAMES = ("Alice", "Boris", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas", "Kavya",
         "Lars", "Mei", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tomas", "Uma", "Viktor",
         "Wanda", "Yusuf")
MAX_KEYS = 4
KEYS = (1, 99999)  # one to five digits: the evaluation asks for both (1..50000 and five-digit keys)
assert not set(n.lower() for n in NAMES) & set(EVAL_NAMES)


def drill(ids: torch.Tensor, notes: list[list[int]], spots: list[int], question: list[int],
          answer: list[int]) -> dict[str, torch.Tensor]:
    """A drill sample from a text window.

    ids: (T,) the window's tokens; notes[i] is written over ids[spots[i]:spots[i] + len(notes[i])] (the spots
    must not overlap each other or the tail); the window ends with question + answer. Returns input_ids (T,)
    and labels (T,), IGNORE everywhere but the answer's tokens."""
    out = ids.clone()  # (T,)
    tail = question + answer
    end = len(out) - len(tail)
    taken = sorted((s, s + len(n)) for s, n in zip(spots, notes))
    if any(a < 0 or b > end for a, b in taken) or any(b > a for (_, b), (a, _) in zip(taken, taken[1:])):
        raise ValueError(f"notes at {spots} overlap each other or the question in a window of {len(out)} tokens")
    for spot, note in zip(spots, notes):
        out[spot:spot + len(note)] = torch.tensor(note)
    out[end:] = torch.tensor(tail)
    labels = torch.full_like(out, IGNORE)  # (T,)
    labels[len(out) - len(answer):] = out[len(out) - len(answer):]
    return {"input_ids": out, "labels": labels}


def spread(room: int, lengths: list[int], rng: random.Random) -> list[int]:
    """Start of each piece (of these lengths), in their order, at random non-overlapping places in [0, room)."""
    free = room - sum(lengths)
    if free < 0:
        raise ValueError(f"a drill's notes ({sum(lengths)} tokens) do not fit beside its question in a window "
                         f"of this length; train longer windows or use --drills 0")
    gaps = sorted(rng.randint(0, free) for _ in lengths)  # (n,) free tokens before each piece
    starts, used = [], 0
    for gap, length in zip(gaps, lengths):
        starts.append(gap + used)
        used += length
    return starts


def draw(seed: int, *where: int) -> random.Random:
    """The random source of one place in the data (a micro-batch, a row of it): a pure function of its ids."""
    key = ":".join(map(str, ("drill", seed, *where)))
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


@dataclass(frozen=True)
class Drills:
    """Which micro-batches are drills, and the drill each of their rows becomes."""

    encode: Callable[[str], list[int]]
    """text -> token ids, without special tokens"""
    share: float
    """probability that a micro-batch is a drill"""
    seed: int

    def chosen(self, m: int) -> bool:
        """Whether global micro-batch m is a drill."""
        return draw(self.seed, m).random() < self.share

    def __call__(self, m: int, row: int, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Row `row` of global micro-batch m: the text sample, or the drill made of it."""
        if not self.chosen(m):
            return sample
        rng = draw(self.seed, m, row)  # each row of a micro-batch its own notes
        n = rng.randint(1, MAX_KEYS)
        names, keys = rng.sample(NAMES, n), rng.sample(range(KEYS[0], KEYS[1] + 1), n)
        asked = rng.randrange(n)
        notes = [self.encode(NOTE.format(name=name, key=key)) for name, key in zip(names, keys)]
        question = self.encode(QUESTION.format(name=names[asked]))
        answer = self.encode(ANSWER.format(key=keys[asked]))
        room = len(sample["input_ids"]) - len(question) - len(answer)
        spots = spread(room, [len(note) for note in notes], rng)
        return {**sample, **drill(sample["input_ids"], notes, spots, question, answer)}
