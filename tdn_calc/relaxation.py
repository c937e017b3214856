"""Geometry (and cell) relaxation of one structure with ASE optimizers: :func:`relax`.

Many structures at once on a TDN model: :func:`tdn_calc.batch_relax.batch_relax`.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch
from ase.optimize.optimize import Optimizer

from .errors import InputError
from .relax_guard import DEFAULT_GUARD, DivergenceGuard, min_pair_distance

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "FIRE": FIRE,
    "BFGS": BFGS,
    "LBFGS": LBFGS,
    "BFGSLineSearch": BFGSLineSearch,
}
#: ``optimizer="auto"``: BFGS up to this many atoms, FIRE above. At the same ``fmax``, BFGS
#: ends much nearer the minimum of floppy molecules (GFN2-xTB itself, 100 test molecules from
#: noisy starts to 0.05 eV/Å: within 1 meV/atom of the tight minimum 77 % with BFGS, 38 % with
#: FIRE; docs/benchmarks.md), but its dense ``[3n, 3n]`` Hessian is diagonalised every step.
BFGS_MAX_ATOMS = 300
CELL_FILTERS = ("none", "frechet", "exp")
#: Optimizer of the float64 polish: quasi-Newton near the minimum (FIRE wandered at 1e-3 eV/Å
#: on floppy molecules: its float64 polish of aspirin with tdn-organic ended at 0.37 eV/Å
#: after 500 steps).
POLISH_OPTIMIZER = "BFGS"


class ConvergenceWarning(UserWarning):
    """A relaxation stopped before the forces fell below ``fmax``."""


@dataclass
class RelaxResult:
    """Outcome of one relaxation.

    Attributes:
        atoms: the relaxed structure (a copy; the input is untouched) carrying a
            ``SinglePointCalculator`` with the final energy, forces and (3D cells) stress.
        converged: max force (and, with a cell filter, cell force) below ``fmax``.
        n_steps: optimizer steps taken.
        energy: final energy, eV.
        fmax: final max force norm, eV/Å (constrained forces; with a cell filter it includes
            the cell degrees of freedom, as ASE's convergence test does).
        wall_time: seconds spent.
        reason: why it stopped when not converged (``"max steps (500) reached"``, ``"diverged:
            ..."``), else ``None``.
        energies: energy at every step, eV (step 0 = start).
        fmaxs: max force at every step, eV/Å.
        optimizer: the optimizer that ran (``"BFGS"``, ``"FIRE"``, ...; both stages joined by
            ``+`` after a polish, e.g. ``"FIRE+BFGS"``), so ``optimizer="auto"`` says what it
            chose.
    """

    atoms: Atoms
    converged: bool
    n_steps: int
    energy: float
    fmax: float
    wall_time: float
    reason: str | None = None
    energies: list[float] = field(default_factory=list)
    fmaxs: list[float] = field(default_factory=list)
    optimizer: str | None = None

    @property
    def diverged(self) -> bool:
        return bool(self.reason and self.reason.startswith("diverged"))


def resolve_optimizer(optimizer: str | type[Optimizer],
                      n_atoms: int | None = None) -> type[Optimizer]:
    """An optimizer class from its name (case-insensitive) or the class itself; ``"auto"``
    is BFGS for ``n_atoms <= BFGS_MAX_ATOMS`` (or unknown), FIRE above."""
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer
    names = {k.lower(): v for k, v in OPTIMIZERS.items()}
    key = str(optimizer).lower()
    if key == "auto":
        key = "bfgs" if n_atoms is None or n_atoms <= BFGS_MAX_ATOMS else "fire"
    if key not in names:
        raise InputError(f"unknown optimizer {optimizer!r}; use auto or one of "
                         f"{', '.join(OPTIMIZERS)}")
    return names[key]


def resolve_cell_filter(cell_filter: str | None) -> str:
    """``None``/``"none"``/``"frechet"``/``"exp"`` -> canonical lower-case name."""
    key = "none" if cell_filter is None else str(cell_filter).lower()
    if key not in CELL_FILTERS:
        raise InputError(f"unknown cell filter {cell_filter!r}; use one of {CELL_FILTERS}")
    return key


def _make_filter(atoms: Atoms, kind: str, kwargs: dict[str, Any]):
    from ase.filters import ExpCellFilter, FrechetCellFilter

    if not atoms.pbc.all():
        raise InputError(
            f"cell relaxation (cell_filter={kind!r}) needs a cell periodic in all three "
            f"directions; this structure has pbc={atoms.pbc.tolist()}"
        )
    return (FrechetCellFilter if kind == "frechet" else ExpCellFilter)(atoms, **kwargs)


def snapshot(atoms: Atoms, calc: Calculator | None = None) -> Atoms:
    """A copy of ``atoms`` with a ``SinglePointCalculator`` holding energy, raw (unconstrained)
    forces and, for 3D cells, stress from ``calc`` (default ``atoms.calc``)."""
    calc = calc or atoms.calc
    out = atoms.copy()
    results: dict[str, Any] = {
        "energy": float(calc.get_potential_energy(atoms)),
        "forces": np.array(calc.get_forces(atoms)),
    }
    if atoms.pbc.all():
        try:
            results["stress"] = np.array(calc.get_stress(atoms))
        except PropertyNotImplementedError:
            pass
    out.calc = SinglePointCalculator(out, **results)
    return out


def relax(
    atoms: Atoms,
    calculator: Calculator | None = None,
    fmax: float = 0.05,
    steps: int = 500,
    optimizer: str | type[Optimizer] = "auto",
    cell_filter: str | None = None,
    fix_symmetry: bool = False,
    trajectory: str | os.PathLike | None = None,
    logfile: str | os.PathLike | None = None,
    *,
    loginterval: int = 1,
    optimizer_kwargs: dict[str, Any] | None = None,
    filter_kwargs: dict[str, Any] | None = None,
    guard: DivergenceGuard | None = DEFAULT_GUARD,
    warn: bool = True,
    polish: bool = False,
    polish_fmax: float = 0.001,
) -> RelaxResult:
    """Relax the positions (and, with ``cell_filter``, the cell) of a copy of ``atoms``.

    Args:
        atoms: the structure; its constraints (e.g. ``FixAtoms``) and ``info`` are kept.
        calculator: any ASE calculator; ``None`` uses ``atoms.calc`` (unless it only holds
            stored results) or else ``TDNCalculator("auto")``.
        fmax: force convergence threshold, eV/Å.
        steps: maximum number of optimizer steps.
        optimizer: ``"auto"`` (BFGS up to :data:`BFGS_MAX_ATOMS` atoms, else FIRE),
            ``"FIRE"``, ``"BFGS"``, ``"LBFGS"``, ``"BFGSLineSearch"`` or an ASE class.
        cell_filter: ``None``/``"none"``, ``"frechet"`` (``FrechetCellFilter``) or ``"exp"``
            (``ExpCellFilter``); needs a 3D-periodic cell.
        fix_symmetry: keep the space group (``ase.constraints.FixSymmetry``, needs spglib).
        trajectory: write every ``loginterval``-th step (and the last) to this file, in any
            format ASE writes (guessed from the suffix), atomically at the end.
        logfile: optimizer log: ``"-"`` for stdout, a path, or ``None`` for none.
        loginterval: trajectory interval, steps.
        optimizer_kwargs: extra arguments of the optimizer (e.g. ``maxstep``).
        filter_kwargs: extra arguments of the cell filter (e.g. ``scalar_pressure`` in eV/Å^3).
        guard: divergence guard (``None`` disables it), see :mod:`tdn_calc.relax_guard`.
        warn: emit a :class:`ConvergenceWarning` when not converged.
        polish: once converged to ``fmax``, continue in float64 (a float64 copy of a TDN
            calculator's model; other calculators are used as they are) with
            :data:`POLISH_OPTIMIZER` to ``polish_fmax`` with up to ``steps`` more steps.
            ``converged`` then means ``polish_fmax`` was reached; histories and step counts
            cover both stages.
        polish_fmax: force threshold of the polish, eV/Å.
    """
    if fmax <= 0 or steps < 0:
        raise InputError(f"need fmax > 0 eV/Å and steps >= 0, got fmax={fmax}, steps={steps}")
    if polish:
        calculator = _resolve_calculator(atoms, calculator)
        if not 0 < polish_fmax <= fmax:
            raise InputError(f"need 0 < polish_fmax <= fmax, got {polish_fmax} and {fmax}")
        kwargs = dict(steps=steps, optimizer=optimizer, cell_filter=cell_filter,
                      loginterval=loginterval, optimizer_kwargs=optimizer_kwargs,
                      filter_kwargs=filter_kwargs, guard=guard, logfile=logfile)  # fmt: skip
        first = relax(atoms, calculator, fmax, fix_symmetry=fix_symmetry, warn=False,
                      trajectory=trajectory, **kwargs)  # fmt: skip
        if not first.converged:
            if warn:
                warnings.warn(not_converged_message(first, fmax), ConvergenceWarning, stacklevel=2)
            return first
        start = first.atoms.copy()  # keeps constraints, FixSymmetry included
        polish_kwargs = {**kwargs, "optimizer": POLISH_OPTIMIZER, "optimizer_kwargs": None}
        second = relax(start, float64_calculator(calculator), polish_fmax,
                       warn=False, **polish_kwargs)  # fmt: skip
        result = merge_results(first, second)
        if warn and not result.converged:
            warnings.warn(not_converged_message(result, polish_fmax, "polish"),
                          ConvergenceWarning, stacklevel=2)  # fmt: skip
        return result
    if optimizer_kwargs and isinstance(optimizer, str) and optimizer.lower() == "auto":
        raise InputError("optimizer_kwargs need a named optimizer (e.g. optimizer='BFGS'): "
                         "'auto' picks BFGS or FIRE by size, and they take different arguments")
    opt_class = resolve_optimizer(optimizer, len(atoms))
    kind = resolve_cell_filter(cell_filter)
    work = atoms.copy()
    calculator = _resolve_calculator(atoms, calculator)
    work.calc = calculator
    if fix_symmetry:
        from ase.constraints import FixSymmetry

        work.set_constraint([*work.constraints, FixSymmetry(work)])
    target = _make_filter(work, kind, filter_kwargs or {}) if kind != "none" else work
    start = time.perf_counter()
    opt = opt_class(target, logfile=logfile, **(optimizer_kwargs or {}))
    frames: list[Atoms] = []
    energies: list[float] = []
    fmaxs: list[float] = []
    start_positions = work.positions.copy()
    last_good = start_positions
    reason = None
    converged = False
    gradients: list[np.ndarray] = []
    _log = opt.log

    def log(gradient: np.ndarray) -> None:  # irun logs the gradient it tests: reuse it
        gradients[:] = [gradient]
        _log(gradient)

    opt.log = log
    run = opt.irun(fmax=fmax, steps=steps)
    while True:
        try:
            converged = next(run)
        except StopIteration:
            break
        except InputError as exc:  # the TDN calculator refuses e.g. overlapping atoms
            if not energies:
                raise
            reason = f"diverged: {exc}"
            work.set_positions(last_good, apply_constraint=False)
            break
        energy = float(work.get_potential_energy())
        gradient = gradients[0] if gradients else opt.optimizable.get_gradient()
        fnow = float(opt.optimizable.gradient_norm(gradient))
        energies.append(energy)
        fmaxs.append(fnow)
        last_good = work.positions.copy()
        if trajectory is not None and (opt.nsteps % max(loginterval, 1) == 0 or converged):
            frames.append(snapshot(work))
        if guard is not None:  # also on the converged step: overlapping atoms are no minimum
            reason = guard.check(
                energy,
                energies[0],
                len(work),
                work.get_forces(),
                np.linalg.norm(work.positions - start_positions, axis=1),
                min_pair_distance(work.positions, work.cell.array, work.pbc, guard.min_distance),
            )
            if reason:
                converged = False
                break
    n_steps = int(opt.nsteps)
    if reason is None and not converged:
        reason = f"max steps ({steps}) reached"
    final = snapshot(work)
    if trajectory is not None:
        if not frames or frames[-1].positions.tolist() != final.positions.tolist():
            frames.append(final)
        from .structure_io import write_structures

        write_structures(trajectory, frames)
    result = RelaxResult(
        atoms=final,
        converged=bool(converged and reason is None),
        n_steps=n_steps,
        energy=energies[-1] if energies else float(final.get_potential_energy()),
        fmax=fmaxs[-1] if fmaxs else float("nan"),
        wall_time=time.perf_counter() - start,
        reason=None if converged and reason is None else reason,
        energies=energies,
        fmaxs=fmaxs,
        optimizer=opt_class.__name__,
    )
    if warn and not result.converged:
        warnings.warn(not_converged_message(result, fmax), ConvergenceWarning, stacklevel=2)
    return result


def _resolve_calculator(atoms: Atoms, calculator: Calculator | None) -> Calculator:
    if calculator is None and not isinstance(atoms.calc, SinglePointCalculator):
        calculator = atoms.calc  # stored results (e.g. read from extxyz) cannot relax anything
    if calculator is None:
        from .calculator import TDNCalculator

        calculator = TDNCalculator("auto")
    return calculator


def float64_calculator(calculator: Calculator) -> Calculator:
    """A TDN calculator's float64 twin (a float64 copy of its model, same device); any other
    calculator is returned as it is (ASE calculators compute in float64)."""
    from .calculator import TDNCalculator

    if not isinstance(calculator, TDNCalculator) or calculator.dtype == torch.float64:
        return calculator
    if calculator.model is None:  # "auto" that never ran: let the twin pick its own model
        return TDNCalculator("auto", device=calculator.device, dtype="float64",
                             min_distance=calculator.min_distance)  # fmt: skip
    return TDNCalculator(float64_model(calculator.model), device=calculator.device,
                         min_distance=calculator.min_distance)  # fmt: skip


def float64_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself when it is float64 already, else a float64 copy in eval mode (same
    weights cast to float64); the input is untouched."""
    if next(model.parameters()).dtype == torch.float64:
        return model
    return copy.deepcopy(model).to(torch.float64).eval()


def merge_results(first: RelaxResult, second: RelaxResult) -> RelaxResult:
    """One result for a relaxation continued by ``second`` (e.g. a float64 polish): final
    state and convergence of ``second``, steps, times and histories of both."""
    return RelaxResult(
        atoms=second.atoms,
        converged=second.converged,
        n_steps=first.n_steps + second.n_steps,
        energy=second.energy,
        fmax=second.fmax,
        wall_time=first.wall_time + second.wall_time,
        reason=None if second.converged else f"polish: {second.reason}",
        energies=first.energies + second.energies,
        fmaxs=first.fmaxs + second.fmaxs,
        optimizer="+".join(o for o in (first.optimizer, second.optimizer) if o) or None,
    )


def not_converged_message(result: RelaxResult, fmax: float, label: str = "") -> str:
    """``"<label>not converged after N steps: fmax X eV/Å > target Y eV/Å (reason)"``."""
    prefix = f"{label}: " if label else ""
    return (
        f"{prefix}relaxation not converged after {result.n_steps} steps: fmax "
        f"{result.fmax:.4f} eV/Å, target {fmax} eV/Å ({result.reason})"
    )
