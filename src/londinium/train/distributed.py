"""One process or many: the same `train()` under `python -m londinium` or `torchrun`.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous address); when they are present we
join the process group with NCCL on GPUs and gloo on CPUs, and wrap the model in DDP. Only rank 0
writes files or prints; the others compute. The helpers below are no-ops on a single process, so the
trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from londinium.errors import LondiniumError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: torch.device) -> Dist:
    """Join the process group torchrun prepared (if any). Call once per process, before the model."""
    if not launched_by_torchrun():
        return Dist()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise LondiniumError("RANK/WORLD_SIZE/LOCAL_RANK are set but not integers; launch with torchrun") from None
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # A generous timeout: rank 0 writes checkpoints and evaluates while the others wait.
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return Dist(rank=rank, local_rank=local_rank, world_size=world)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(t: torch.Tensor, d: Dist, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum or max); identity on one process."""
    if d.enabled:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t


def gather_to_main(obj: Any, d: Dist) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (a list indexed by rank), None elsewhere. Used for per-rank RNG and
    loader state, so that only rank 0 writes the checkpoint but it can restore every rank."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    # all_gather_object rather than gather_object: NCCL has no gather of objects on every version.
    dist.all_gather_object(out, obj)
    return out if d.is_main else None


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
