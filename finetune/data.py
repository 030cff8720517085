"""Training data: packed pretraining blocks (LongLoRA §4.1) or LongAlpaca SFT samples, and a resumable
stream of micro-batches.

Pretraining: documents are tokenized, joined with EOS and cut into blocks of exactly the target length
(the remainder is dropped); the last blocks are held out. The tokenized corpus is cached on disk, keyed
by the files, the tokenizer and the block length."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from finetune.config import UsageError
from finetune.drills import Drills
from longctx.home import atomic_dir, longctx_home

IGNORE = -100  # label value the HF loss skips
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
CACHE_VERSION = 1


class DataError(UsageError):
    """The data cannot give what training needs (missing, empty, shorter than one block)."""


@dataclass(frozen=True)
class Dataset:
    """Training and held-out samples; each sample is {"input_ids": (T,), "labels": (T,)} as int64."""

    train: list[dict[str, torch.Tensor]]
    heldout: list[dict[str, torch.Tensor]]
    origin: dict[str, Any] = field(default_factory=dict)
    """what the samples were made of, for run.json: the tokens' digest and the corpora's package versions"""


# ---------------------------------------------------------------- reading text


def text_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders into their text/JSONL files (sorted); refuse paths that do not exist."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"data path {path} does not exist")
    if not files:
        raise DataError("no data files found (looked for " + ", ".join(TEXT_SUFFIXES) + ")")
    return files


def read_documents(path: Path) -> list[str]:
    """A text file is one document; a JSONL file gives one per line, from its `text` field."""
    if path.suffix != ".jsonl":
        return [path.read_text(encoding="utf-8", errors="replace")]
    docs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                docs.append(json.loads(line)["text"])
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}:{number} is not a JSON object with a `text` field") from None
    return docs


# ---------------------------------------------------------------- packing


def tokenize_joined(docs: Iterable[str], tokenizer) -> list[int]:
    """Token ids of all documents, each followed by EOS (LongLoRA joins RedPajama documents this way)."""
    ids: list[int] = []
    for doc in docs:
        if doc.strip():
            ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids


def pack(ids: list[int], length: int) -> torch.Tensor:
    """(n_blocks, length) blocks of consecutive tokens; the incomplete tail is dropped."""
    n = len(ids) // length
    if n == 0:
        raise DataError(f"the data has {len(ids)} tokens, fewer than one block of {length}; "
                        f"add data or lower --target-length")
    return torch.tensor(ids[: n * length], dtype=torch.int64).view(n, length)  # (n, length)


def split_heldout(blocks: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ceil(fraction * n) blocks aside (none when only one block exists)."""
    n = blocks.shape[0]
    held = heldout_count(n, fraction)
    return blocks[: n - held], blocks[n - held:]


def heldout_count(n: int, fraction: float) -> int:
    """ceil(fraction * n), but always leave one sample to train on."""
    return min(n - 1, math.ceil(fraction * n))


