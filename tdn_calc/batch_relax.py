"""Batched relaxation: FIRE or BFGS on many structures at once with a TDN model.

Every step evaluates all active structures as one :class:`AtomicGraph`. FIRE follows ASE's
``ase.optimize.FIRE`` exactly (same defaults, per-structure time step, mixing and ``maxstep``
on the whole structure's step), in torch; BFGS follows ``ase.optimize.BFGS`` exactly (one
dense ``[3n, 3n]`` Hessian per structure, updated and diagonalised in float64 numpy,
``maxstep`` on the largest atom step), so results match ASE's optimizers to round-off for
the same model.
Each structure converges on its own (max force < ``fmax``) and leaves the batch; waiting
structures take its place. ``FixAtoms`` constraints are respected. Neighbour lists are built
with ``cutoff + skin`` and filtered to the cutoff at every step; a structure's list is rebuilt
when one of its atoms has moved more than ``skin / 2`` since the last build, so the edges are
always exactly those within the cutoff. On out-of-memory the batch is halved.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from .atomic_graph import AtomicGraph
from .errors import InputError, TDNError
from .graph import neighbor_list
from .relax_guard import DEFAULT_GUARD, DivergenceGuard
from .relaxation import ConvergenceWarning, RelaxResult, not_converged_message
from .validation import validate_structure


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


@dataclass(frozen=True)
class BFGSParams:
    """BFGS parameters, defaults as ``ase.optimize.BFGS`` (Å, eV/Å^2)."""

    maxstep: float = 0.2
    alpha: float = 70.0


#: Optimizers of :func:`batch_relax`.
BATCH_OPTIMIZERS = ("FIRE", "BFGS")


class _BFGSState:
    """One structure's BFGS memory: Hessian ``[3n, 3n]`` (eV/Å^2), last positions and forces
    ``[3n]`` (None before the first step)."""

    def __init__(self, n_atoms: int, alpha: float) -> None:
        self.alpha = alpha
        self.hessian = np.eye(3 * n_atoms) * alpha
        self.pos0: np.ndarray | None = None
        self.f0: np.ndarray | None = None

    def step(self, pos: np.ndarray, f: np.ndarray, maxstep: float) -> np.ndarray:
        """The step ``[n, 3]`` Å from positions ``pos`` and constrained forces ``f`` ([n, 3]).

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


def _bfgs_step(b: _Batch, f: torch.Tensor, states: dict[int, _BFGSState],
               p: BFGSParams) -> None:
    """One BFGS step in place for every structure of ``b`` (``f``: ``[N, 3]`` constrained
    forces, eV/Å); fixed atoms stay where they are, as ASE's ``FixAtoms`` keeps them."""
    pos = b.pos.detach().cpu().numpy().astype(np.float64)
    force = f.detach().cpu().numpy().astype(np.float64)
    sys = b.sys.cpu().numpy()
    fixed = b.fixed.cpu().numpy()
    step = np.zeros_like(pos)
    for s, k in enumerate(b.ids.tolist()):
        sel = sys == s
        if k not in states:
            states[k] = _BFGSState(int(sel.sum()), p.alpha)
        step[sel] = states[k].step(pos[sel], force[sel], p.maxstep)
    step[fixed] = 0.0
    b.pos = b.pos + torch.as_tensor(step, dtype=b.pos.dtype, device=b.pos.device)
    b.n_steps = b.n_steps + 1


_ATOM = ("numbers", "pos", "vel", "fixed", "pos0", "nl_pos")
_SYSTEM = ("ids", "cell", "pbc", "dt", "alpha", "n_pos", "n_steps", "started", "e0")


