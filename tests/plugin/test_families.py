"""Every family longctx supports makes the whole trip at tiny size: 2 training steps with S²-Attn at 4x its
context, `finetune merge`, then served by vLLM (our plugin loaded, as installed) with next-token logprobs
equal to transformers' within the float32 tolerance, at positions past the original context."""

import json

import pytest

from finetune.config import MergeConfig, TrainConfig
from finetune.merge import merge
from finetune.train import train
from longctx.archs import FAMILIES
from longctx.rope import LONGROPE_ONLY
from tests.conftest import TINY_CONTEXT
from tests.finetune.conftest import make_family_checkpoint
from tests.plugin.test_portable import as_served_logprobs, plain_vllm_top5
from tests.serve.test_server import LOGPROB_ATOL, reference
from tests.tiny import make_tiny_checkpoint, training_text

pytestmark = pytest.mark.slow
CONTEXT = TINY_CONTEXT  # the tiny bases' context (plain_vllm_top5 serves 4x it)


@pytest.fixture(scope="module")
def tokenizer_source(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tok"), context=CONTEXT)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_trains_merges_and_serves_as_transformers_computes(family, tokenizer_source, tmp_path):
    import torch

    base = make_family_checkpoint(tmp_path / family, family, tokenizer_source, context=CONTEXT, init_std=0.2)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.txt").write_text(" ".join(training_text()) * 8)
    run = train(TrainConfig(model=base, data=(tmp_path / "data",), out=tmp_path / "run", target_length=4 * CONTEXT,
                            rope="linear" if family in LONGROPE_ONLY else "yarn", attention="s2", max_steps=2, grad_accum=1, lr=1e-2, warmup_steps=0,
                            gradient_checkpointing=False, precision="fp32", eval_fraction=0), log=lambda _: None)
    merged = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == [FAMILIES[family]] and config["longctx"]["trained_context"] == 4 * CONTEXT
    ids = torch.randint(3, 500, (3 * CONTEXT,), generator=torch.Generator().manual_seed(1)).tolist()
    served, exact = plain_vllm_top5(merged, tmp_path, ids, plugins=True), as_served_logprobs(merged, ids)
    assert isinstance(served, dict) and set(served) == set(exact.topk(5).indices.tolist()), (served, exact.topk(5))
    assert all(abs(v - exact[t].item()) < LOGPROB_ATOL for t, v in served.items()), (served, exact.topk(5))
    # The check has teeth: with the base's RoPE (no extension) transformers' answer moves far beyond it.
    unextended = {"rope_type": "default", "rope_theta": config["rope_parameters"]["rope_theta"],
                  **{k: v for k, v in config["rope_parameters"].items() if k == "partial_rotary_factor"}}
    wrong = reference(merged, ids, rope=unextended)
    assert max(abs(v - wrong[t].item()) for t, v in served.items()) > 100 * LOGPROB_ATOL
