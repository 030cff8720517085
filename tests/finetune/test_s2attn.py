"""S²-Attn against an explicit dense (N×N) masked reference, and its switch on a tiny random Llama."""

from __future__ import annotations

import math

import pytest
import torch

from finetune.s2attn import (apply_s2attn, full_attention, group_boundaries, group_size_for, remove_s2attn,
                             s2_attention, shifted_boundaries)


def dense_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int,
                    key_padding: torch.Tensor | None = None) -> torch.Tensor:
    """S²-Attn written the slow way: one (N×N) mask per head half, then softmax. Padded query rows are NaN."""
    batch, heads, n, dim = q.shape
    k, v = (x.repeat_interleave(heads // x.shape[1], dim=1) for x in (k, v))  # (B, H, N, D)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    shift = 0 if group >= n else group // 2
    plain = (i // group) == (j // group)  # blocks [kG, (k+1)G)
    shifted = (i + group - shift) // group == (j + group - shift) // group  # blocks [0, G/2), [G/2, 3G/2), ...
    mask = torch.stack([plain] * (heads // 2) + [shifted] * (heads - heads // 2)) & (j <= i)  # (H, N, N)
    mask = mask.expand(batch, -1, -1, -1)  # (B, H, N, N)
    if key_padding is not None:
        mask = mask & key_padding[:, None, None, :]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dim)  # (B, H, N, N)
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v  # (B, H, N, D)


def qkv(batch: int, heads: int, kv_heads: int, n: int, dim: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, n, dim, generator=gen), torch.randn(batch, kv_heads, n, dim, generator=gen),
            torch.randn(batch, kv_heads, n, dim, generator=gen))


def right_padding(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, N)


def left_padding(lengths: list[int], n: int) -> torch.Tensor:
    return right_padding(lengths, n).flip(-1)  # (B, N)


@pytest.mark.parametrize("batch,heads,kv_heads,n,group,lengths,pad", [
    (1, 4, 4, 16, 4, None, right_padding),  # MHA, N divisible by G
    (2, 4, 2, 16, 4, None, right_padding),  # GQA
    (1, 4, 1, 12, 4, None, right_padding),  # MQA: one kv head straddles the head split
    (1, 4, 2, 18, 4, None, right_padding),  # N not a multiple of G: short last block
    (2, 8, 2, 19, 6, None, right_padding),  # odd N, ragged tail in both halves
    (1, 4, 2, 15, 5, None, right_padding),  # odd G: shift by G // 2
    (2, 4, 2, 16, 4, [16, 11], right_padding),  # batch 2, right padding
    (2, 8, 4, 21, 8, [13, 21], right_padding),  # padding and a ragged tail
    (2, 4, 2, 16, 4, [3, 16], right_padding),  # whole blocks of padding (no NaN may leak)
    (2, 4, 2, 16, 4, [9, 14], left_padding),  # left padding: here real tokens *could* see padded keys
    (2, 9, 3, 20, 8, [20, 13], right_padding),  # SmolLM2's 9 heads on 3 kv: the split falls inside a GQA group
    (1, 3, 1, 16, 4, None, right_padding),  # odd heads, MQA
    (1, 6, 2, 16, 4, None, right_padding),  # even heads, split inside a GQA group (3 | 3 over groups of 3)
])
def test_matches_dense_reference(batch, heads, kv_heads, n, group, lengths, pad):
    q, k, v = qkv(batch, heads, kv_heads, n)
    padding = None if lengths is None else pad(lengths, n)
    out = s2_attention(q, k, v, group, padding)
    ref = dense_reference(q, k, v, group, padding)
    assert out.shape == q.shape and torch.isfinite(out).all()
    real = torch.ones(batch, n, dtype=torch.bool) if padding is None else padding
    torch.testing.assert_close(out.transpose(1, 2)[real], ref.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (uses xformers there when installed)")
@pytest.mark.parametrize("lengths", [None, [32, 21]])
def test_cuda_matches_dense_reference(lengths):
    q, k, v = qkv(2, 8, 2, 32)
    padding = None if lengths is None else right_padding(lengths, 32)
    out = s2_attention(q.cuda(), k.cuda(), v.cuda(), 8, None if padding is None else padding.cuda()).cpu()
    real = torch.ones(2, 32, dtype=torch.bool) if padding is None else padding
    ref = dense_reference(q, k, v, 8, padding)
    torch.testing.assert_close(out.transpose(1, 2)[real], ref.transpose(1, 2)[real], atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_one_group_is_causal_attention(kv_heads):
    q, k, v = qkv(2, 4, kv_heads, 10)
    causal = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(s2_attention(q, k, v, group_size=10), causal, atol=1e-5, rtol=1e-5)


def test_no_output_depends_on_a_later_token():
    n, heads, dim = 14, 4, 8
    torch.manual_seed(0)
    x = torch.randn(1, n, 16, requires_grad=True)
    w_q, w_kv = torch.randn(16, heads * dim), torch.randn(16, 2 * dim)

    def attend(x: torch.Tensor) -> torch.Tensor:
        q = (x @ w_q).view(1, n, heads, dim).transpose(1, 2)  # (B, H, N, D)
        k = (x @ w_kv).view(1, n, 2, dim).transpose(1, 2)  # (B, H_kv, N, D)
        return s2_attention(q, k, k * 2, group_size=4)

    out = attend(x)  # (B, H, N, D)
    for t in range(n):  # a random projection of out[t]: any dependence shows up as a nonzero gradient
        (grad,) = torch.autograd.grad((out[:, :, t] * torch.randn_like(out[:, :, t])).sum(), x, retain_graph=True)
        assert (grad[0, t + 1:] == 0).all(), f"position {t} sees a later token"
        assert (grad[0, t] != 0).any()


def test_boundaries_as_specified():
    assert group_boundaries(16, 4) == [0, 4, 8, 12, 16]
    assert shifted_boundaries(16, 4) == [0, 2, 6, 10, 14, 16]  # half-size first and last block, no wrap
    assert group_boundaries(18, 4) == [0, 4, 8, 12, 16, 18]
    assert shifted_boundaries(18, 4) == [0, 2, 6, 10, 14, 18]
    assert shifted_boundaries(8, 8) == [0, 8]  # one group: nothing to shift
    assert group_size_for(4096) == 1024 and group_size_for(100, 0.5) == 50
    with pytest.raises(ValueError, match="ratio"):
        group_size_for(100, 0)


def _sees(out_head: int, query: int, key: int, group: int = 8, n: int = 24) -> bool:
    """Whether output position `query` of head `out_head` depends on the value at position `key`."""
    q, k, v = qkv(1, 4, 2, n)
    v.requires_grad_(True)
    s2_attention(q, k, v, group)[0, out_head, query].sum().backward()
    kv_head = out_head // 2
    return bool(v.grad[0, kv_head, key].abs().sum() > 0)


def test_shift_boundaries_in_attention():
    half = 4  # G = 8
    assert not _sees(out_head=3, query=half, key=half - 1)  # shifted half: a new block starts at G/2
    assert _sees(out_head=3, query=half - 1, key=0)
    assert _sees(out_head=3, query=half + 8 - 1, key=half)  # ... and runs to 3G/2
    assert not _sees(out_head=3, query=half + 8, key=half + 8 - 1)
    assert _sees(out_head=0, query=half, key=half - 1)  # plain half: one block [0, G)
    assert not _sees(out_head=0, query=8, key=7)


# --- apply_s2attn on a tiny random Llama ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_config():
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def tiny_llama(config, seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def logits(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_apply_trains_with_s2_and_evaluates_with_full_attention(llama_config):
    model = tiny_llama(llama_config)
    ids = torch.randint(0, 96, (2, 32), generator=torch.Generator().manual_seed(1))
    full_train, full_eval = logits(model.train(), ids), logits(model.eval(), ids)

    touched = apply_s2attn(model, group_ratio=0.25)
    assert len(touched) == 2 and model.config._attn_implementation == "longctx_s2"
    assert not torch.allclose(logits(model.train(), ids), full_train, atol=1e-4)
    torch.testing.assert_close(logits(model.eval(), ids), full_eval)

    remove_s2attn(model)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(logits(model.train(), ids), full_train)


def test_full_attention_inside_the_context_s2_again_after(llama_config):
    model = tiny_llama(llama_config).train()
    ids = torch.randint(0, 96, (1, 32), generator=torch.Generator().manual_seed(4))
    full = logits(model, ids)
    apply_s2attn(model)
    sparse = logits(model, ids)
    with full_attention(model):
        torch.testing.assert_close(logits(model, ids), full)
    torch.testing.assert_close(logits(model, ids), sparse)
    assert not torch.allclose(sparse, full, atol=1e-4)
    remove_s2attn(model)


def test_apply_leaves_other_instances_alone(llama_config):
    model, sibling = tiny_llama(llama_config), tiny_llama(llama_config)  # one shared config object
    ids = torch.randint(0, 96, (1, 32), generator=torch.Generator().manual_seed(2))
    before = logits(sibling.train(), ids)
    apply_s2attn(model)
    torch.testing.assert_close(logits(sibling.train(), ids), before)
    assert not torch.allclose(logits(model.train(), ids), before, atol=1e-4)
    remove_s2attn(model)


@pytest.mark.parametrize("pad", [right_padding, left_padding])
def test_padding_is_never_attended(llama_config, pad):
    """Real tokens' logits do not change when only the padded tokens do (the model's mask reaches S²-Attn).

    Right padding is later than every real token, so causality alone hides it; left padding needs the mask."""
    model = tiny_llama(llama_config).train()
    apply_s2attn(model)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 96, (2, 32), generator=gen)
    mask = pad([32, 19], 32)  # (B, N)
    other = torch.where(mask, ids, torch.randint(0, 96, (2, 32), generator=gen))  # other tokens in the padding
    a, b = logits(model, ids, mask.long()), logits(model, other, mask.long())
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a[mask], b[mask])
    remove_s2attn(model)


def test_packed_documents_are_refused_not_silently_merged(llama_config):
    model = tiny_llama(llama_config).train()
    apply_s2attn(model)
    ids = torch.randint(0, 96, (1, 32), generator=torch.Generator().manual_seed(4))
    restarting = torch.cat([torch.arange(20), torch.arange(12)])[None]  # two documents in one row
    with pytest.raises(ValueError, match="position_ids"):
        model(input_ids=ids, position_ids=restarting, use_cache=False)
    model.eval()
    model(input_ids=ids, position_ids=restarting, use_cache=False)  # full attention (plain SDPA) handles packing itself
    remove_s2attn(model)
