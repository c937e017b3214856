"""Batched FIRE, step for step as ``ase.optimize.FIRE`` (same defaults, per-structure time
step, mixing and ``maxstep`` on the whole structure's step), in torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..state import PER_ATOM, PER_SYSTEM, BatchState


@dataclass(frozen=True)
class FireParams:
    """FIRE parameters, defaults as ``ase.optimize.FIRE`` (time in ASE units, Å)."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    n_min: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


@dataclass(kw_only=True)
class FireState(BatchState):
    """:class:`~tdn_calc.relax.state.BatchState` plus FIRE's memory.

    Attributes:
        vel: ``[N, 3]`` velocities, Å per ASE time unit.
        dt: ``[S]`` time steps, ASE time units.
        alpha: ``[S]`` mixing factors.
        n_pos: ``[S]`` steps since the last uphill move.
        started: ``[S]`` bool, False before a structure's first step.
    """

    vel: torch.Tensor = field(metadata=PER_ATOM)
    dt: torch.Tensor = field(metadata=PER_SYSTEM)
    alpha: torch.Tensor = field(metadata=PER_SYSTEM)
    n_pos: torch.Tensor = field(metadata=PER_SYSTEM)
    started: torch.Tensor = field(metadata=PER_SYSTEM)


def fire_init(state: BatchState, params: FireParams) -> FireState:
    """FIRE's start for newly entered structures: zero velocity, ``dt`` and ``astart``."""
    s, dtype, device = state.n_systems, state.pos.dtype, state.pos.device
    return state.extend(
        FireState,
        vel=torch.zeros_like(state.pos),
        dt=torch.full((s,), params.dt, dtype=dtype, device=device),
        alpha=torch.full((s,), params.astart, dtype=dtype, device=device),
        n_pos=torch.zeros(s, dtype=torch.long, device=device),
        started=torch.zeros(s, dtype=torch.bool, device=device),
    )


def fire_step(b: FireState, f: torch.Tensor, p: FireParams) -> None:
    """One FIRE step in place (``f``: ``[N, 3]`` constrained forces, eV/Å), as ASE's FIRE."""
    sys = b.sys
    vf = b.ssum((f * b.vel).sum(1))
    ff = b.ssum((f * f).sum(1))
    vv = b.ssum((b.vel * b.vel).sum(1))
    mix = b.started & (vf > 0)
    reset = b.started & ~(vf > 0)
    scale = torch.where(ff > 0, torch.sqrt(vv) / torch.sqrt(ff.clamp_min(1e-300)), 0.0)
    mixed = (1 - b.alpha)[sys, None] * b.vel + (b.alpha * scale)[sys, None] * f
    vel = torch.where(mix[sys, None], mixed, b.vel)
    grow = mix & (b.n_pos > p.n_min)
    b.dt = torch.where(grow, (b.dt * p.finc).clamp(max=p.dtmax), b.dt)
    b.alpha = torch.where(grow, b.alpha * p.fa, b.alpha)
    b.n_pos = torch.where(mix, b.n_pos + 1, b.n_pos)
    vel = torch.where(reset[sys, None], torch.zeros_like(vel), vel)
    b.alpha = torch.where(reset, torch.full_like(b.alpha, p.astart), b.alpha)
    b.dt = torch.where(reset, b.dt * p.fdec, b.dt)
    b.n_pos = torch.where(reset, torch.zeros_like(b.n_pos), b.n_pos)
    b.started = torch.ones_like(b.started)
    vel = vel + b.dt[sys, None] * f
    dr = b.dt[sys, None] * vel
    norm = torch.sqrt(b.ssum((dr * dr).sum(1)))
    factor = torch.where(norm > p.maxstep, p.maxstep / norm.clamp_min(1e-300), 1.0)
    b.vel = vel
    b.pos = b.pos + factor[sys, None] * dr
    b.n_steps = b.n_steps + 1
