"""Two nodes of one CPU process each (torchrun, c10d rendezvous on 127.0.0.1, gloo): DDP for adapters,
FSDP2 for full fine-tuning, resume under FSDP, and elastic resume of a two-process run in one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.checkpoint import checkpoint_at
from finetune.config import MergeConfig
from finetune.merge import merge
from finetune.train import train
from tests.finetune.distributed_job import settings


def weights(run):
    ckpt = checkpoint_at(run)
    return load_file(next((ckpt / ("adapter" if (ckpt / "adapter").is_dir() else "model")).glob("*.safetensors")))


def close(a, b, atol):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# Reduction order differs between one process and two, and Adam's first steps divide by sqrt(v) (about
# |g|), so tiny gradient differences grow to ~1e-4 in weights near zero; losses agree to ~1e-7.
WEIGHT_ATOL = 3e-4


def torchrun_two_nodes(job: list[str], timeout: float = 420) -> None:
    """Start `job` as two torchrun nodes (one process each) meeting at a c10d store on 127.0.0.1, as
    `torchrun --nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT` does on two machines."""
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "longctx-test",
           "--max-restarts", "0"]
    nodes = [subprocess.Popen(cmd + [f"--node-rank={rank}"] + job, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=timeout)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    from tests.tiny import training_text

    root = tmp_path_factory.mktemp("dist")
    (root / "data.txt").write_text(" ".join(training_text()) * 3)
    torchrun_two_nodes([str(Path(__file__).with_name("distributed_job.py")), str(tiny_model),
                        str(root / "data.txt"), str(root)])
    return root


def test_ddp_equals_one_process_with_the_global_batch(runs, tiny_model):
    single = train(settings(tiny_model, runs / "data.txt", runs / "single", mode="longlora", batch_size=2),
                   log=lambda _: None)
    assert losses(runs / "ddp") == pytest.approx(losses(single), rel=1e-6)
    assert close(weights(runs / "ddp"), weights(single), atol=WEIGHT_ATOL)
    assert json.loads((runs / "ddp" / "run.json").read_text())["world_size"] == 2


def test_fsdp_full_equals_one_process_and_resumes(runs, tiny_model, tmp_path):
    single = train(settings(tiny_model, runs / "data.txt", runs / "single-full", mode="full", batch_size=2),
                   log=lambda _: None)
    assert losses(runs / "fsdp-cut") == pytest.approx(losses(single), rel=1e-6)  # step 2 ran after resuming
    assert close(weights(runs / "fsdp-cut"), weights(single), atol=WEIGHT_ATOL)
    # the resumed FSDP run merges into exactly the weights it saved
    merged = merge(MergeConfig(run=runs / "fsdp-cut", out=tmp_path / "merged"), log=lambda _: None)
    written = load_file(merged / "model.safetensors")
    saved = weights(runs / "fsdp-cut")
    assert saved.keys() <= written.keys() and all(torch.equal(written[k], saved[k]) for k in saved)
    assert json.loads((merged / "config.json").read_text())["longctx"]["trained_context"] == 128


@pytest.mark.parametrize("mode, cut", [("longlora", "ddp-elastic"), ("full", "fsdp-elastic")])
def test_a_two_node_run_resumes_in_one_process(runs, tiny_model, mode, cut):
    """Elastic resume: the same global batch (1 x 1 x 2 processes, then 2 x 1 x 1) gives the same run."""
    straight = train(settings(tiny_model, runs / "data.txt", runs / f"straight-{mode}", mode=mode, batch_size=2),
                     log=lambda _: None)
    resumed = train(settings(tiny_model, runs / "data.txt", runs / cut, mode=mode, batch_size=2, resume=True),
                    log=lambda _: None)
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-6)
    assert close(weights(resumed), weights(straight), atol=WEIGHT_ATOL)


def test_resuming_with_another_global_batch_is_refused(runs, tiny_model):
    from finetune.config import UsageError

    with pytest.raises(UsageError, match="trains 2 sequences per step .* keep --batch-size x --grad-accum"):
        train(settings(tiny_model, runs / "data.txt", runs / "ddp", mode="longlora", max_steps=3, resume=True),
              log=lambda _: None)
