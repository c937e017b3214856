"""Batched BFGS, step for step as ``ase.optimize.BFGS``: one dense ``[3n, 3n]`` Hessian per
structure, updated and diagonalised in float64 numpy, ``maxstep`` on the largest atom step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..state import PER_SYSTEM, BatchState


@dataclass(frozen=True)
class BFGSParams:
    """BFGS parameters, defaults as ``ase.optimize.BFGS`` (Å, eV/Å^2)."""

    maxstep: float = 0.2
    alpha: float = 70.0


class BFGSMemory:
    """One structure's BFGS memory: Hessian ``[3n, 3n]`` (eV/Å^2), last positions and forces
    ``[3n]`` (None before the first step)."""

    def __init__(self, n_atoms: int, alpha: float) -> None:
        self.alpha = alpha
        self.hessian = np.eye(3 * n_atoms) * alpha
        self.pos0: np.ndarray | None = None
        self.f0: np.ndarray | None = None

    def step(self, pos: np.ndarray, f: np.ndarray, maxstep: float) -> np.ndarray:
        """The step ``[n, 3]`` Å from positions ``pos`` (Å) and constrained forces ``f``
        (eV/Å), both ``[n, 3]``; no atom moves more than ``maxstep`` Å.

        As ASE's BFGS, except that an update with a zero or non-finite denominator is skipped
        and a non-finite step restarts from the initial Hessian (where ASE would put NaN in
        the positions)."""
        r, g = pos.ravel(), f.ravel()
        if self.pos0 is not None:
            dr = r - self.pos0
            if np.abs(dr).max() >= 1e-7:
                df = g - self.f0
                dg = self.hessian @ dr
                a, b = dr @ df, dr @ dg
                if a != 0.0 and b != 0.0 and np.isfinite(a) and np.isfinite(b):
                    self.hessian -= np.outer(df, df) / a + np.outer(dg, dg) / b
        self.pos0, self.f0 = r.copy(), g.copy()
        omega, v = np.linalg.eigh(self.hessian)
        step = (v @ (g @ v / np.fabs(omega))).reshape(-1, 3)
        if not np.isfinite(step).all():
            self.hessian = np.eye(r.size) * self.alpha
            step = f / self.alpha
        longest = np.sqrt((step**2).sum(1)).max()
        return step * (maxstep / longest) if longest >= maxstep else step


@dataclass(kw_only=True)
class BFGSState(BatchState):
    """:class:`~tdn_calc.relax.state.BatchState` plus one :class:`BFGSMemory` per structure
    (``memory``: a list of ``S``), kept when structures are evicted on out-of-memory."""

    memory: list[BFGSMemory] = field(metadata=PER_SYSTEM)


def bfgs_init(state: BatchState, params: BFGSParams) -> BFGSState:
    """BFGS's start for newly entered structures: Hessian ``alpha * I``, no history."""
    counts = torch.bincount(state.sys, minlength=state.n_systems).tolist()
    return state.extend(BFGSState, memory=[BFGSMemory(n, params.alpha) for n in counts])


def bfgs_step(b: BFGSState, f: torch.Tensor, p: BFGSParams) -> None:
    """One BFGS step in place for every structure of ``b`` (``f``: ``[N, 3]`` constrained
    forces, eV/Å); fixed atoms stay where they are, as ASE's ``FixAtoms`` keeps them."""
    pos = b.pos.detach().cpu().numpy().astype(np.float64)
    force = f.detach().cpu().numpy().astype(np.float64)
    sys = b.sys.cpu().numpy()
    fixed = b.fixed.cpu().numpy()
    step = np.zeros_like(pos)
    for s, memory in enumerate(b.memory):
        sel = sys == s
        step[sel] = memory.step(pos[sel], force[sel], p.maxstep)
    step[fixed] = 0.0
    b.pos = b.pos + torch.as_tensor(step, dtype=b.pos.dtype, device=b.pos.device)
    b.n_steps = b.n_steps + 1
