"""Merged checkpoints are portable: they name their family's standard architecture, so a plain vLLM with
no plugin (`VLLM_PLUGINS=` empty, as on a fleet that never installed longctx) serves linear and yarn ones
exactly as transformers computes them, as our plugin does. Dynamic-NTK ones are right only with the
plugin, which builds vLLM's cache for the whole served length (plain vLLM 0.32 stops it at
max_position_embeddings); the README says so."""

import json
import os
import subprocess
import sys

import pytest
import torch

from longctx.procs import terminate
from tests.conftest import TINY_CONTEXT, TINY_FACTOR, free_port, wait_for
from tests.serve.test_server import LOGPROB_ATOL, long_prompt, served_top5
from tests.tiny import make_tiny_checkpoint

pytestmark = pytest.mark.slow


def merged_checkpoint(out, method: str):
    """The tiny model extended x4 with `method`, marked as `finetune merge` marks it."""
    from longctx.default_model import mark_as_longctx
    from longctx.rope import extend_config

    make_tiny_checkpoint(out, context=TINY_CONTEXT)
    path = out / "config.json"
    path.write_text(json.dumps(extend_config(json.loads(path.read_text()), method, TINY_CONTEXT * TINY_FACTOR)))
    mark_as_longctx(out, original=TINY_CONTEXT, trained=TINY_CONTEXT * TINY_FACTOR, method=method,
                    factor=float(TINY_FACTOR))
    return out


def plain_vllm_top5(model, tmp_path, ids: list[int], plugins: bool) -> dict[int, float] | str:
    """vLLM's own OpenAI server on `model` (not `python -m serve`), our plugin loaded or every plugin
    disabled: the top-5 next-token logprobs after `ids`, or the error it answered with."""
    from openai import OpenAI, OpenAIError

    port, log = free_port(), tmp_path / "vllm.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(tmp_path / "c"), "VLLM_API_KEY": "k"}
    env |= {} if plugins else {"VLLM_PLUGINS": ""}
    cmd = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(model),
           "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", str(4 * TINY_CONTEXT)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(f"http://127.0.0.1:{port}", "k", proc, log)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        server = type("S", (), {"name": str(model)})
        try:
            return served_top5(client, server, ids)
        except OpenAIError as e:
            return f"error: {e}"
    finally:
        terminate(proc)


def as_served_logprobs(model, ids: list[int]) -> torch.Tensor:
    """transformers' next-token logprobs with the RoPE our plugin serves (`longctx.rope.as_served`)."""
    from finetune.model import load_as_served

    net = load_as_served(model, json.loads((model / "config.json").read_text())).eval()
    with torch.no_grad():
        return net(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)


@pytest.mark.parametrize("method, plugins", [("linear", False), ("yarn", False), ("dynamic", False),
                                             ("dynamic", True)])
def test_plain_vllm_serves_merged_checkpoints(tmp_path, method, plugins):
    model = merged_checkpoint(tmp_path / f"tiny-{method}", method)
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["longctx"]["rope_method"] == method
    ids = long_prompt(4)  # 3x the original context: every position past it uses the extended RoPE
    served, exact = plain_vllm_top5(model, tmp_path, ids, plugins), as_served_logprobs(model, ids)
    if method != "dynamic" or plugins:  # with the plugin, it takes over the standard name for our checkpoints
        assert isinstance(served, dict) and set(served) == set(exact.topk(5).indices.tolist()), served
        assert all(abs(v - exact[t].item()) < LOGPROB_ATOL for t, v in served.items()), (served, exact.topk(5))
    else:  # dynamic without the plugin: an error, NaN, or other logprobs; never the right answer
        wrong = isinstance(served, str) or any(v != v for v in served.values()) or max(
            abs(v - exact[t].item()) for t, v in served.items()) > 100 * LOGPROB_ATOL
        assert wrong, served
