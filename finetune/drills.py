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
data-parallel run drills exactly the same micro-batches.

A drill runs with full attention (`s2attn.full_attention`): under S²-Attn the question at the window's end
would see only its own quarter of it, and a note elsewhere would be out of reach. Full attention costs more
at length (2.3x an S² step at 8k on this project's CPU, benchmarks/results/efficiency-bf16-8k-full.md), so a
drill may be shorter than the text windows (`--drill-window`): its position ids skip the way PoSE's do
(finetune/pose.py), so its distances still reach the target length."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

import torch

from finetune import pose
from finetune.loss import IGNORE_INDEX as IGNORE

NOTE = "\nNote: the number for {name} is {key}.\n"
QUESTION = "\nQuestion: what is the number for {name}? Answer: the number for {name} is"
ANSWER = " {key}."
# none of them is a name the evaluation asks for (finetune/passkey.py NAMES; tested)
NAMES = ("Alice", "Boris", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas", "Kavya",
         "Lars", "Mei", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tomas", "Uma", "Viktor",
         "Wanda", "Yusuf")
MAX_KEYS = 4
KEYS = (1, 99999)  # one to five digits: the evaluation asks for both (1..50000 and five-digit keys)


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
                         f"of {room} tokens; give a longer --drill-window")
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
    window: int
    """tokens of a drill: the first `window` tokens of the text sample it is made of"""
    target: int
    """the context trained for: a drill's position ids skip, as PoSE's do, so the question's distance to a
    note in the first chunk reaches up to target - 1 (consecutive when window == target)"""

    def chosen(self, m: int) -> bool:
        """Whether global micro-batch m is a drill."""
        return self.share > 0 and draw(self.seed, m).random() < self.share

    def __call__(self, m: int, row: int, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The drill that row `row` of global micro-batch m makes of its text sample: input_ids, labels and
        position_ids, each (window,)."""
        rng = draw(self.seed, m, row)  # each row of a micro-batch its own notes
        n = rng.randint(1, MAX_KEYS)
        names, keys = rng.sample(NAMES, n), rng.sample(range(KEYS[0], KEYS[1] + 1), n)
        asked = rng.randrange(n)
        notes = [self.encode(NOTE.format(name=name, key=key)) for name, key in zip(names, keys)]
        question = self.encode(QUESTION.format(name=names[asked]))
        answer = self.encode(ANSWER.format(key=keys[asked]))
        spots = spread(self.window - len(question) - len(answer), [len(note) for note in notes], rng)
        text = sample["input_ids"][: self.window]  # (window,)
        if len(text) < self.window:
            raise ValueError(f"a drill takes {self.window} tokens of text; this sample has {len(text)}")
        positions = pose.skipped_positions(self.window, self.target, torch.Generator().manual_seed(rng.getrandbits(32)))
        return {**drill(text, notes, spots, question, answer), "position_ids": positions}
