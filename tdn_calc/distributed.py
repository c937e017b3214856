"""Sharding work across processes started by ``torchrun`` (gloo backend, CPU or GPU)."""

from __future__ import annotations

import os
from typing import Any


def world() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment; ``(0, 1)`` outside torchrun.
    Initialises the default process group (gloo) on first use when ``WORLD_SIZE > 1``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def local_rank() -> int:
    """``LOCAL_RANK`` (the GPU index of this process under torchrun), 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` outside torchrun."""
    _, size = world()
    if size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Destroy the process group if one was started."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
