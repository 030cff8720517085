"""Run under torchrun by test_distributed.py, as two nodes of one process each on 127.0.0.1 (c10d
rendezvous): the runs it compares, in one launch (starting Python, torch and peft in two processes costs
more than the training itself)."""

import sys
from pathlib import Path

from finetune.__main__ import main
from finetune.config import TrainConfig
from finetune.train import train


def settings(model: str, data: str, out: Path, **kw) -> TrainConfig:
    base = dict(model=Path(model), data=(Path(data),), out=out, target_length=128, attention="full", max_steps=2,
                grad_accum=1, lr=1e-2, warmup_steps=0, save_every=1, gradient_checkpointing=False,
                precision="fp32")  # one process against two: numbers compared, so float32 on every CPU
    return TrainConfig(**{**base, **kw})


def as_flags(cfg: TrainConfig) -> list[str]:
    """The same settings as `finetune train` flags."""
    return ["train", "--model", str(cfg.model), "--data", *map(str, cfg.data), "--out", str(cfg.out),
            "--target-length", str(cfg.target_length), "--attention", cfg.attention, "--max-steps",
            str(cfg.max_steps), "--grad-accum", str(cfg.grad_accum), "--lr", str(cfg.lr), "--warmup-steps", "0",
            "--save-every", str(cfg.save_every), "--no-gradient-checkpointing", "--mode", cfg.mode,
            "--precision", cfg.precision]


if __name__ == "__main__":
    model, data, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    quiet = lambda _: None  # noqa: E731
    train(settings(model, data, root / "fsdp-cut", mode="full", max_steps=1), log=quiet)
    train(settings(model, data, root / "fsdp-cut", mode="full", resume=True), log=quiet)
    # cut after one step at 2 processes: the test resumes them in one process (elastic resume)
    train(settings(model, data, root / "fsdp-elastic", mode="full", max_steps=1), log=quiet)
    train(settings(model, data, root / "ddp-elastic", mode="longlora", max_steps=1), log=quiet)
    # last, through the CLI exactly as a user runs it (it ends the process group)
    sys.exit(main(as_flags(settings(model, data, root / "ddp", mode="longlora"))))
