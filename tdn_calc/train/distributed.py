"""Distributed data parallel (DDP) set-up from the environment ``torchrun`` provides.

``torchrun --nproc_per_node N tdn train config.yaml`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the backend is gloo on CPU and NCCL on
CUDA. Without those variables training runs in a single process.

``TDN_DIST_INIT_METHOD`` replaces the ``env://`` rendezvous (e.g. ``file:///tmp/x/rdzv``: a
file no other job can share, where a TCP port picked in advance may be taken by another
job in the meantime). ``TDN_DIST_TIMEOUT_S`` (default 1800) bounds every collective: a rank
whose partner died or never arrived raises instead of waiting forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (``0``/``1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=float(os.environ.get("TDN_DIST_TIMEOUT_S", "1800")))
        dist.init_process_group(
            backend=backend, init_method=os.environ.get("TDN_DIST_INIT_METHOD", "env://"),
            rank=int(os.environ.get("RANK", "0")), world_size=world, timeout=timeout)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a no-op in one process)."""
    if info.enabled:
        device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend() == "nccl" else torch.device("cpu")
        buffer = tensor.to(device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        tensor.copy_(buffer.to(tensor.device))
    return tensor


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on any rank (all ranks get the same answer)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    return bool(all_reduce_sum(value, info).item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
