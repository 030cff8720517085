"""vLLM general plugin: registers longctx's architecture names (entry point group `vllm.general_plugins`).

vLLM calls `register()` in every process it starts (API server, engine core, workers), possibly more
than once: it must be re-entrant and import nothing heavy. The model classes are named by lazy strings.
"""

from longctx.archs import FAMILIES, PREFIX

# architecture name -> "module:Class" of the model that serves it: our own names (earlier checkpoints, and
# what `python -m serve` asks for), and each family's standard name (merged checkpoints), which we take over
# from vLLM's registry with a subclass that changes nothing for checkpoints without the longctx block
ARCHITECTURES = {name: f"plugin.models:{PREFIX}{arch}" for arch in FAMILIES.values() for name in (PREFIX + arch, arch)}


def register() -> list[str]:
    """Register our architectures with vLLM's ModelRegistry (again on every call: vLLM calls this in each
    of its processes, and a later plugin must not silently keep the family names); returns the names."""
    from vllm import ModelRegistry

    for arch, target in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
    return sorted(ARCHITECTURES)
