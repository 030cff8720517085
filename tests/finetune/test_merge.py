import json

import pytest
import torch
from safetensors.torch import load_file

from finetune.config import MergeConfig, TrainConfig, UsageError
from finetune.merge import MergeError, check_close, merge, sample_ids
from longctx.rope import serving_length
from finetune.train import train
from finetune.lora import load_adapter
from finetune.model import load_extended
from finetune.checkpoint import checkpoint_at


def trained_run(tiny_model, corpus, out, **kw):
    settings = dict(model=tiny_model, data=(corpus,), out=out, target_length=256, attention="full", max_steps=2,
                    rope="linear", grad_accum=1, lr=1e-2, warmup_steps=0, gradient_checkpointing=False)
    return train(TrainConfig(**{**settings, **kw}), log=lambda _: None)


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    from tests.tiny import training_text

    folder = tmp_path_factory.mktemp("data")
    (folder / "t.txt").write_text(" ".join(training_text()) * 4)
    return trained_run(tiny_model, folder, tmp_path_factory.mktemp("runs") / "run")


def test_merged_logits_equal_the_adapter_models(run, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    adapter = load_adapter(load_extended(tiny_model, "linear", 256), checkpoint_at(run) / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = sample_ids(400, 256)
    with torch.no_grad():
        assert (adapter(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max() < 1e-4


def test_merged_folder_carries_the_extended_rope(run, tmp_path):
    from transformers import AutoConfig

    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"] == {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}
    assert config["max_position_embeddings"] == 64 and serving_length(config) == 256
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["longctx"] == {"original_context": 64, "trained_context": 256, "rope_method": "linear",
                                 "rope_factor": 4.0}
    loaded = AutoConfig.from_pretrained(out)  # what transformers (and so vLLM's config reader) sees
    assert loaded.rope_parameters["rope_type"] == "linear" and loaded.rope_parameters["factor"] == 4.0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_merged_model_interpolates_positions(run, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    merged = AutoModelForCausalLM.from_pretrained(out).model.rotary_emb.inv_freq
    base = AutoModelForCausalLM.from_pretrained(tiny_model).model.rotary_emb.inv_freq
    assert torch.allclose(merged, base / 4)  # position interpolation, factor 256 / 64


def test_merge_twice_changes_nothing(run, tmp_path):
    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in out.iterdir()}
    logs = []
    merge(MergeConfig(run=run, out=out), log=logs.append)
    assert "nothing to do" in logs[0]
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in out.iterdir()} == before


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_other_modes_merge_too(tiny_model, corpus, tmp_path, mode):
    run = trained_run(tiny_model, corpus, tmp_path / "run", mode=mode, target_length=128)
    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    assert serving_length(json.loads((out / "config.json").read_text())) == 128


def test_yarn_run_merges_with_target_as_max_positions(tiny_model, corpus, tmp_path):
    run = trained_run(tiny_model, corpus, tmp_path / "run", rope="yarn", target_length=128, max_steps=1)
    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    config = json.loads((out / "config.json").read_text())
    assert config["max_position_embeddings"] == 128
    assert config["rope_parameters"]["original_max_position_embeddings"] == 64


def test_a_gap_beyond_tolerance_is_refused():
    with pytest.raises(MergeError, match="nothing written"):
        check_close(torch.zeros(3), torch.full((3,), 0.1), 1e-3, "x")


@pytest.fixture
def tied_model(tiny_model, tmp_path):
    """The tiny model with lm_head tied to the embeddings, as SmolLM2 (the default model) has it."""
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "tied"
    shutil.copytree(tiny_model, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, tie_word_embeddings=True)))
    return folder


def test_tied_embeddings_train_and_merge_consistently(tied_model, corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    run = trained_run(tied_model, corpus, tmp_path / "run", target_length=128)
    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.lm_head.weight is merged.model.embed_tokens.weight
    adapter = load_adapter(load_extended(tied_model, "linear", 128), checkpoint_at(run) / "adapter").eval()
    ids = sample_ids(400, 128)
    with torch.no_grad():
        assert (adapter(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max() < 1e-4


@pytest.mark.parametrize("family", ["qwen2", "mistral", "qwen3"])
def test_other_families_train_and_merge(family, tiny_model, corpus, tmp_path):
    from tests.finetune.conftest import make_family_checkpoint

    base = make_family_checkpoint(tmp_path / family, family, tiny_model)
    run = trained_run(base, corpus, tmp_path / "run", target_length=128, max_steps=1)
    out = merge(MergeConfig(run=run, out=tmp_path / "merged"), log=lambda _: None)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [{"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
                                        "qwen3": "Qwen3ForCausalLM"}[family]]
    assert serving_length(config) == 128


def test_a_folder_holding_other_things_is_never_replaced(run, tmp_path, capsys):
    from finetune.__main__ import main

    other = tmp_path / "other-model"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (other / "config.json").write_text("{}")
    assert main(["merge", str(run), "--out", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not empty and holds no earlier merge" in err and len(err.splitlines()) == 1
    assert sorted(f.name for f in other.iterdir()) == ["config.json", "notes.txt"]
    assert (other / "notes.txt").read_text() == "mine"


def test_the_run_and_the_base_and_their_parents_are_refused(run, tiny_model, tmp_path):
    for out in (run, run.parent, tiny_model, tiny_model.parent):
        before = sorted(p.name for p in out.iterdir())
        with pytest.raises(UsageError, match="would replace"):
            merge(MergeConfig(run=run, out=out), log=lambda _: None)
        assert sorted(p.name for p in out.iterdir()) == before


def test_an_earlier_merge_of_the_same_run_is_replaced(tiny_model, corpus, tmp_path):
    run = trained_run(tiny_model, corpus, tmp_path / "run", target_length=128, save_every=1)
    out = tmp_path / "merged"
    merge(MergeConfig(run=run, out=out, step=1), log=lambda _: None)
    merge(MergeConfig(run=run, out=out), log=lambda _: None)  # the newer checkpoint into the same folder
    assert json.loads((out / "longctx_merge.json").read_text())["checkpoint"] == "step-000002"
    another = trained_run(tiny_model, corpus, tmp_path / "another", target_length=128, max_steps=1)
    with pytest.raises(UsageError, match="no earlier merge of"):
        merge(MergeConfig(run=another, out=out), log=lambda _: None)
