"""finetune/loss.py: the chunked loss equals the model's own, in value and gradient, and never keeps
a full (T, vocab) block for backward."""

import pytest
import torch
import torch.nn.functional as F

from finetune.lora import apply_mode
from finetune.loss import IGNORE_INDEX, causal_lm_loss, chunked_cross_entropy
from finetune.model import load_extended


def reference_loss(hidden, weight, labels):
    logits = hidden[:, :-1] @ weight.T
    return F.cross_entropy(logits.reshape(-1, weight.shape[0]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_equals_full_logits_in_value_and_gradient(chunk):
    torch.manual_seed(0)
    B, T, D, V = 2, 33, 16, 50
    labels = torch.randint(0, V, (B, T))
    labels[1, 20:] = IGNORE_INDEX  # right padding of the second sequence
    hidden = torch.randn(B, T, D, requires_grad=True)
    weight = torch.randn(V, D, requires_grad=True)

    expected = reference_loss(hidden, weight, labels)
    want = torch.autograd.grad(expected, (hidden, weight))
    got_loss = chunked_cross_entropy(hidden, lambda h: h @ weight.T, labels, chunk)
    got = torch.autograd.grad(got_loss, (hidden, weight))
    torch.testing.assert_close(got_loss, expected, rtol=1e-6, atol=1e-6)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_nothing_scored_is_zero_not_nan():
    hidden = torch.randn(1, 5, 4)
    loss = chunked_cross_entropy(hidden, lambda h: h @ torch.randn(7, 4).T, torch.full((1, 5), IGNORE_INDEX), 2)
    assert loss.item() == 0.0


def test_backward_keeps_no_full_logits_block():
    torch.manual_seed(0)
    B, T, D, V, chunk = 1, 256, 8, 300, 32
    hidden = torch.randn(B, T, D, requires_grad=True)
    weight = torch.randn(V, D, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        chunked_cross_entropy(hidden, lambda h: h @ weight.T, labels, chunk).backward()
    assert max(saved) < 2 * chunk * V  # one chunk's logits at most, never (T, V) = 76800
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        reference_loss(hidden, weight, labels).backward()
    assert max(saved) >= (T - 1) * V  # the plain loss does keep them: the check above can fail


@pytest.mark.parametrize("mode", ["longlora", "full"])
def test_model_loss_and_gradients_match_the_models_own(tiny_model, mode):
    torch.manual_seed(0)
    model = apply_mode(load_extended(tiny_model, "linear", 128), mode)
    ids = torch.randint(3, 500, (2, 128))
    mask = torch.ones_like(ids)
    mask[1, 90:] = 0
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    params = [p for p in model.parameters() if p.requires_grad]

    own = causal_lm_loss(model, batch, 0)
    want = torch.autograd.grad(own, params)
    chunked = causal_lm_loss(model, batch, 48, model.get_output_embeddings())
    got = torch.autograd.grad(chunked, params)
    torch.testing.assert_close(chunked, own, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
