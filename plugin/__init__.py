"""vLLM general plugin: registers longctx's architecture names (entry point group `vllm.general_plugins`).

vLLM calls `register()` in every process it starts (API server, engine core, workers), possibly more
than once: it must be re-entrant and import nothing heavy. The model classes are named by lazy strings.
"""

ARCHITECTURES = {
    # our architecture name -> "module:Class" of the model that serves it
    "LongctxLlamaForCausalLM": "plugin.models:LongctxLlamaForCausalLM",
    "LongctxMistralForCausalLM": "plugin.models:LongctxMistralForCausalLM",
    "LongctxQwen2ForCausalLM": "plugin.models:LongctxQwen2ForCausalLM",
}


def register() -> list[str]:
    """Register our architectures with vLLM's ModelRegistry; returns the names now registered."""
    from vllm import ModelRegistry

    known = set(ModelRegistry.get_supported_archs())
    for arch, target in ARCHITECTURES.items():
        if arch not in known:
            ModelRegistry.register_model(arch, target)
    return sorted(ARCHITECTURES)
