"""Data-parallel training on torch.distributed's own engines: DDP for adapter modes (few trainable
weights, replicated), FSDP2 `fully_shard` for full fine-tuning (weights and optimizer state sharded).

The same `finetune train` command runs alone or under `torchrun --nproc-per-node N`; torchrun's
environment variables decide. CPU runs use the gloo backend, CUDA runs NCCL."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init() -> Dist:
    """Join the process group when launched by torchrun; a plain process is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if world == 1:
        return Dist(device=device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world, device)


def wrap(model: torch.nn.Module, mode: str, d: Dist) -> torch.nn.Module:
    """DDP or FSDP2 around the model when there is more than one process; the model itself otherwise."""
    if d.world == 1:
        return model
    if mode != "full":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:  # one FSDP unit per decoder layer, then the rest
        fully_shard(layer)
    fully_shard(model)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module DDP wraps (FSDP2 shards in place, so there is nothing to unwrap)."""
    return getattr(model, "module", model)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 shards this model."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict | None, dict]:
    """(model weights or None when not sharded, optimizer state), whole, on the CPU of every rank."""
    if not is_sharded(model):
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=options)


def load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore an optimizer from `full_state`'s form (each rank loads the whole state, keeps its shard)."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def mean(value: float, d: Dist) -> float:
    """The mean of a scalar over all processes."""
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / d.world


@contextmanager
def main_first(d: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. to fill a cache), then the others."""
    if not d.main:
        barrier(d)
    yield
    if d.main:
        barrier(d)


def barrier(d: Dist) -> None:
    """Wait for every process (no-op alone)."""
    if d.world > 1:
        dist.barrier()


def finish(d: Dist) -> None:
    """Leave the process group, if this process joined one."""
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
