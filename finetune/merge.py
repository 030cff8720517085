"""`finetune merge`: fold a run's LoRA (and trained embeddings and norms) into the base weights and write
a standalone checkpoint that vLLM serves at the trained length.

Driven by the run's run.json, never by guesses. Unlike LongLoRA's merge script, config.json gets the
extended RoPE (its absence made released models generate garbage, LongLoRA issue #181), our plugin
architecture and the metadata block. Nothing is written until the result is verified."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch

from finetune.checkpoint import checkpoint_at, read_run, write_json
from finetune.config import MergeConfig, UsageError
from longctx.default_model import mark_as_longctx
from longctx.home import atomic_dir
from finetune.lora import load_adapter
from finetune.model import extended_config, load_extended, load_tokenizer
from longctx.rope import META_KEY, check_config, serving_length

STAMP = "longctx_merge.json"  # which checkpoint a merged folder came from (makes a re-run a no-op)
SAMPLE_TOKENS = 512  # verification sample: long enough to use interpolated positions, short enough for CPU


class MergeError(UsageError):
    """The merged model would not match the trained one; nothing was written."""


def merge(cfg: MergeConfig, log: Callable[[str], None] = print) -> Path:
    """Write the merged checkpoint of `cfg.run` to `cfg.out`; a second identical call changes nothing."""
    info = read_run(cfg.run)
    s, base_dir = info["settings"], Path(info["base_model"])
    ckpt = checkpoint_at(cfg.run, cfg.step)
    stamp = {"run": str(Path(cfg.run).resolve()), "checkpoint": ckpt.name, "weights_sha256": weights_digest(ckpt)}
    if already_merged(Path(cfg.out), stamp):
        log(f"{cfg.out} already holds {ckpt.name} of {cfg.run}; nothing to do")
        return Path(cfg.out)
    check_out(Path(cfg.out), Path(cfg.run), base_dir)  # before anything slow; the merge replaces --out whole
    config = final_config(base_dir, s["rope"], s["target_length"])
    model = trained_model(ckpt, base_dir, s["rope"], s["target_length"], s["mode"])
    sample = sample_ids(len(load_tokenizer(base_dir)), min(SAMPLE_TOKENS, s["target_length"]))
    expected = logits(model, sample)
    merged = model.merge_and_unload() if s["mode"] != "full" else model  # folds LoRA in place
    check_close(expected, logits(merged, sample), cfg.tolerance, "merged model vs adapter model")
    merged = merged.to(dtype_of(config))
    with atomic_dir(Path(cfg.out)) as tmp:
        merged.save_pretrained(tmp)
        load_tokenizer(base_dir).save_pretrained(tmp)
        write_config(tmp, config)
        reloaded = reload(tmp)  # what a server will read: weights and config.json as written
        check_close(logits(merged, sample), logits(reloaded, sample), cfg.tolerance, "written folder vs merged model")
        write_json(tmp / STAMP, stamp)
    log(f"merged {ckpt.name} of {cfg.run} into {cfg.out}: serves {serving_length(config)} tokens")
    return Path(cfg.out)


def final_config(base_dir: Path, method: str, target: int) -> dict[str, Any]:
    """The base config.json with extended RoPE, checked to serve exactly `target` tokens by vLLM's rule."""
    config = extended_config(base_dir, method, target)
    if serving_length(config) != target:
        raise MergeError(f"config would serve {serving_length(config)} tokens, not the trained {target}")
    check_config(config)
    return config


def trained_model(ckpt: Path, base_dir: Path, method: str, target: int, mode: str):
    """The model as trained: base + adapter (with its embeddings and norms), or the full checkpoint."""
    if mode == "full":
        return load_extended(ckpt / "model", method, target).eval()
    return load_adapter(load_extended(base_dir, method, target), ckpt / "adapter").eval()


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """Overlay the RoPE, length and metadata on what save_pretrained wrote; name our plugin architecture."""
    path = folder / "config.json"
    saved = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("rope_scaling", "rope_theta")}
    for key in ("rope_parameters", "max_position_embeddings", META_KEY):
        saved[key] = config[key]
    saved["use_cache"] = True  # training turned it off
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    meta = config[META_KEY]
    mark_as_longctx(folder, meta["original_context"], meta["trained_context"], meta["rope_method"],
                    meta["rope_factor"])
    check_config(json.loads(path.read_text()))


def reload(folder: Path):
    """Load a written folder as a server would: its config.json and weights, nothing from memory."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype_of(json.loads((folder / "config.json").read_text())))


def dtype_of(config: dict[str, Any]) -> torch.dtype:
    """The base checkpoint's dtype (merged weights are stored like the base's)."""
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name) if name in ("float32", "bfloat16", "float16") else torch.float32


def sample_ids(vocab: int, length: int) -> torch.Tensor:
    """A fixed pseudo-random token sample (1, length)."""
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits (1, T, vocab) of a forward pass without gradients."""
    return model(input_ids=ids).logits.float()


def check_close(a: torch.Tensor, b: torch.Tensor, tolerance: float, what: str) -> None:
    """Raise MergeError when the largest |a - b| exceeds the tolerance (NaN fails too)."""
    gap = float((a - b).abs().max())
    if not gap <= tolerance:
        raise MergeError(f"{what}: logits differ by {gap:.2e} > tolerance {tolerance:.0e}; nothing written")


def weights_digest(ckpt: Path) -> str:
    """SHA-256 over a checkpoint's safetensors files: which trained weights a merged folder holds."""
    h = hashlib.sha256()
    for f in sorted(Path(ckpt).rglob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def check_out(out: Path, run: Path, base_dir: Path) -> None:
    """Refuse an --out whose replacement would delete anything but an earlier merge of this same run:
    a non-empty folder without our stamp, a file, the run, the base model, or a folder holding either."""
    target = out.resolve()
    for kept, what in ((run.resolve(), "the run folder"), (base_dir.resolve(), "the base model")):
        if target == kept or target in kept.parents:
            raise UsageError(f"--out {out} would replace {what} {kept}; choose a new folder for the merge")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out} exists and is not a folder; choose a new folder for the merge")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        earlier = json.loads((out / STAMP).read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != str(run.resolve()):
        raise UsageError(f"--out {out} is not empty and holds no earlier merge of {run}; "
                         f"choose a new or empty folder (nothing was changed)")


def already_merged(out: Path, stamp: dict[str, str]) -> bool:
    """Whether `out` is a finished merge of exactly this checkpoint."""
    try:
        return json.loads((out / STAMP).read_text()) == stamp and (out / "config.json").is_file()
    except (OSError, ValueError):
        return False
