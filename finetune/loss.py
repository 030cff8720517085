"""Next-token cross-entropy without materialising the (T, vocab) logits.

At long context the logits dominate training memory: for SmolLM2 at 16k tokens they are
16384 × 49152 × 4 B = 3.2 GB in float32, and autograd keeps them, their log-softmax and their gradient.
Here the LM head and the loss run chunk by chunk under activation checkpointing, so at most one
(chunk, vocab) block is alive at a time and backward recomputes it. The value equals the model's own
loss (mean over scored tokens, labels shifted by one, -100 unscored)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100  # transformers' convention for unscored label positions


def chunked_cross_entropy(hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                          labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean next-token loss of `head(hidden)` against `labels`, `chunk` positions at a time.

    hidden: (B, T, D) final hidden states; head: (n, D) -> (n, V), the LM head; labels: (B, T), where
    position t is scored against labels[t + 1]. Returns a scalar (0 when no token is scored)."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # (B*(T-1), D)
    y = labels[:, 1:].reshape(-1)  # (B*(T-1),)
    scored = (y != IGNORE_INDEX).sum()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, y.numel(), chunk):
        total = total + checkpoint(_summed_loss, head, h[start:start + chunk], y[start:start + chunk],
                                   use_reentrant=False)
    return total / scored.clamp(min=1)


def _summed_loss(head, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = head(h).float()  # (n, V), upcast as transformers does for the loss
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")


def causal_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int,
                   head: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The training loss of `batch` ({input_ids, attention_mask, labels[, position_ids]}).

    chunk > 0: the forward (through `model`, so DDP's hooks run) stops at the final hidden states and
    the loss is chunked; `head` is the unwrapped model's LM head. chunk == 0: the model's own loss."""
    if chunk == 0:
        return model(**batch).loss
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch.get("position_ids"),  # PoSE's skipped ids; None: 0..T-1
                logits_to_keep=1, output_hidden_states=True)  # logits of the last position only: cheap
    return chunked_cross_entropy(out.hidden_states[-1], head, batch["labels"], chunk)
