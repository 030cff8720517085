import pytest
import torch
from safetensors.torch import load_file

from finetune.lora import apply_mode, load_adapter, trainable_count
from finetune.model import load_extended


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_longlora_trains_lora_embeddings_and_every_norm(tiny_model):
    model = apply_mode(load_extended(tiny_model, "linear", 128), "longlora")
    names = trainable_names(model)
    assert sum("lora_A" in n for n in names) == 2 * 4  # q,k,v,o in 2 layers
    assert any("embed_tokens.modules_to_save" in n for n in names)
    assert sum("layernorm.modules_to_save" in n for n in names) == 2 * 2
    assert any(n.endswith("model.norm.modules_to_save.default.weight") for n in names)
    assert not any("lm_head" in n or "mlp" in n for n in names)  # LongLoRA trains no lm_head for Llama


def test_lora_trains_only_lora(tiny_model):
    names = trainable_names(apply_mode(load_extended(tiny_model, "linear", 128), "lora"))
    assert names and all("lora_" in n for n in names)


def test_full_trains_everything(tiny_model):
    trainable, total = trainable_count(apply_mode(load_extended(tiny_model, "linear", 128), "full"))
    assert trainable == total


def test_adapter_folder_is_self_contained_and_reloads_alone(tiny_model, tmp_path):
    torch.manual_seed(0)
    model = apply_mode(load_extended(tiny_model, "linear", 128), "longlora")
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("embed_tokens" in k for k in saved) and any("norm" in k for k in saved)
    x = torch.randint(0, 400, (1, 100))
    model.eval()
    again = load_adapter(load_extended(tiny_model, "linear", 128), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)


@pytest.mark.parametrize("method, factor", [("linear", 2.0), ("dynamic", 2.0)])
def test_loaded_model_carries_extended_rope(tiny_model, method, factor):
    model = load_extended(tiny_model, method, 128)
    assert model.config.rope_parameters["rope_type"] == method
    assert model.config.rope_parameters["factor"] == factor
    if method == "linear":  # position interpolation divides the inverse frequencies by the factor
        base = load_extended(tiny_model, "linear", 256).model.rotary_emb.inv_freq
        assert torch.allclose(model.model.rotary_emb.inv_freq * 2, base * 4)