@dataclass
class _Batch:
    """FIRE state of the active structures. Per atom ``[N, ...]``: numbers, sys, pos (Å),
    vel, fixed, pos0 (start, Å), nl_pos (positions at the last neighbour-list build, Å). Per
    structure ``[S, ...]``: ids (index in the input list), cell, pbc, dt, alpha, n_pos (FIRE's
    steps since the last uphill move), n_steps, started, e0 (start energy, eV). Per edge:
    edge_index ``[2, E]`` and shifts ``[E, 3]`` within ``cutoff + skin``."""

    ids: torch.Tensor
    numbers: torch.Tensor
    sys: torch.Tensor
    pos: torch.Tensor
    vel: torch.Tensor
    fixed: torch.Tensor
    pos0: torch.Tensor
    nl_pos: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    dt: torch.Tensor
    alpha: torch.Tensor
    n_pos: torch.Tensor
    n_steps: torch.Tensor
    started: torch.Tensor
    e0: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor

    @property
    def n_systems(self) -> int:
        return int(self.ids.shape[0])

    def ssum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``[N]`` per-atom values per structure -> ``[S]``."""
        return torch.zeros(self.n_systems, dtype=values.dtype, device=values.device).index_add(
            0, self.sys, values
        )

    def smax(self, values: torch.Tensor) -> torch.Tensor:
        """Max of ``[N]`` per-atom values per structure -> ``[S]``."""
        out = torch.full((self.n_systems,), -torch.inf, dtype=values.dtype, device=values.device)
        return out.scatter_reduce(0, self.sys, values, "amax")

    def select(self, keep: torch.Tensor) -> _Batch:
        """The structures where ``keep`` (``[S]`` bool) is True."""
        atom_keep = keep[self.sys]
        new_atom = torch.cumsum(atom_keep.long(), 0) - 1
        new_sys = torch.cumsum(keep.long(), 0) - 1
        edge_keep = atom_keep[self.edge_index[0]]
        kw = {f: getattr(self, f)[atom_keep] for f in _ATOM}
        kw.update({f: getattr(self, f)[keep] for f in _SYSTEM})
        kw["sys"] = new_sys[self.sys[atom_keep]]
        kw["edge_index"] = new_atom[self.edge_index[:, edge_keep]]
        kw["shifts"] = self.shifts[edge_keep]
        return _Batch(**kw)

    @staticmethod
    def cat(batches: Sequence[_Batch]) -> _Batch:
        if len(batches) == 1:
            return batches[0]
        kw = {
            f.name: torch.cat([getattr(b, f.name) for b in batches])
            for f in fields(_Batch)
            if f.name != "edge_index"
        }
        atoms, systems, sys, edges = 0, 0, [], []
        for b in batches:
            sys.append(b.sys + systems)
            edges.append(b.edge_index + atoms)
            atoms += b.pos.shape[0]
            systems += b.n_systems
        kw["sys"] = torch.cat(sys)
        kw["edge_index"] = torch.cat(edges, dim=1)
        return _Batch(**kw)


def _fixed_mask(atoms: Atoms) -> np.ndarray:
    mask = np.zeros(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if not isinstance(c, FixAtoms):
            raise InputError(
                f"batched relaxation supports only FixAtoms constraints, got "
                f"{type(c).__name__}; relax this structure with relax() instead"
            )
        mask[c.get_indices()] = True
    return mask


def _from_atoms(
    atoms_list: Sequence[Atoms], ids: Sequence[int], params: FireParams, dtype, device
) -> _Batch:
    def f(x):
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

    def i(x):
        return torch.as_tensor(np.asarray(x), dtype=torch.long, device=device)

    n = [len(a) for a in atoms_list]
    pos = f(np.concatenate([a.positions for a in atoms_list]))
    cells = [a.cell.array if a.pbc.any() else np.zeros((3, 3)) for a in atoms_list]
    s = len(atoms_list)
    return _Batch(
        ids=i(list(ids)),
        numbers=i(np.concatenate([a.numbers for a in atoms_list])),
        sys=i(np.repeat(np.arange(s), n)),
        pos=pos,
        vel=torch.zeros_like(pos),
        fixed=torch.as_tensor(np.concatenate([_fixed_mask(a) for a in atoms_list]), device=device),
        pos0=pos.clone(),
        nl_pos=torch.full_like(pos, torch.nan),
        cell=f(np.stack(cells)),
        pbc=torch.as_tensor(np.stack([a.pbc for a in atoms_list]), device=device),
        dt=torch.full((s,), params.dt, dtype=dtype, device=device),
        alpha=torch.full((s,), params.astart, dtype=dtype, device=device),
        n_pos=torch.zeros(s, dtype=torch.long, device=device),
        n_steps=torch.zeros(s, dtype=torch.long, device=device),
        started=torch.zeros(s, dtype=torch.bool, device=device),
        e0=torch.full((s,), torch.nan, dtype=dtype, device=device),
        edge_index=torch.zeros((2, 0), dtype=torch.long, device=device),
        shifts=torch.zeros((0, 3), dtype=dtype, device=device),
    )


def _update_neighbors(
    b: _Batch, cutoff: float, skin: float, max_neighbors: int | None
) -> _Batch:
    """Rebuild the lists of structures with an atom moved > skin/2 since their last build."""
    moved = torch.linalg.vector_norm(b.pos - b.nl_pos, dim=1)
    stale = ~(moved <= skin / 2) if max_neighbors is None else torch.ones_like(moved, dtype=bool)
    rebuild = b.ssum(stale.to(b.pos.dtype)) > 0
    if not bool(rebuild.any()):
        return b
    pos = b.pos.detach().cpu().numpy()
    counts = torch.bincount(b.sys, minlength=b.n_systems).cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cells, pbcs = b.cell.cpu().numpy(), b.pbc.cpu().numpy()
    radius = cutoff + (skin if max_neighbors is None else 0.0)
    new_edges, new_shifts = [], []
    for s in np.flatnonzero(rebuild.cpu().numpy()):
        lo, hi = starts[s], starts[s] + counts[s]
        i, j, S = neighbor_list(pos[lo:hi], cells[s], pbcs[s], radius, max_neighbors=max_neighbors)
        new_edges.append(np.stack([i, j]) + lo)
        new_shifts.append(S)
    keep = ~rebuild[b.sys[b.edge_index[0]]]
    edge_index = torch.cat(
        [b.edge_index[:, keep], torch.as_tensor(np.concatenate(new_edges, 1), device=b.pos.device)],
        dim=1,
    )
    new = torch.as_tensor(np.concatenate(new_shifts), dtype=b.pos.dtype, device=b.pos.device)
    shifts = torch.cat([b.shifts[keep], new])
    atom_rebuild = rebuild[b.sys].unsqueeze(1)
    return replace(
        b,
        edge_index=edge_index,
        shifts=shifts,
        nl_pos=torch.where(atom_rebuild, b.pos, b.nl_pos),
    )


def _graph(b: _Batch, cutoff: float) -> tuple[AtomicGraph, torch.Tensor]:
    """The graph of edges within ``cutoff`` and the ``[S]`` shortest distance per structure."""
    i, j = b.edge_index
    vec = b.pos[j] - b.pos[i] + torch.einsum("ek,ekl->el", b.shifts, b.cell[b.sys[i]])
    d = torch.linalg.vector_norm(vec, dim=1)
    inside = d < cutoff
    dmin = torch.full((b.n_systems,), torch.inf, dtype=d.dtype, device=d.device)
    dmin = dmin.scatter_reduce(0, b.sys[i], d, "amin")
    graph = AtomicGraph(
        positions=b.pos,
        atomic_numbers=b.numbers,
        system_idx=b.sys,
        edge_index=b.edge_index[:, inside],
        shifts=b.shifts[inside],
        cell=b.cell,
        pbc=b.pbc,
    )
    return graph, dmin


def _fire_step(b: _Batch, f: torch.Tensor, p: FireParams) -> None:
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
    batch_size: int = 64,
    skin: float = 1.0,
    optimizer: str = "auto",
    fire: FireParams = FireParams(),
    bfgs: BFGSParams = BFGSParams(),
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
        optimizer: ``"FIRE"``, ``"BFGS"`` (case-insensitive, as ASE's) or ``"auto"``: BFGS
            for structures of up to :data:`~tdn_calc.relaxation.BFGS_MAX_ATOMS` atoms, FIRE
            for larger ones (each group relaxed as its own batch).
        fire: FIRE parameters (ASE's defaults).
        bfgs: BFGS parameters (ASE's defaults).
        guard: divergence guard (``None`` disables it), see :mod:`tdn_calc.relax_guard`.
        on_result: called with ``(index, result)`` as soon as a structure finishes.
        log: called with a progress line every ``loginterval`` steps.
        warn: emit a :class:`ConvergenceWarning` per structure that did not converge.

    Returns:
        One :class:`RelaxResult` per input, in input order. ``wall_time`` is the time from
        a structure's entry into the batch to its exit (times of batched structures overlap).
    """
    if fmax <= 0 or steps < 0 or batch_size < 1:
        raise InputError(
            f"need fmax > 0, steps >= 0 and batch_size >= 1, got {fmax}, {steps}, {batch_size}"
        )
    name = str(optimizer).upper()
    if name not in (*BATCH_OPTIMIZERS, "AUTO"):
        raise InputError(f"batched relaxation runs auto, {' or '.join(BATCH_OPTIMIZERS)}, "
                         f"not {optimizer!r}")
    min_distance = guard.min_distance if guard is not None else 0.0
    for k, atoms in enumerate(atoms_list):
        try:
            _fixed_mask(atoms)
            validate_structure(
                atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                supported_elements=model.elements, min_distance=min_distance,
            )  # fmt: skip
        except InputError as exc:
            raise type(exc)(f"structure {k}: {exc}") from exc
    if name == "AUTO":  # BFGS on the small structures, then FIRE on the large ones
        from .relaxation import resolve_optimizer

        chosen = [resolve_optimizer("auto", len(a)).__name__ for a in atoms_list]
        queues = [(n, [k for k, c in enumerate(chosen) if c == n]) for n in ("BFGS", "FIRE")]
    else:
        queues = [(name, list(range(len(atoms_list))))]
    results: list[RelaxResult | None] = [None] * len(atoms_list)
    for name, queue in queues:
        if queue:
            _relax_queue(atoms_list, queue, model, results, optimizer=name, fmax=fmax,
                         steps=steps, batch_size=batch_size, skin=skin, fire=fire, bfgs=bfgs,
                         guard=guard, on_result=on_result, log=log, loginterval=loginterval,
                         warn=warn)  # fmt: skip
    return results  # type: ignore[return-value]


