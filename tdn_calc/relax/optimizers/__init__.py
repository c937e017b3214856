"""Batched optimizers as ``(init, step)`` pairs behind one registry (cf. TorchSim's
``OPTIM_REGISTRY``).

``init(state, params)`` turns the :class:`~tdn_calc.relax.state.BatchState` of structures
entering the batch into the optimizer's own state class (a subclass with its memory);
``step(state, forces, params)`` moves every structure of the batch one step in place
(``forces``: ``[N, 3]`` constrained forces, eV/Å). To add an optimizer, write its module with
a params dataclass, a state subclass and the pair, and register it in :data:`OPTIM_REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from ...errors import InputError
from ..state import BatchState
from .bfgs import BFGSMemory, BFGSParams, BFGSState, bfgs_init, bfgs_step
from .fire import FireParams, FireState, fire_init, fire_step


class BatchOptimizer(NamedTuple):
    """One batched optimizer: its ``init`` and ``step`` functions and its params class."""

    init: Callable[[BatchState, Any], BatchState]
    step: Callable[[Any, torch.Tensor, Any], None]
    params: type


#: Batched optimizers by canonical name (the names ASE gives the same algorithms).
OPTIM_REGISTRY: dict[str, BatchOptimizer] = {
    "FIRE": BatchOptimizer(fire_init, fire_step, FireParams),
    "BFGS": BatchOptimizer(bfgs_init, bfgs_step, BFGSParams),
}

#: Names of the batched optimizers, as :func:`tdn_calc.relax.options.choose_optimizer` takes.
BATCH_OPTIMIZERS = tuple(OPTIM_REGISTRY)


def get_optimizer(name: str) -> BatchOptimizer:
    """The registered optimizer ``name`` (canonical, e.g. from ``choose_optimizer``).

    Raises:
        InputError: not registered (listing the registered ones).
    """
    if name not in OPTIM_REGISTRY:
        raise InputError(f"no batched optimizer {name!r}; registered: {', '.join(OPTIM_REGISTRY)}")
    return OPTIM_REGISTRY[name]


__all__ = [
    "BATCH_OPTIMIZERS",
    "OPTIM_REGISTRY",
    "BFGSMemory",
    "BFGSParams",
    "BFGSState",
    "BatchOptimizer",
    "FireParams",
    "FireState",
    "bfgs_init",
    "bfgs_step",
    "fire_init",
    "fire_step",
    "get_optimizer",
]
