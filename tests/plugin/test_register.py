"""The vLLM plugin: discoverable, re-entrant, light at import, and wired to vLLM's model classes."""

import subprocess
import sys
from importlib.metadata import entry_points

import plugin


def test_entry_point_is_visible_to_vllm():
    eps = {ep.name: ep for ep in entry_points(group="vllm.general_plugins")}
    assert eps["longctx"].value == "plugin:register"
    assert eps["longctx"].load() is plugin.register


def test_register_is_reentrant():
    from vllm import ModelRegistry

    first = plugin.register()
    second = plugin.register()
    assert first == second == sorted(plugin.ARCHITECTURES)
    assert set(plugin.ARCHITECTURES) <= set(ModelRegistry.get_supported_archs())


def test_import_loads_nothing_heavy():
    code = "import sys, plugin; print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_our_classes_reuse_vllms_families():
    from vllm.model_executor.models.llama import LlamaForCausalLM
    from vllm.model_executor.models.mistral import MistralForCausalLM
    from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
    from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

    from plugin import models

    assert issubclass(models.LongctxLlamaForCausalLM, LlamaForCausalLM)
    assert issubclass(models.LongctxMistralForCausalLM, MistralForCausalLM)
    assert issubclass(models.LongctxQwen2ForCausalLM, Qwen2ForCausalLM)
    assert issubclass(models.LongctxQwen3ForCausalLM, Qwen3ForCausalLM)
    for arch, target in plugin.ARCHITECTURES.items():  # ours, and each family's standard name, to one class
        module, cls = target.split(":")
        assert module == "plugin.models" and cls == "Longctx" + arch.removeprefix("Longctx") and hasattr(models, cls)
    assert {"LlamaForCausalLM", "LongctxLlamaForCausalLM", "Qwen2ForCausalLM"} <= set(plugin.ARCHITECTURES)


def test_the_family_name_changes_nothing_for_other_checkpoints():
    """The plugin serves LlamaForCausalLM for everyone once installed: a checkpoint without our block (here
    Llama 3.1's llama3 scaling, which longctx would refuse to extend) must reach vLLM's class untouched."""
    from transformers import LlamaConfig

    from plugin.models import is_longctx

    llama31 = LlamaConfig(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 8192},
                          architectures=["LlamaForCausalLM"])
    assert not is_longctx(llama31)
    ours = LlamaConfig(architectures=["LlamaForCausalLM"])
    ours.longctx = {"original_context": 128}
    assert is_longctx(ours) and is_longctx(LlamaConfig(architectures=["LongctxLlamaForCausalLM"]))
