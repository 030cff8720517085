"""Shifted sparse attention (S²-Attn, LongLoRA §3.2) for training, and its switch on a transformers model.

For sequence length N and group size G, heads [0, H/2) attend causally inside blocks [kG, (k+1)G); heads
[H/2, H) attend causally inside blocks with boundaries {0, G/2, 3G/2, ..., N} (for odd H, such as SmolLM2's 9,
the split is at floor(H/2): the shifted half has the extra head). This is the reference's
flash/varlen path: half-size first and last blocks, no wrap-around, so no token ever sees a later one (its
`roll` path wraps the last half-group onto the first; issues #15, #90). Cost is ~N·G instead of N².

The maths (`s2_attention`) is a pure tensor function; only `apply_s2attn`/`remove_s2attn` touch transformers,
and they import it lazily.
"""

from __future__ import annotations

import contextlib
import functools
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTN_NAME = "longctx_s2"  # our key in transformers' AttentionInterface and AttentionMaskInterface
DEFAULT_GROUP_RATIO = 0.25  # LongLoRA default G = N/4 (N/2 also fine, N/6 and N/8 worse in its ablation)
_RATIO_ATTR = "longctx_s2_group_ratio"  # instance attribute marking an attention module of a patched model
_PREVIOUS_ATTR = "longctx_s2_previous"  # instance attribute on the model: the implementation to restore


def group_size_for(seq_len: int, ratio: float = DEFAULT_GROUP_RATIO) -> int:
    """G for a sequence of `seq_len` tokens: int(N·ratio) as in the reference, at least 2 so G/2 is a real shift."""
    if not 0 < ratio <= 1:
        raise ValueError(f"S2-Attn group ratio must be in (0, 1], got {ratio}; LongLoRA uses 0.25")
    return max(2, int(seq_len * ratio))


def group_boundaries(seq_len: int, group_size: int) -> list[int]:
    """Block edges of the unshifted heads: 0, G, 2G, ..., N (the last block may be shorter)."""
    return [*range(0, seq_len, group_size), seq_len]


