"""Batched relaxation of many structures on a TDN model: :func:`batch_relax`.

Every step evaluates all active structures as one :class:`~tdn_calc.atomic_graph.AtomicGraph`
and moves them with a registered batched optimizer (:mod:`tdn_calc.relax.optimizers`: FIRE
or BFGS, matching ASE's to round-off for the same model). Each structure converges on its own
(max force < ``fmax``) and leaves the batch; waiting structures take its place. ``FixAtoms``
constraints are respected. Neighbour lists are built with ``cutoff + skin`` and filtered to
the cutoff at every step; a structure's list is rebuilt when one of its atoms has moved more
than ``skin / 2`` since the last build, so the edges are always exactly those within the
cutoff. On out-of-memory the batch is halved: the evicted structures, optimizer memory
included, wait at the front of the queue.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..errors import InputError, TDNError
from ..validation import validate_structure
from .guard import DEFAULT_GUARD, DivergenceGuard
from .optimizers import BATCH_OPTIMIZERS, BFGSParams, FireParams, get_optimizer
from .options import DEFAULT_BATCH_SIZE, choose_optimizer
from .result import ConvergenceWarning, RelaxResult, not_converged_message
from .state import BatchState, fixed_mask, from_atoms, to_graph, update_neighbors

_FIRE, _BFGS = FireParams(), BFGSParams()  # ASE's defaults


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA or CPU allocators)."""
    oom = getattr(torch, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def batch_relax(
    atoms_list: Sequence[Atoms],
    model: torch.nn.Module,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    batch_size: int = DEFAULT_BATCH_SIZE,
    skin: float = 1.0,
    optimizer: str = "auto",
    fire: FireParams = _FIRE,
    bfgs: BFGSParams = _BFGS,
    guard: DivergenceGuard | None = DEFAULT_GUARD,
    on_result: Callable[[int, RelaxResult], None] | None = None,
    log: Callable[[str], None] | None = None,
    loginterval: int = 10,
    warn: bool = True,
) -> list[RelaxResult]:
    """Relax many structures together with batched FIRE or BFGS on a TDN ``model``.

    Args:
        atoms_list: the structures (not modified); only ``FixAtoms`` constraints allowed.
        model: a ``TDNModel``; its device and dtype are used.
        fmax: force convergence threshold, eV/Å.
        steps: maximum optimizer steps per structure.
        batch_size: most structures evaluated together (halved on out-of-memory).
        skin: neighbour-list skin, Å.
        optimizer: ``"FIRE"``, ``"BFGS"`` (case-insensitive, as ASE's) or ``"auto"``
            (:func:`~tdn_calc.relax.options.choose_optimizer` per structure: BFGS up to
            :data:`~tdn_calc.relax.options.BFGS_MAX_ATOMS` atoms, FIRE above; each group
            relaxed as its own batch).
        fire: FIRE parameters (ASE's defaults).
        bfgs: BFGS parameters (ASE's defaults).
        guard: divergence guard (``None`` disables it), see :mod:`tdn_calc.relax.guard`.
        on_result: called with ``(index, result)`` as soon as a structure finishes.
        log: called with a progress line every ``loginterval`` steps.
        loginterval: steps between progress lines.
        warn: emit a :class:`ConvergenceWarning` per structure that did not converge.

    Returns:
        One :class:`RelaxResult` per input, in input order. ``wall_time`` is the time from
        a structure's entry into the batch to its exit (times of batched structures overlap).
    """
    if fmax <= 0 or steps < 0 or batch_size < 1:
        raise InputError(
            f"need fmax > 0, steps >= 0 and batch_size >= 1, got {fmax}, {steps}, {batch_size}"
        )
    try:
        choose_optimizer(optimizer, None, BATCH_OPTIMIZERS)
    except InputError as exc:
        raise InputError(f"batched relaxation runs auto, {' or '.join(BATCH_OPTIMIZERS)}, "
                         f"not {optimizer!r}") from exc  # fmt: skip
    min_distance = guard.min_distance if guard is not None else 0.0
    for k, atoms in enumerate(atoms_list):
        try:
            fixed_mask(atoms)
            validate_structure(
                atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                supported_elements=model.elements, min_distance=min_distance,
            )  # fmt: skip
        except InputError as exc:
            raise type(exc)(f"structure {k}: {exc}") from exc
    queues: dict[str, list[int]] = {}  # "auto": one queue per optimizer chosen
    for k, atoms in enumerate(atoms_list):
        queues.setdefault(choose_optimizer(optimizer, len(atoms), BATCH_OPTIMIZERS), []).append(k)
    params = {"FIRE": fire, "BFGS": bfgs}
    results: list[RelaxResult | None] = [None] * len(atoms_list)
    for name, queue in queues.items():
        run = _QueueRun(atoms_list, model, results, name, params.get(name), fmax=fmax,
                        steps=steps, guard=guard, on_result=on_result, warn=warn)  # fmt: skip
        run.relax(queue, batch_size=batch_size, skin=skin, log=log, loginterval=loginterval)
    return results  # type: ignore[return-value]


class _QueueRun:
    """The batched loop of :func:`batch_relax` with one registered optimizer over a queue of
    input indices (which name the structures in results, callbacks and messages); fills
    ``results`` in place."""

    def __init__(
        self, atoms_list: Sequence[Atoms], model: torch.nn.Module,
        results: list[RelaxResult | None], optimizer: str, params: Any, *, fmax: float,
        steps: int, guard: DivergenceGuard | None,
        on_result: Callable[[int, RelaxResult], None] | None, warn: bool,
    ) -> None:  # fmt: skip
        self.atoms_list, self.model, self.results = atoms_list, model, results
        self.name, self.optimizer = optimizer, get_optimizer(optimizer)
        self.params = params if params is not None else self.optimizer.params()
        self.fmax, self.steps, self.guard = fmax, steps, guard
        self.on_result, self.warn = on_result, warn
        self.history: dict[int, tuple[list[float], list[float]]] = {}
        self.entered: dict[int, float] = {}

    def relax(self, queue: Sequence[int], *, batch_size: int, skin: float,
              log: Callable[[str], None] | None, loginterval: int) -> None:  # fmt: skip
        """Relax the structures ``queue`` (input indices), ``batch_size`` at a time."""
        model = self.model
        param = next(model.parameters())
        dtype, device = param.dtype, param.device
        cutoff = float(model.cutoff)
        max_neighbors = model.config.max_neighbors
        fresh = deque(queue)
        evicted: deque[BatchState] = deque()
        active: BatchState | None = None
        cap = batch_size
        iteration = 0
        while fresh or evicted or (active is not None and active.n_systems):
            parts = [] if active is None else [active]
            room = cap - (0 if active is None else active.n_systems)
            while room > 0 and evicted:
                chunk = evicted.popleft()
                if chunk.n_systems > room:
                    take = torch.arange(chunk.n_systems, device=device) < room
                    evicted.appendleft(chunk.select(~take))
                    chunk = chunk.select(take)
                parts.append(chunk)
                room -= chunk.n_systems
            if room > 0 and fresh:
                ids = [fresh.popleft() for _ in range(min(room, len(fresh)))]
                now = time.perf_counter()
                for k in ids:
                    self.entered[k], self.history[k] = now, ([], [])
                new = from_atoms([self.atoms_list[k] for k in ids], ids, dtype, device)
                parts.append(self.optimizer.init(new, self.params))
            active = type(parts[0]).cat(parts)
            active = update_neighbors(active, cutoff, skin, max_neighbors)
            graph, dmin = to_graph(active, cutoff)
            stress = bool(active.pbc.all(1).any())
            try:
                out = model(graph, compute_forces=True, compute_stress=stress)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if active.n_systems == 1:
                    k = int(active.ids[0])
                    raise TDNError(
                        f"structure {k} ({len(self.atoms_list[k])} atoms) does not fit in "
                        f"memory even alone: {exc}"
                    ) from exc
                half = active.n_systems // 2
                first = torch.arange(active.n_systems, device=device) < half
                evicted.appendleft(active.select(~first))
                active, cap = active.select(first), half
                if log:
                    log(f"out of memory: batch size reduced to {cap}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            energy, raw = out["energy"].detach(), out["forces"].detach()
            f = raw.masked_fill(active.fixed[:, None], 0.0)
            fmax_s = active.smax(torch.linalg.vector_norm(f, dim=1))
            active.e0 = torch.where(torch.isnan(active.e0), energy, active.e0)
            done = self._finish(active, energy, raw, fmax_s, dmin, out.get("stress"))
            if bool(done.any()):
                f = f[~done[active.sys]]
                active = active.select(~done)
            if active.n_systems:
                self.optimizer.step(active, f, self.params)
            iteration += 1
            if log and iteration % max(loginterval, 1) == 0:
                finished = sum(r is not None for r in self.results)
                log(f"step {iteration}: {active.n_systems} active, "
                    f"{finished}/{len(self.results)} done")  # fmt: skip

    def _finish(self, b: BatchState, energy: torch.Tensor, raw: torch.Tensor,
                fmax_s: torch.Tensor, dmin: torch.Tensor,
                stress: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """Record the step (``energy`` ``[S]`` eV, unconstrained forces ``raw`` ``[N, 3]``
        eV/Å, ``fmax_s`` ``[S]`` eV/Å, ``dmin`` ``[S]`` Å, ``stress`` ``[S, 3, 3]`` eV/Å^3),
        build the results of the structures that are done and return them as ``[S]`` bool."""
        guard, steps = self.guard, self.steps
        e_list, f_list = energy.tolist(), fmax_s.tolist()
        ids = b.ids.tolist()
        for s, k in enumerate(ids):
            self.history[k][0].append(e_list[s])
            self.history[k][1].append(f_list[s])
        converged = fmax_s < self.fmax
        done = converged | (b.n_steps >= steps)
        flagged = torch.zeros_like(done)
        if guard is not None:
            n_atoms = torch.bincount(b.sys, minlength=b.n_systems).to(energy.dtype)
            bad_forces = b.ssum((~torch.isfinite(raw).all(1)).to(energy.dtype))
            finite = torch.isfinite(energy) & (bad_forces == 0)
            disp = b.smax(torch.linalg.vector_norm(b.pos - b.pos0, dim=1))
            flagged = (
                ~finite
                | ~torch.isfinite(disp)
                | ((b.e0 - energy) / n_atoms > guard.max_energy_drop)
                | (disp > guard.max_displacement)
                | (dmin < guard.min_distance)
            )  # also on a converged step: overlapping atoms are no minimum
            converged = converged & ~flagged
            done = done | flagged
        if not bool(done.any()):
            return done
        pos = b.pos.detach().cpu().numpy()
        forces = raw.cpu().numpy()
        sys = b.sys.cpu().numpy()
        stress_np = stress.cpu().numpy() if stress is not None else None
        conv, flag, n_steps = converged.cpu().numpy(), flagged.cpu().numpy(), b.n_steps.tolist()
        pos0, e0 = b.pos0.cpu().numpy(), b.e0.tolist()
        now = time.perf_counter()
        for s in np.flatnonzero(done.cpu().numpy()):
            k = ids[s]
            sel = sys == s
            reason = None
            if flag[s]:
                reason = guard.check(
                    e_list[s], e0[s], int(sel.sum()), forces[sel],
                    np.linalg.norm(pos[sel] - pos0[sel], axis=1), float(dmin[s]),
                )  # fmt: skip
                reason = reason or "diverged"
            elif not conv[s]:
                reason = f"max steps ({steps}) reached"
            atoms = self.atoms_list[k].copy()
            atoms.positions = pos[sel]
            calc_results = {"energy": e_list[s], "forces": forces[sel]}
            if stress_np is not None and atoms.pbc.all():
                from ase.stress import full_3x3_to_voigt_6_stress

                calc_results["stress"] = full_3x3_to_voigt_6_stress(stress_np[s])
            atoms.calc = SinglePointCalculator(atoms, **calc_results)
            energies, fmaxs = self.history.pop(k)
            result = RelaxResult(
                atoms=atoms,
                converged=bool(conv[s]),
                n_steps=int(n_steps[s]),
                energy=e_list[s],
                fmax=f_list[s],
                wall_time=now - self.entered.pop(k),
                reason=reason,
                energies=energies,
                fmaxs=fmaxs,
                optimizer=self.name,
            )
            self.results[k] = result
            if self.warn and not result.converged:
                warnings.warn(
                    not_converged_message(result, self.fmax, f"structure {k}"),
                    ConvergenceWarning, stacklevel=4,
                )  # fmt: skip
            if self.on_result is not None:
                self.on_result(k, result)
        return done