def cache_key(files: list[Path], tokenizer_id: str, length: int) -> str:
    """Changes when a file's path, size or mtime, the tokenizer or the block length changes."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{tokenizer_id}|{length}".encode())
    for f in files:
        stat = f.stat()
        h.update(f"|{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def tokenizer_id(model_dir: Path) -> str:
    """A fingerprint of the tokenizer files in a model folder."""
    h = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        if (Path(model_dir) / name).is_file():
            h.update((Path(model_dir) / name).read_bytes())
    return h.hexdigest()[:16]


def packed_blocks(paths: Iterable[Path], tokenizer, model_dir: Path, length: int, log=print) -> torch.Tensor:
    """Packed blocks for these files, from the cache when it has them."""
    files = text_files(paths)
    path = longctx_home() / "cache" / "tokens" / cache_key(files, tokenizer_id(model_dir), length)
    if (path / "blocks.pt").is_file():
        return torch.load(path / "blocks.pt")
    docs = [doc for f in files for doc in read_documents(f)]
    if not any(doc.strip() for doc in docs):
        raise DataError(f"the data ({len(files)} file(s)) holds no text")
    log(f"tokenizing {len(files)} file(s) into blocks of {length} tokens (cached in {path})")
    blocks = pack(tokenize_joined(docs, tokenizer), length)
    with atomic_dir(path) as tmp:
        torch.save(blocks, tmp / "blocks.pt")
    return blocks


def pretraining_data(paths, tokenizer, model_dir: Path, length: int, heldout: float, log=print) -> Dataset:
    """Packed blocks as causal-LM samples (labels = inputs; the model shifts them)."""
    files = text_files(paths)
    blocks = packed_blocks(files, tokenizer, model_dir, length, log)
    train, held = split_heldout(blocks, heldout)
    as_sample = lambda block: {"input_ids": block, "labels": block}  # noqa: E731
    return Dataset([as_sample(b) for b in train], [as_sample(b) for b in held], origin(files, blocks))


def origin(files: list[Path], blocks: torch.Tensor) -> dict[str, Any]:
    """The files' count, a digest of the packed tokens (two runs trained on the same text have the same one)
    and the `SOURCES` lines of the corpus folders (longctx/corpus.py writes there the Debian packages'
    versions: a point release changes a manual's text)."""
    sources = sorted({line for folder in {f.parent for f in files} if (folder / "SOURCES").is_file()
                      for line in (folder / "SOURCES").read_text().split()})
    digest = hashlib.sha256(blocks.numpy().tobytes()).hexdigest()[:16]
    return {"files": len(files), "blocks": list(blocks.shape), "tokens_sha256": digest, "sources": sources}


# ---------------------------------------------------------------- SFT (LongAlpaca)


def sft_prompt(record: dict[str, Any]) -> str:
    """LongAlpaca's Llama-2 instruction format: `[INST]{instruction}[/INST]` (input appended if given)."""
    extra = f"\n\n{record['input']}" if record.get("input") else ""
    return f"[INST]{record['instruction']}{extra}[/INST]"


def sft_sample(record: dict[str, Any], tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    """Prompt + answer + EOS, truncated to max_length; labels hide the prompt (loss on the answer only)."""
    prompt = tokenizer(sft_prompt(record), add_special_tokens=False)["input_ids"]
    answer = tokenizer(str(record["output"]), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt + answer)[:max_length]
    labels = ([IGNORE] * len(prompt) + answer)[:max_length]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


def sft_data(path: Path, tokenizer, max_length: int, heldout: float) -> Dataset:
    """LongAlpaca JSON (a list of {instruction, output[, input]}), one sample per record, no packing."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"cannot read --sft {path}: {e.strerror}") from None
    except ValueError:
        raise DataError(f"--sft {path} is not valid JSON") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"--sft {path} must be a non-empty JSON list of {{instruction, output}} records")
    bad = [i for i, r in enumerate(records) if not (isinstance(r, dict) and "instruction" in r and "output" in r)]
    if bad:
        raise DataError(f"--sft {path}: record {bad[0]} lacks `instruction` or `output`")
    samples = [sft_sample(r, tokenizer, max_length) for r in records]
    samples = [s for s in samples if (s["labels"] != IGNORE).any()]  # answer cut off entirely: nothing to learn
    if not samples:
        raise DataError(f"--sft {path}: every answer falls beyond --target-length {max_length}")
    held = heldout_count(len(samples), heldout)
    return Dataset(samples[: len(samples) - held], samples[len(samples) - held:])


# ---------------------------------------------------------------- batching


def collate(samples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sample; padded positions are masked and carry no loss. Samples that carry
    `position_ids` (PoSE) keep them; their padding gets position 0."""
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.int64)  # (B, T)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.int64)
    mask = torch.zeros((len(samples), width), dtype=torch.int64)
    positions = torch.zeros((len(samples), width), dtype=torch.int64)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[row, :n], labels[row, :n], mask[row, :n] = s["input_ids"], s["labels"], 1
        positions[row, :n] = s.get("position_ids", torch.arange(n))
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return {**batch, "position_ids": positions} if "position_ids" in samples[0] else batch


class Stream:
    """Endless, seeded, resumable micro-batches: epoch e visits samples in randperm(n, seed + e).

    `consumed` counts samples taken by all processes together; rank r of w takes its slice of each
    global micro-batch, so the data order does not depend on how the run was split or interrupted.
    `positions(k)`, when given, adds position_ids to the sample at global position k (PoSE); `drills`, when
    given, turns the chosen global micro-batches into retrieval drills (finetune/drills.py)."""

    def __init__(self, samples: list, batch_size: int, seed: int, pad_id: int, rank: int = 0, world: int = 1,
                 positions: Callable[[int], torch.Tensor] | None = None, drills: Drills | None = None):
        self.samples, self.batch_size, self.seed, self.pad_id = samples, batch_size, seed, pad_id
        self.rank, self.world, self.consumed, self.positions, self.drills = rank, world, 0, positions, drills
        self._epoch: tuple[int, torch.Tensor | None] = (-1, None)  # (epoch, its order), computed once

    def index(self, k: int) -> int:
        """The sample at global position k."""
        n = len(self.samples)
        if self._epoch[0] != k // n:
            self._epoch = (k // n, torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + k // n)))
        return int(self._epoch[1][k % n])

    def next(self) -> dict[str, torch.Tensor]:
        """This process's next micro-batch."""
        start = self.consumed + self.rank * self.batch_size
        batch = [self.sample(k) for k in range(start, start + self.batch_size)]
        self.consumed += self.batch_size * self.world
        return collate(batch, self.pad_id)

    def drilling(self) -> bool:
        """Whether the next micro-batch is a retrieval drill (on every process alike)."""
        return self.drills is not None and self.drills.chosen(self.consumed // (self.batch_size * self.world))

    def sample(self, k: int) -> dict[str, torch.Tensor]:
        """The sample at global position k, drilled when its micro-batch is a drill, with its position ids
        when the stream draws them."""
        sample = self.samples[self.index(k)]
        m, row = divmod(k, self.batch_size * self.world)  # global micro-batch, row in it
        if self.drills is not None and self.drills.chosen(m):
            return self.drills(m, row, sample)  # with its own window and position ids
        return sample if self.positions is None else {**sample, "position_ids": self.positions(k)}

    def state_dict(self) -> dict[str, int]:
        """The data position, for a checkpoint."""
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a checkpoint's data position."""
        self.consumed = int(state["consumed"])