def shifted_boundaries(seq_len: int, group_size: int) -> list[int]:
    """Block edges of the shifted heads: 0, G/2, 3G/2, ..., N, without wrap-around.

    With a single group (G >= N) there is nothing to connect, so both halves use the one causal block."""
    if group_size >= seq_len:
        return [0, seq_len]
    return [0, *range(group_size // 2, seq_len, group_size), seq_len]


def _runs(bounds: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of equal-size consecutive blocks as (start, size, count), so each run is one SDPA call."""
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    runs, start = [], bounds[0]
    for size, group in itertools.groupby(sizes):
        count = len(list(group))
        runs.append((start, size, count))
        start += size * count
    return runs


def _block_mask(key_padding: Tensor, size: int) -> Tensor:
    """Causal mask of one block that also hides padded keys; True = may attend.

    A query always sees itself: what SDPA returns for a row with no visible key depends on the torch release
    and kernel (NaN in older ones, which would reach real tokens through V in the next layer). Real queries
    see no padding either way."""
    causal = torch.ones(size, size, dtype=torch.bool, device=key_padding.device).tril()  # (G, G)
    eye = torch.eye(size, dtype=torch.bool, device=key_padding.device)  # (G, G)
    return (causal & key_padding[:, None, None, :]) | eye  # (B·n, 1, G, G)


def _run_attention(q: Tensor, k: Tensor, v: Tensor, size: int, count: int, key_padding: Tensor | None,
                   scale: float | None, dropout: float) -> Tensor:
    """Causal attention inside `count` consecutive blocks of `size` tokens, batched into one SDPA call."""
    batch = q.shape[0]

    def fold(x: Tensor) -> Tensor:
        return x.unflatten(2, (count, size)).transpose(1, 2).flatten(0, 1)  # (B, h, n·G, D) -> (B·n, h, G, D)

    mask = None if key_padding is None else _block_mask(key_padding.reshape(batch * count, size), size)
    if mask is not None and q.shape[1] != k.shape[1]:  # CUDA SDPA has no fused kernel for GQA with a mask
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))  # (B, h, n·G, D)
    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=mask, dropout_p=dropout,
                                         is_causal=mask is None, scale=scale,
                                         enable_gqa=q.shape[1] != k.shape[1])  # (B·n, h, G, D)
    return out.unflatten(0, (batch, count)).transpose(1, 2).flatten(2, 3)  # (B, h, n·G, D)


def block_causal_attention(q: Tensor, k: Tensor, v: Tensor, bounds: list[int], key_padding: Tensor | None = None,
                           scale: float | None = None, dropout: float = 0.0) -> Tensor:
    """Causal attention restricted to the blocks [bounds[i], bounds[i+1]); q (B, h, N, D), k/v (B, h_kv, N, D)."""
    outs = []
    for start, size, count in _runs(bounds):
        stop = start + size * count
        kp = None if key_padding is None else key_padding[:, start:stop]  # (B, n·G)
        outs.append(_run_attention(q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop],
                                   size, count, kp, scale, dropout))
    return torch.cat(outs, dim=2)  # (B, h, N, D)


def _kv_halves(x: Tensor, num_heads: int, split: int) -> tuple[Tensor, Tensor]:
    """The kv heads serving query heads [0, split) and [split, H) (GQA: query head i reads kv head i // (H/H_kv))."""
    per_kv = num_heads // x.shape[1]
    if split % per_kv:  # the split falls inside a GQA group (e.g. 9 heads on 3 kv heads): one kv head per query head
        x, per_kv = x.repeat_interleave(per_kv, dim=1), 1  # (B, H, N, D)
    return x[:, : split // per_kv], x[:, split // per_kv:]  # (B, h_plain, N, D), (B, h_shift, N, D)


def s2_attention(q: Tensor, k: Tensor, v: Tensor, group_size: int, key_padding: Tensor | None = None, *,
                 scale: float | None = None, dropout: float = 0.0) -> Tensor:
    """S²-Attn. q (B, H, N, D), k/v (B, H_kv, N, D), key_padding (B, N) True for real tokens -> (B, H, N, D).

    Group edges come from N (the padded length); padded keys are masked, so rows of any length are exact."""
    num_heads, seq_len = q.shape[1], q.shape[2]
    if num_heads < 2 or num_heads % k.shape[1]:
        raise ValueError(f"S2-Attn needs at least 2 heads, a multiple of the kv heads; "
                         f"got {num_heads} query and {k.shape[1]} kv heads")
    if key_padding is not None and bool(key_padding.all()):
        key_padding = None  # nothing to hide: take SDPA's is_causal fast path
    if _xformers_usable(q, key_padding, dropout):
        attend = functools.partial(_xformers_half, lengths=_lengths(key_padding, q), scale=scale)
    else:
        attend = functools.partial(block_causal_attention, key_padding=key_padding, scale=scale, dropout=dropout)
    half = num_heads // 2
    (k_plain, k_shift), (v_plain, v_shift) = _kv_halves(k, num_heads, half), _kv_halves(v, num_heads, half)
    plain = attend(q[:, :half], k_plain, v_plain, group_boundaries(seq_len, group_size))
    shifted = attend(q[:, half:], k_shift, v_shift, shifted_boundaries(seq_len, group_size))
    return torch.cat([plain, shifted], dim=1)  # (B, H, N, D)


# --- optional CUDA backend: xformers memory-efficient attention with block-diagonal causal masks ---------------

def _lengths(key_padding: Tensor | None, q: Tensor) -> list[int]:
    """Each row's number of real tokens (all N without padding)."""
    return [q.shape[2]] * q.shape[0] if key_padding is None else key_padding.sum(-1).tolist()


def _xformers_usable(q: Tensor, key_padding: Tensor | None, dropout: float) -> bool:
    """xformers only on CUDA when installed, without dropout, and for right padding (real tokens first)."""
    if not q.is_cuda or dropout:
        return False
    if key_padding is not None:
        positions = torch.arange(key_padding.shape[1], device=key_padding.device)  # (N,)
        if not torch.equal(key_padding, positions < key_padding.sum(-1, keepdim=True)):
            return False
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def _row_seqlens(bounds: list[int], length: int, seq_len: int) -> list[int]:
    """One row's block lengths: the blocks cut at its real length, then its padding as one block of its own.

    This is the per-row fix for the reference's issue #148 (boundaries taken from the longest sequence)."""
    edges = sorted({min(b, length) for b in bounds} | {seq_len})
    return [b - a for a, b in itertools.pairwise(edges)]


def _xformers_half(q: Tensor, k: Tensor, v: Tensor, bounds: list[int], lengths: list[int],
                   scale: float | None) -> Tensor:
    """One head half through `memory_efficient_attention`, the batch packed into one varlen sequence."""
    from xformers.ops import fmha

    batch, heads, seq_len, dim = q.shape
    seqlens = [n for length in lengths for n in _row_seqlens(bounds, length, seq_len)]
    bias = fmha.attn_bias.BlockDiagonalCausalMask.from_seqlens(seqlens)

    def pack(x: Tensor) -> Tensor:
        x = x.repeat_interleave(heads // x.shape[1], dim=1)  # (B, h, N, D): xformers' 4D layout wants equal heads
        return x.transpose(1, 2).reshape(1, batch * seq_len, heads, dim)  # (1, B·N, h, D)

    out = fmha.memory_efficient_attention(pack(q), pack(k), pack(v), attn_bias=bias, scale=scale)  # (1, B·N, h, D)
    return out.reshape(batch, seq_len, heads, dim).transpose(1, 2)  # (B, h, N, D)


# --- transformers integration ------------------------------------------------------------------------------------

def _key_padding_from_mask(mask: Tensor | None) -> Tensor | None:
    """(B, N) real-token flags from the 4D mask transformers builds for SDPA, or None when it passed none.

    `sdpa_mask` is causal AND key padding, so its diagonal is exactly the key padding (a real token sees itself).
    A mask that hides more (documents packed with restarting position_ids) cannot be reduced to that: refuse."""
    if mask is None:
        return None
    allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] > torch.finfo(mask.dtype).min / 2  # (B, N, N)
    key_padding = torch.diagonal(allowed, dim1=-2, dim2=-1)  # (B, N)
    if not torch.equal(allowed[:, -1], key_padding):  # the last query must see every real key
        raise ValueError("S2-Attn honours causal padding masks only; pack documents without restarting "
                         "position_ids (or train with --attention full)")
    return key_padding


def s2_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                         attention_mask: Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                         **kwargs) -> tuple[Tensor, None]:
    """transformers attention function: S²-Attn on marked modules in training mode, else SDPA unchanged.

    LongLoRA trains with S² but evaluates with full attention; the reference kept S² on at eval, only warning."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ratio = getattr(module, _RATIO_ATTR, None)
    seq_len = query.shape[2]
    if ratio is None or not module.training or key.shape[2] != seq_len or not getattr(module, "is_causal", True):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    out = s2_attention(query, key, value, group_size_for(seq_len, ratio), _key_padding_from_mask(attention_mask),
                       scale=scaling, dropout=dropout)  # (B, H, N, D)
    return out.transpose(1, 2).contiguous(), None  # (B, N, H, D)


def _register() -> None:
    """Register the attention function, and SDPA's mask builder under the same name (re-entrant).

    Without a mask builder transformers passes no mask at all to unknown implementations, dropping padding."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, s2_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of a Llama/Mistral/Qwen2-style model (they carry `num_key_value_groups`)."""
    return [m for m in model.modules() if hasattr(m, "num_key_value_groups")]


def apply_s2attn(model: nn.Module, group_ratio: float = DEFAULT_GROUP_RATIO) -> list[nn.Module]:
    """Switch this model instance to S²-Attn (training mode only); returns the attention modules it marked.

    S² runs only in the modules marked here. transformers shares one config object between models built from
    it, so such a sibling also reports `longctx_s2`, but computes plain SDPA (same maths as sdpa/eager)."""
    group_size_for(2, group_ratio)  # raises on a bad ratio before anything is touched
    modules = _attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no attention modules with `num_key_value_groups`; "
                         "S2-Attn supports Llama, Mistral and Qwen2-style models")
    _register()
    if getattr(model, _PREVIOUS_ATTR, None) is None:
        setattr(model, _PREVIOUS_ATTR, model.config._attn_implementation)
    for module in modules:
        setattr(module, _RATIO_ATTR, group_ratio)
    model.set_attn_implementation(ATTN_NAME)
    return modules


def remove_s2attn(model: nn.Module) -> list[nn.Module]:
    """Undo `apply_s2attn`: unmark the attention modules and restore the previous implementation."""
    modules = [m for m in _attention_modules(model) if hasattr(m, _RATIO_ATTR)]
    for module in modules:
        delattr(module, _RATIO_ATTR)
    previous = getattr(model, _PREVIOUS_ATTR, None)
    if previous is not None:
        model.set_attn_implementation(previous)
        delattr(model, _PREVIOUS_ATTR)
    return modules


@contextlib.contextmanager
def full_attention(model: nn.Module):
    """Full attention inside, S²-Attn again after: for a micro-batch whose last tokens must see its first ones
    (a retrieval drill). Keep its backward inside too: gradient checkpointing recomputes the forward there."""
    marked = [(m, getattr(m, _RATIO_ATTR)) for m in _attention_modules(model) if hasattr(m, _RATIO_ATTR)]
    for module, _ in marked:
        setattr(module, _RATIO_ATTR, None)
    try:
        yield
    finally:
        for module, ratio in marked:
            setattr(module, _RATIO_ATTR, ratio)
