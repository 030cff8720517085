import json
import math

import pytest
import torch
from safetensors.torch import load_file

from longctx import hardware
from finetune.checkpoint import checkpoint_at, checkpoints, read_run
from finetune.config import TrainConfig, UsageError
from finetune.train import lr_factor, train, use_bf16


def quiet(_):
    pass


def run_cfg(tiny_model, corpus, out, **kw):
    settings = dict(model=tiny_model, data=(corpus,), out=out, target_length=128, attention="full", max_steps=3,
                    rope="linear", grad_accum=1, lr=3e-3, warmup_steps=0, save_every=100, gradient_checkpointing=False,
                    precision="fp32")  # the bf16 path has its own tests below
    return TrainConfig(**{**settings, **kw})


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_three_steps_write_run_metrics_and_checkpoint(tiny_model, corpus, tmp_path):
    run = train(run_cfg(tiny_model, corpus, tmp_path / "run", gradient_checkpointing=True), log=quiet)
    info = read_run(run)
    assert info["rope_parameters"] == {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    assert info["settings"]["mode"] == "longlora" and "torch" in info["versions"]
    assert info["data"]["files"] == 3 and len(info["data"]["tokens_sha256"]) == 16
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in rows)
    assert rows[-1]["eval_loss"] is not None
    ckpt = checkpoint_at(run)
    assert ckpt.name == "step-000003" and (ckpt / "adapter" / "adapter_config.json").is_file()


