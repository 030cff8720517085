"""PoSE (arXiv 2309.10400 §3): skipped position ids, their determinism, and that training really uses them."""

import json
import shutil

import pytest
import torch
from transformers.models.llama import modeling_llama

from finetune import pose
from finetune.checkpoint import read_run
from finetune.config import TrainConfig, UsageError
from finetune.data import Stream
from finetune.loss import causal_lm_loss
from finetune.model import load_extended
from finetune.train import train
from tests.finetune.test_train import final_weights, metrics, quiet, run_cfg


def draws(window, target, n, seed=0):
    sample = pose.sampler(window, target, seed)
    return [sample(k) for k in range(n)]


def test_positions_increase_stay_below_target_and_reach_its_far_end():
    window, target = 16, 64
    ids = torch.stack(draws(window, target, 3000))  # (n, window)
    assert ids.shape == (3000, window) and (ids[:, 0] == 0).all()
    assert (ids.diff(dim=1) > 0).all() and ids.min() >= 0 and ids.max() < target
    assert ids[:, -1].max() == target - 1 and ids[:, -1].min() == window - 1  # both extremes of the skip
    jumps = (ids.diff(dim=1) > 1).sum(dim=1)
    assert jumps.max() == 1 and jumps.float().mean() > 0.9  # two chunks: one skip, absent only when u = 0
    first = (ids.diff(dim=1) > 1).int().argmax(dim=1) + 1
    assert first[jumps == 1].max() <= window // 2  # the first chunk is at most half the window


def test_positions_are_a_function_of_seed_and_data_position():
    a, b = draws(32, 256, 50), draws(32, 256, 50)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, draws(32, 256, 50, seed=1)))
    assert len({tuple(x.tolist()) for x in a}) > 40


def test_stream_gives_the_same_positions_resumed_and_split_over_ranks():
    samples = [{"input_ids": torch.arange(8) + i, "labels": torch.arange(8) + i} for i in range(5)]
    positions = pose.sampler(8, 64, 7)
    whole = Stream(samples, 2, 7, 0, positions=positions)
    batches = [whole.next() for _ in range(4)]
    resumed = Stream(samples, 2, 7, 0, positions=positions)
    resumed.load_state_dict({"consumed": 4})
    assert torch.equal(resumed.next()["position_ids"], batches[2]["position_ids"])
    ranks = [Stream(samples, 1, 7, 0, rank=r, world=2, positions=positions) for r in (0, 1)]
    assert torch.equal(torch.cat([s.next()["position_ids"] for s in ranks]), batches[0]["position_ids"])


def test_bad_windows_are_refused():
    for bad in (dict(pose_window=16384), dict(pose_window=1), dict(pose_window=64, sft="x.json", data=())):
        with pytest.raises(UsageError, match="pose-window"):
            TrainConfig(**bad)


@pytest.mark.parametrize("chunk", [0, 32])
def test_the_forward_receives_the_skipped_ids(tiny_model, chunk, monkeypatch):
    seen = []
    real = modeling_llama.LlamaRotaryEmbedding.forward
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward",
                        lambda self, x, position_ids: seen.append(position_ids) or real(self, x, position_ids))
    model = load_extended(tiny_model, "linear", 256)
    ids = torch.randint(0, 500, (1, 64))
    skipped = pose.sampler(64, 256, 0)(3)[None]  # (1, 64)
    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}
    plain = causal_lm_loss(model, batch, chunk, model.get_output_embeddings())
    posed = causal_lm_loss(model, {**batch, "position_ids": skipped}, chunk, model.get_output_embeddings())
    assert torch.equal(seen[-1], skipped) and seen[0].max() == 63
    assert not torch.allclose(plain, posed)


def test_two_step_pose_run_with_s2attn_resumes_bit_exactly(tiny_model, corpus, tmp_path, monkeypatch):
    seen = []  # (training?, largest position id) per rotary call
    real = modeling_llama.LlamaRotaryEmbedding.forward
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", lambda self, x, position_ids: (
        seen.append((self.training, int(position_ids.max()))) or real(self, x, position_ids)))
    common = dict(target_length=256, pose_window=64, attention="s2", grad_accum=2, warmup_steps=1, save_every=1,
                  gradient_checkpointing=True, loss_chunk=16)
    straight = train(run_cfg(tiny_model, corpus, tmp_path / "a", max_steps=2, **common), log=quiet)
    info = read_run(straight)
    assert info["pose"] == {"window": 64, "chunks": 2} and info["settings"]["pose_window"] == 64
    assert info["rope_parameters"]["factor"] == 4.0
    assert max(m for training, m in seen if training) > 63  # training windows skip beyond their length
    assert {m for training, m in seen if not training} == {63}  # held-out eval: consecutive positions
    cut = train(run_cfg(tiny_model, corpus, tmp_path / "b", max_steps=1, **common), log=quiet)
    branch = shutil.copytree(cut, tmp_path / "c")  # a copied run folder resumes too: a run continued in a copy
    train(run_cfg(tiny_model, corpus, branch, max_steps=2, resume=True, **common), log=quiet)
    assert [r["loss"] for r in metrics(branch)] == [r["loss"] for r in metrics(straight)]
    a, b = final_weights(straight), final_weights(branch)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_from_before_pose_still_resumes(tiny_model, corpus, tmp_path):
    run = train(run_cfg(tiny_model, corpus, tmp_path / "run", max_steps=1, save_every=1), log=quiet)
    info = json.loads((run / "run.json").read_text())
    del info["settings"]["pose_window"]
    (run / "run.json").write_text(json.dumps(info))
    train(run_cfg(tiny_model, corpus, run, max_steps=2, resume=True), log=quiet)
    assert [r["step"] for r in metrics(run)] == [1, 2]
