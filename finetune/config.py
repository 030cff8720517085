"""Typed settings for `finetune train` and `finetune merge`.

Each field's docstring is its `--help` line (longctx/cli.py reads it from this file's source). Checks
live in `__post_init__` and raise `UsageError` naming the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from longctx.cli import UsageError
from longctx.rope import METHODS, check_extension

Mode = Literal["longlora", "lora", "full"]
Attention = Literal["s2", "full"]
Precision = Literal["auto", "bf16", "fp32"]
EvalDtype = Literal["auto", "float32", "bfloat16"]


@dataclass(frozen=True)
class TrainConfig:
    """Extend a RoPE model's context with LongLoRA (or plain LoRA, or full fine-tuning)."""

    model: Path | None = None
    """base model folder (HF causal LM with RoPE); default: the embedded SmolLM2-135M-Instruct"""
    target_length: int = 16384
    """context length to train for, in tokens; every training block has exactly this length"""
    data: tuple[Path, ...] = ()
    """text files, folders, JSONL files (field `text`) or named corpora (corpus:shakespeare|austen|manuals|mix,
    fetched once; see longctx/corpus.py); default: corpus:shakespeare"""
    sft: Path | None = None
    """LongAlpaca-format JSON (list of {instruction, output[, input]}): supervised, loss on answers only"""
    out: Path = Path("runs/longctx")
    """run folder: run.json, metrics.jsonl, checkpoints/"""
    rope: str = "yarn"
    """RoPE extension: yarn (the default: the best trained and untrained rows measured here at x4,
    benchmarks/results/default-extended.md), linear (position interpolation, as the LongLoRA paper) or dynamic"""
    mode: Mode = "longlora"
    """what trains: longlora (LoRA + embeddings + norms), lora (LoRA only) or full"""
    attention: Attention = "s2"
    """attention while training: s2 (shifted sparse, LongLoRA §3.2) or full; evaluation is always full"""
    group_ratio: float = 0.25
    """S²-Attn group size as a fraction of the sequence length (paper: 1/4)"""
    max_steps: int = 1000
    """optimizer steps (paper: 1000)"""
    batch_size: int = 1
    """sequences per micro-batch on each process (paper: 1)"""
    grad_accum: int = 8
    """micro-batches per optimizer step (paper: 8 on each of 8 GPUs)"""
    lr: float = 2e-5
    """peak learning rate (paper: 2e-5)"""
    warmup_steps: int = 20
    """linear warm-up steps, then constant (paper: 20)"""
    decay_steps: int = 0
    """the last this many steps decay the learning rate linearly towards 0 (warmup-stable-decay, arXiv
    2405.18392); 0: constant to the end (paper). A resume may add it: a constant-rate checkpoint branches into a decay"""
    weight_decay: float = 0.0
    """AdamW weight decay (paper: 0)"""
    max_grad_norm: float = 1.0
    """gradient clipping norm (0 disables)"""
    save_every: int = 100
    """write a checkpoint every this many steps (and at the end)"""
    eval_fraction: float = 0.02
    """share of packed blocks held out for evaluation (at least one when there are two or more)"""
    seed: int = 42
    """seed for the data order and initialisation"""
    precision: Precision = "auto"
    """auto: bf16 autocast where the CPU/GPU computes it natively, else fp32"""
    gradient_checkpointing: bool = True
    """recompute activations in the backward pass to save memory"""
    loss_chunk: int = 1024
    """positions per chunk of the LM head and loss, recomputed in backward (finetune/loss.py); 0: full logits"""
    resume: bool = False
    """continue the run in --out from its latest checkpoint"""
    pose_window: int = 0
    """PoSE (arXiv 2309.10400): train in windows of this many tokens whose position ids skip to span
    --target-length (finetune/pose.py); 0: off, blocks of --target-length consecutive positions"""
    drills: float = 0.0
    """share of micro-batches that are retrieval drills: notes of one form ("the number for <name> is <k>") in the
    text, then a question naming one, only its answer scored, under full attention (finetune/drills.py); 0: off"""
    drill_window: int = 0
    """tokens of a drill (its position ids skip to span --target-length, as PoSE's); 0: the text windows' length"""

    def __post_init__(self) -> None:
        if self.rope not in METHODS:
            raise UsageError(f"unknown RoPE method {self.rope!r}; use --rope {'|'.join(METHODS)}")
        for name, allowed in (("mode", Mode), ("attention", Attention), ("precision", Precision)):
            if getattr(self, name) not in get_args(allowed):  # a preset bypasses argparse's choices
                raise UsageError(f"unknown {name} {getattr(self, name)!r}; use --{name} {'|'.join(get_args(allowed))}")
        if self.data and self.sft:
            raise UsageError("give either --data or --sft, not both")
        positive = ("target_length", "max_steps", "batch_size", "grad_accum", "save_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.group_ratio <= 1:
            raise UsageError("--group-ratio must be in (0, 1]; the paper uses 0.25")
        if not 0 <= self.eval_fraction < 1:
            raise UsageError("--eval-fraction must be in [0, 1)")
        if self.loss_chunk < 0:
            raise UsageError("--loss-chunk must be at least 0 (0: the model's own loss over full logits)")
        if self.lr <= 0 or self.warmup_steps < 0 or self.max_grad_norm < 0:
            raise UsageError("--lr must be positive, --warmup-steps and --max-grad-norm non-negative")
        if not 0 <= self.decay_steps <= self.max_steps:
            raise UsageError("--decay-steps must be from 0 (off) to --max-steps")
        if self.pose_window and not 1 < self.pose_window < self.target_length:
            raise UsageError("--pose-window must be 0 (off) or between 2 and --target-length (exclusive)")
        if not 0 <= self.drills < 1:
            raise UsageError("--drills is the share of micro-batches that are drills, from 0 (off) to below 1")
        if self.drill_window and not 64 <= self.drill_window <= (self.pose_window or self.target_length):
            raise UsageError("--drill-window must be 0 (the training windows' length) or from 64 tokens up to "
                             "that length (--pose-window, or --target-length without it)")
        if self.drills and self.sft:
            raise UsageError("--drills writes notes into --data's text windows; it does not apply to --sft")
        if self.pose_window and self.sft:
            raise UsageError("--pose-window packs --data into windows; it does not apply to --sft")


@dataclass(frozen=True)
class MergeConfig:
    """Fold a finished run into a standalone, servable checkpoint with the extended RoPE in config.json."""

    run: Path
    """run folder written by `finetune train`"""
    out: Path = Path("models/longctx")
    """where to write the merged checkpoint (replaced atomically)"""
    step: int | None = None
    """checkpoint step to merge; default: the latest"""
    tolerance: float = 1e-3
    """largest allowed |logit| difference between the adapter model and the merged one (fp32)"""

    def __post_init__(self) -> None:
        if self.tolerance <= 0:
            raise UsageError("--tolerance must be positive")


@dataclass(frozen=True)
class EvalConfig:
    """Perplexity against context length and passkey retrieval of a base or merged model (full attention)."""

    model: Path
    """model folder: a merged checkpoint, or a base model (with --rope/--factor to extend it at load time)"""
    out: Path = Path("eval")
    """folder for eval.json, perplexity.png and passkey.png"""
    data: tuple[Path, ...] = ()
    """held-out text files, folders or named corpora (e.g. corpus:austen), used whole; default: the held-out
    tail of the embedded corpus"""
    lengths: tuple[int, ...] = (1024, 2048, 4096)
    """context lengths (tokens) at which to measure perplexity"""
    stride: int = 256
    """tokens between the starts of consecutive perplexity windows (LongLoRA's eval.py: 256)"""
    max_windows: int = 8
    """at most this many windows per length, spread evenly over the text (bounds the time)"""
    passkey_lengths: tuple[int, ...] = ()
    """prompt lengths (tokens) for passkey retrieval; default: --lengths"""
    passkey_depths: int = 5
    """depth bins between 0 and 1 for the needle; each trial draws its depth inside its bin"""
    passkey_trials: int = 2
    """trials per length and depth bin (paper: 10); 0 skips passkey retrieval"""
    rope: str | None = None
    """inference-time RoPE override: linear, yarn or dynamic (needs --factor)"""
    factor: float | None = None
    """extension factor for --rope, relative to the model's original context"""
    seed: int = 0
    """seed for the passkeys and their depths"""
    dtype: EvalDtype = "auto"
    """weights' dtype: auto (bfloat16 where the hardware runs it natively or LONGCTX_DTYPE says, else float32)"""
    multikey_trials: int = 0
    """trials per length and depth bin of the multi-key needle (RULER's MK-NIAH, in the held-out text); 0 skips it"""
    multikey_keys: int = 4
    """needles per multi-key prompt: the one the question names and distractors of the same form"""

    def __post_init__(self) -> None:
        if self.dtype not in get_args(EvalDtype):
            raise UsageError(f"unknown dtype {self.dtype!r}; use --dtype {'|'.join(get_args(EvalDtype))}")
        check_extension(self.rope, self.factor)
        if self.multikey_trials < 0 or not 2 <= self.multikey_keys <= 24:
            raise UsageError("--multikey-trials must be at least 0 and --multikey-keys between 2 and 24")
        if not self.lengths or min(self.lengths + self.passkey_lengths) < 2:
            raise UsageError("--lengths (and --passkey-lengths) must be token counts of at least 2")
        if self.stride < 1 or self.max_windows < 1 or self.passkey_depths < 1 or self.passkey_trials < 0:
            raise UsageError("--stride, --max-windows and --passkey-depths must be at least 1, "
                             "--passkey-trials at least 0")