def test_loss_falls_on_repeated_data(tiny_model, tmp_path):
    (tmp_path / "one.txt").write_text("The grass is green. The sky is blue. " * 40)
    run = train(run_cfg(tiny_model, tmp_path / "one.txt", tmp_path / "run", max_steps=4, eval_fraction=0),
                log=quiet)
    losses = [r["loss"] for r in metrics(run)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def final_weights(run):
    ckpt = checkpoint_at(run)
    folder = ckpt / "adapter" if (ckpt / "adapter").is_dir() else ckpt / "model"
    return load_file(next(folder.glob("*.safetensors")))


@pytest.mark.parametrize("mode", ["longlora", "full"])
def test_resume_gives_the_same_weights(tiny_model, corpus, tmp_path, mode):
    common = dict(mode=mode, grad_accum=2 if mode == "longlora" else 1, warmup_steps=2, save_every=2)
    straight = train(run_cfg(tiny_model, corpus, tmp_path / "a", max_steps=4, **common), log=quiet)
    cut = train(run_cfg(tiny_model, corpus, tmp_path / "b", max_steps=2, **common), log=quiet)
    with open(cut / "metrics.jsonl", "a") as f:  # interrupted after logging step 3, before its checkpoint
        f.write(json.dumps({"step": 3, "loss": 0.0}) + "\n")
    train(run_cfg(tiny_model, corpus, cut, max_steps=4, resume=True, **common), log=quiet)
    assert [r["step"] for r in metrics(cut)] == [1, 2, 3, 4] and metrics(cut)[2]["loss"] > 0
    a, b = final_weights(straight), final_weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [c.name for c in checkpoints(cut)] == ["step-000002", "step-000004"]


def test_learning_rate_warms_up_holds_then_decays_until_the_last_step():
    cfg = TrainConfig(max_steps=10, warmup_steps=2, decay_steps=4)
    assert [lr_factor(s, cfg) for s in range(10)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    assert [lr_factor(s, TrainConfig(max_steps=10, warmup_steps=0)) for s in range(10)] == [1.0] * 10


def test_a_decay_branched_from_a_constant_run_is_the_run_with_that_decay(tiny_model, corpus, tmp_path):
    common = dict(grad_accum=2, save_every=2)
    straight = train(run_cfg(tiny_model, corpus, tmp_path / "a", max_steps=4, decay_steps=3, **common), log=quiet)
    branch = train(run_cfg(tiny_model, corpus, tmp_path / "b", max_steps=2, **common), log=quiet)  # constant
    train(run_cfg(tiny_model, corpus, branch, max_steps=4, decay_steps=3, resume=True, **common), log=quiet)
    assert [r["lr"] for r in metrics(branch)] == [r["lr"] for r in metrics(straight)] == pytest.approx(
        [3e-3, 3e-3, 2e-3, 1e-3])  # 1, 1, 2/3 and 1/3 of --lr
    a, b = final_weights(straight), final_weights(branch)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = read_run(branch)
    assert info["settings"]["decay_steps"] == 3 and info["settings"]["max_steps"] == 4
    assert info["resumes"] == [{"step": 2, "changed": {"max_steps": [2, 4], "decay_steps": [0, 3]}}]


def test_resume_of_another_run_is_refused(tiny_model, corpus, tmp_path):
    run = train(run_cfg(tiny_model, corpus, tmp_path / "run", max_steps=1), log=quiet)
    with pytest.raises(UsageError, match="different run"):
        train(run_cfg(tiny_model, corpus, run, max_steps=2, lr=1e-4, resume=True), log=quiet)
    with pytest.raises(UsageError, match="already holds a run"):
        train(run_cfg(tiny_model, corpus, run, max_steps=2), log=quiet)


def test_sft_run_with_padding_under_s2attn(tiny_model, tmp_path):
    sft = tmp_path / "sft.json"
    sft.write_text(json.dumps([{"instruction": "Colour of the sky?", "output": "Blue."},
                               {"instruction": "Say", "input": "the pass key", "output": "12345 " * 9}] * 2))
    run = train(run_cfg(tiny_model, None, tmp_path / "run", data=(), sft=sft, batch_size=2, max_steps=2,
                        attention="s2", save_every=1), log=quiet)
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and math.isfinite(r["eval_loss"]) for r in rows)
    # padding carried no loss and no NaN into the weights, and the adapter learnt something
    first, last = (load_file(next((c / "adapter").glob("*.safetensors"))) for c in checkpoints(run))
    assert all(torch.isfinite(t).all() for t in last.values())
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_bf16_autocast_run(tiny_model, corpus, tmp_path):
    run = train(run_cfg(tiny_model, corpus, tmp_path / "run", precision="bf16", max_steps=1), log=quiet)
    assert read_run(run)["precision"] == "bf16" and torch.isfinite(torch.tensor(metrics(run)[0]["loss"]))


def test_bf16_only_with_native_support(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(hardware.DTYPE_ENV, raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    assert not use_bf16("auto", cpu) and use_bf16("bf16", cpu)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert use_bf16("auto", cpu) and not use_bf16("fp32", cpu)
    monkeypatch.setenv(hardware.DTYPE_ENV, "float32")  # the override beats the flags, both ways
    assert not use_bf16("auto", cpu) and use_bf16("bf16", cpu)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setenv(hardware.DTYPE_ENV, "bfloat16")
    assert use_bf16("auto", cpu)


def test_run_json_records_the_precision_and_why(tiny_model, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv(hardware.DTYPE_ENV, "float32")
    info = read_run(train(run_cfg(tiny_model, corpus, tmp_path / "run", precision="auto", max_steps=1), log=quiet))
    assert info["precision"] == "fp32" and info["precision_chosen_by"] == "LONGCTX_DTYPE"
    assert set(info["cpu_flags"]) <= set(hardware.REPORTED_FLAGS)


@pytest.mark.parametrize("mode", ["longlora", "lora"])
def test_s2attn_run_at_4x_context_loss_finite_and_falling(tiny_model, tmp_path, mode):
    """Three steps at 4x the tiny model's context with S²-Attn, on repeated data."""
    (tmp_path / "one.txt").write_text("The grass is green. The sky is blue. " * 80)
    cfg = run_cfg(tiny_model, tmp_path / "one.txt", tmp_path / "run", attention="s2", target_length=256,
                  mode=mode, eval_fraction=0, gradient_checkpointing=True)
    losses = [r["loss"] for r in metrics(train(cfg, log=quiet))]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_s2attn_refuses_only_head_layouts_it_cannot_split(tmp_path, corpus):
    from tests.tiny import make_tiny_checkpoint

    from transformers import AutoModelForCausalLM, LlamaConfig

    from finetune.train import use_s2attn

    one_head = make_tiny_checkpoint(tmp_path / "one", context=64, hidden=32, heads=1, kv_heads=1)
    with pytest.raises(UsageError, match="use --attention full"):
        train(run_cfg(one_head, corpus, tmp_path / "run", attention="s2"), log=quiet)
    assert not (tmp_path / "run").exists()
    smol_like = LlamaConfig(num_attention_heads=9, num_key_value_heads=3, hidden_size=288, num_hidden_layers=1,
                            intermediate_size=64, vocab_size=64)
    model = AutoModelForCausalLM.from_config(smol_like)
    use_s2attn(model, 0.25)  # SmolLM2's 9 on 3 heads: accepted, and S² really runs in training mode
    assert model.config._attn_implementation == "longctx_s2"
    ids = torch.randint(0, 64, (1, 32))
    model.train()
    trained = model(ids).logits
    model.eval()  # evaluation is full attention: S² (groups of 8 here) gives other outputs
    assert not torch.allclose(trained, model(ids).logits, atol=1e-4)


def test_a_sliding_window_shorter_than_the_target_is_refused_before_anything_is_written(tiny_model, corpus,
                                                                                         tmp_path):
    """Mistral-7B-v0.1 attends within 4096 tokens: S²-Attn cannot train it at 32k, and says so up front."""
    from tests.finetune.conftest import make_family_checkpoint

    base = make_family_checkpoint(tmp_path / "mistral", "mistral", tiny_model)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps(dict(config, sliding_window=32)))
    out = tmp_path / "run"
    with pytest.raises(UsageError, match="sliding window of 32 tokens.*--attention full"):
        train(run_cfg(base, corpus, out, attention="s2", max_steps=1), log=quiet)
    assert not out.exists()
    run = train(run_cfg(base, corpus, out, attention="full", max_steps=1), log=quiet)  # the same --out
    assert math.isfinite(metrics(run)[0]["loss"])
