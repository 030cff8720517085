"""Run under `torchrun --nproc-per-node 2` by test_distributed.py: the runs it compares, in one launch
(starting Python, torch and peft in two processes costs more than the training itself)."""

import sys
from pathlib import Path

from finetune import distributed
from finetune.config import TrainConfig
from finetune.train import train


def settings(model: str, data: str, out: Path, **kw) -> TrainConfig:
    base = dict(model=Path(model), data=(Path(data),), out=out, target_length=128, attention="full", max_steps=2,
                grad_accum=1, lr=1e-2, warmup_steps=0, save_every=1, gradient_checkpointing=False)
    return TrainConfig(**{**base, **kw})


if __name__ == "__main__":
    model, data, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    quiet = lambda _: None  # noqa: E731
    train(settings(model, data, root / "ddp", mode="longlora"), log=quiet)
    train(settings(model, data, root / "fsdp-cut", mode="full", max_steps=1), log=quiet)
    train(settings(model, data, root / "fsdp-cut", mode="full", resume=True), log=quiet)
    distributed.finish(distributed.init())
