"""The run folder: run.json, metrics.jsonl and atomic checkpoints.

    runs/x/run.json                     every setting, base model, RoPE, library versions
    runs/x/metrics.jsonl                one JSON object per step (and per evaluation)
    runs/x/checkpoints/step-000100/     adapter/ (peft, self-contained) or model/ (full fine-tuning),
                                        trainer.pt (optimizer, scheduler, RNG, data position, step)
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from finetune.config import TrainConfig, UsageError
from longctx.home import atomic_dir

# Settings that may change when a run is resumed; any other difference means another run. None changes the
# steps already taken: a run folder moved or copied elsewhere (--out) resumes, e.g. a copy continued to more
# --max-steps, or a constant-rate run's checkpoint branched into a learning-rate decay (--decay-steps).
RESUMABLE_CHANGES = ("max_steps", "decay_steps", "save_every", "resume", "loss_chunk", "out")
LIBRARIES = ("torch", "transformers", "peft", "accelerate")


def settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings as JSON values (paths as strings)."""
    convert = lambda v: [str(x) for x in v] if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v  # noqa: E731
    return {k: convert(v) for k, v in asdict(cfg).items()}


def versions() -> dict[str, str]:
    """Python and library versions, for run.json."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    """Add one step's record to metrics.jsonl."""
    with open(Path(run) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def trim_metrics(run: Path, step: int) -> None:
    """Drop metrics of steps after `step`: an interrupted run logged them, the resumed run redoes them."""
    path = Path(run) / "metrics.jsonl"
    if path.is_file():
        lines = path.read_text().splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


def read_run(run: Path) -> dict[str, Any]:
    """A run folder's run.json, or a UsageError when the folder holds no run."""
    try:
        return json.loads((Path(run) / "run.json").read_text())
    except OSError:
        raise UsageError(f"{run} is not a finetune run folder (no run.json)") from None


def check_resumable(run: Path, cfg: TrainConfig, world: int = 1) -> None:
    """Refuse to resume a run whose settings differ in anything but RESUMABLE_CHANGES.

    The process count may change (elastic resume, e.g. 2 nodes -> 1) when the global batch stays:
    batch_size x grad_accum x processes sequences per step, so each step sees the same samples."""
    info = read_run(run)
    diff = [k for k in changes(info, cfg) if k not in RESUMABLE_CHANGES + ("batch_size", "grad_accum")]
    if diff:
        k = diff[0]
        raise UsageError(f"{run} was started with {k}={info['settings'].get(k)!r}, not {settings(cfg)[k]!r}: "
                         f"it is a different run; use another --out or the same settings")
    old = info["settings"]
    was = (old["batch_size"], old["grad_accum"], int(info.get("world_size", 1)))
    now = (cfg.batch_size, cfg.grad_accum, world)
    if math.prod(was) != math.prod(now):
        raise UsageError(f"{run} trains {math.prod(was)} sequences per step (batch {was[0]} x accumulation "
                         f"{was[1]} x {was[2]} process(es)), not {now[0]} x {now[1]} x {now[2]} = "
                         f"{math.prod(now)}; keep --batch-size x --grad-accum x processes at {math.prod(was)}")


def changes(info: dict[str, Any], cfg: TrainConfig) -> dict[str, list]:
    """The settings `cfg` has otherwise than the run of `info` (run.json): {name: [was, now]}."""
    old, new = info["settings"], settings(cfg)
    defaults = settings(TrainConfig())  # a setting added after the run started had its default value
    return {k: [old.get(k, defaults[k]), v] for k, v in new.items() if old.get(k, defaults[k]) != v}


def record_resume(run: Path, cfg: TrainConfig, step: int) -> None:
    """Write into run.json the settings a resume at `step` changed, so that it says how the run went on."""
    info = read_run(run)
    changed = {k: v for k, v in changes(info, cfg).items() if k in RESUMABLE_CHANGES and k != "resume"}
    if changed:
        info["settings"].update({k: now for k, (_, now) in changed.items()})
        info.setdefault("resumes", []).append({"step": step, "changed": changed})
        write_json(Path(run) / "run.json", info)


def checkpoints(run: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary folders start with a dot and are skipped)."""
    return sorted((Path(run) / "checkpoints").glob("step-*"))


def checkpoint_at(run: Path, step: int | None = None) -> Path:
    """The checkpoint for `step`, or the latest."""
    found = checkpoints(run)
    if step is not None:
        found = [c for c in found if c.name == f"step-{step:06d}"]
    if not found:
        raise UsageError(f"{run} has no checkpoint" + (f" for step {step}" if step is not None else ""))
    return found[-1]


def rng_state() -> dict[str, Any]:
    """Every random generator training touches (torch CPU and CUDA, Python)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run: Path, step: int, model, weights: dict | None, trainer: dict[str, Any], tokenizer) -> Path:
    """Write checkpoint `step` atomically: a peft adapter or a full model, and the trainer state."""
    final = Path(run) / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        if hasattr(model, "peft_config"):
            model.save_pretrained(tmp / "adapter")
        else:
            model.save_pretrained(tmp / "model", state_dict=weights)
            tokenizer.save_pretrained(tmp / "model")
        torch.save(dict(trainer, rng=rng_state()), tmp / "trainer.pt")
    return final


def load_trainer(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's trainer state (optimizer, scheduler, RNG, data position, step); our own file."""
    return torch.load(Path(checkpoint) / "trainer.pt", weights_only=False)