def _relax_queue(
    atoms_list: Sequence[Atoms], queue: Sequence[int], model: torch.nn.Module,
    results: list[RelaxResult | None], *, optimizer: str, fmax, steps, batch_size, skin, fire,
    bfgs, guard, on_result, log, loginterval, warn,
) -> None:  # fmt: skip
    """The batched loop of :func:`batch_relax` with one ``optimizer`` ("FIRE" or "BFGS") over
    the structures ``queue`` (indices into ``atoms_list``, which name them in results,
    callbacks and messages); fills ``results`` in place."""
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    cutoff = float(model.cutoff)
    max_neighbors = model.config.max_neighbors
    use_bfgs = optimizer == "BFGS"
    bfgs_states: dict[int, _BFGSState] = {}
    history: dict[int, tuple[list[float], list[float]]] = {}
    entered: dict[int, float] = {}
    fresh = deque(queue)
    evicted: deque[_Batch] = deque()
    active: _Batch | None = None
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
                entered[k], history[k] = now, ([], [])
            parts.append(_from_atoms([atoms_list[k] for k in ids], ids, fire, dtype, device))
        active = _Batch.cat(parts)
        active = _update_neighbors(active, cutoff, skin, max_neighbors)
        graph, dmin = _graph(active, cutoff)
        stress = bool(active.pbc.all(1).any())
        try:
            out = model(graph, compute_forces=True, compute_stress=stress)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if active.n_systems == 1:
                k = int(active.ids[0])
                raise TDNError(
                    f"structure {k} ({len(atoms_list[k])} atoms) does not fit in memory even "
                    f"alone: {exc}"
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
        done = _finish(
            active, energy, raw, f, fmax_s, dmin, out.get("stress"), fmax, steps, guard,
            atoms_list, results, history, entered, on_result, warn, optimizer,
        )  # fmt: skip
        if bool(done.any()):
            for k in active.ids[done].tolist():
                bfgs_states.pop(k, None)
            f = f[~done[active.sys]]
            active = active.select(~done)
        if active.n_systems and use_bfgs:
            _bfgs_step(active, f, bfgs_states, bfgs)
        elif active.n_systems:
            _fire_step(active, f, fire)
        iteration += 1
        if log and iteration % max(loginterval, 1) == 0:
            finished = sum(r is not None for r in results)
            log(f"step {iteration}: {active.n_systems} active, {finished}/{len(results)} done")


def _finish(
    b, energy, raw, f, fmax_s, dmin, stress, fmax, steps, guard,
    atoms_list, results, history, entered, on_result, warn, optimizer,
) -> torch.Tensor:  # fmt: skip
    """Record the step, find structures that are done and build their results."""
    e_list, f_list = energy.tolist(), fmax_s.tolist()
    ids = b.ids.tolist()
    for s, k in enumerate(ids):
        history[k][0].append(e_list[s])
        history[k][1].append(f_list[s])
    converged = fmax_s < fmax
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
    idx = np.flatnonzero(done.cpu().numpy())
    pos = b.pos.detach().cpu().numpy()
    forces = raw.cpu().numpy()
    sys = b.sys.cpu().numpy()
    stress_np = stress.cpu().numpy() if stress is not None else None
    conv, flag, n_steps = converged.cpu().numpy(), flagged.cpu().numpy(), b.n_steps.tolist()
    pos0, e0 = b.pos0.cpu().numpy(), b.e0.tolist()
    now = time.perf_counter()
    for s in idx:
        k = ids[s]
        atoms_in = atoms_list[k]
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
        atoms = atoms_in.copy()
        atoms.positions = pos[sel]
        calc_results = {"energy": e_list[s], "forces": forces[sel]}
        if stress_np is not None and atoms.pbc.all():
            from ase.stress import full_3x3_to_voigt_6_stress

            calc_results["stress"] = full_3x3_to_voigt_6_stress(stress_np[s])
        atoms.calc = SinglePointCalculator(atoms, **calc_results)
        energies, fmaxs = history.pop(k)
        result = RelaxResult(
            atoms=atoms,
            converged=bool(conv[s]),
            n_steps=int(n_steps[s]),
            energy=e_list[s],
            fmax=f_list[s],
            wall_time=now - entered.pop(k),
            reason=reason,
            energies=energies,
            fmaxs=fmaxs,
            optimizer=optimizer,
        )
        results[k] = result
        if warn and not result.converged:
            warnings.warn(
                not_converged_message(result, fmax, f"structure {k}"), ConvergenceWarning,
                stacklevel=4,
            )  # fmt: skip
        if on_result is not None:
            on_result(k, result)
    return done
