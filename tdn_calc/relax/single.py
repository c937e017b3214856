"""Relaxation of one structure with ASE's optimizers: :func:`relax` (any ASE calculator,
positions and optionally the cell) and its float64 polish, :func:`polish_relaxation`.

Many structures at once on a TDN model: :func:`tdn_calc.relax.batch_relax`.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch
from ase.optimize.optimize import Optimizer

from ..errors import InputError, UnsupportedElementError
from .guard import DEFAULT_GUARD, DivergenceGuard, min_pair_distance
from .hessian import seed_hessian, student_hessian
from .options import (
    ASE_OPTIMIZERS,
    POLISH_OPTIMIZER,
    choose_optimizer,
    is_auto,
    resolve_cell_filter,
)
from .precision import float64_calculator
from .result import ConvergenceWarning, RelaxResult, merge_results, not_converged_message
from .teacher import constrained_fmax

if TYPE_CHECKING:
    from .teacher import TeacherStage

#: ASE optimizer classes by name (:data:`~tdn_calc.relax.options.ASE_OPTIMIZERS`).
OPTIMIZERS: dict[str, type[Optimizer]] = dict(
    zip(ASE_OPTIMIZERS, (FIRE, BFGS, LBFGS, BFGSLineSearch), strict=True)
)


def resolve_optimizer(optimizer: str | type[Optimizer],
                      n_atoms: int | None = None) -> type[Optimizer]:
    """An ASE optimizer class from its name (case-insensitive, ``"auto"`` chosen by
    :func:`~tdn_calc.relax.options.choose_optimizer` for ``n_atoms``) or the class itself.

    Raises:
        InputError: an unknown name.
    """
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer
    return OPTIMIZERS[choose_optimizer(optimizer, n_atoms)]


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
    verify: str | None = None,
    finish: str | None = None,
    finish_when: str = "uncertain",
    verify_fmax: float | None = None,
    teacher_device: str = "cpu",
    initial_hessian: np.ndarray | None = None,
) -> RelaxResult:
    """Relax the positions (and, with ``cell_filter``, the cell) of a copy of ``atoms``.

    Args:
        atoms: the structure; its constraints (e.g. ``FixAtoms``) and ``info`` are kept.
        calculator: any ASE calculator; ``None`` uses ``atoms.calc`` (unless it only holds
            stored results) or else ``TDNCalculator("auto")``.
        fmax: force convergence threshold, eV/Å.
        steps: maximum number of optimizer steps.
        optimizer: ``"auto"`` (:func:`~tdn_calc.relax.options.choose_optimizer`: BFGS up to
            :data:`~tdn_calc.relax.options.BFGS_MAX_ATOMS` atoms, else FIRE),
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
        guard: divergence guard (``None`` disables it), see :mod:`tdn_calc.relax.guard`.
        warn: emit a :class:`ConvergenceWarning` when not converged.
        polish: once converged to ``fmax``, continue in float64 (a float64 copy of a TDN
            calculator's model; other calculators are used as they are) with
            :data:`~tdn_calc.relax.options.POLISH_OPTIMIZER` to ``polish_fmax`` with up to
            ``steps`` more steps (:func:`polish_relaxation`).
            ``converged`` then means ``polish_fmax`` was reached; histories and step counts
            cover both stages.
        polish_fmax: force threshold of the polish, eV/Å.
        verify: a teacher (:mod:`tdn_calc.teachers` name, e.g. ``"sevenn-0"``, ``"emt"``)
            computes one single point at the final structure: ``teacher_energy`` (eV),
            ``teacher_fmax`` (eV/Å, fixed atoms excluded) and ``verified``
            (``teacher_fmax <= verify_fmax``) of the result.
        finish: a teacher that continues from the calculator's minimum to ``fmax`` (same
            ``steps`` budget, optimizer, constraints and cell filter), so that the final
            geometry is the teacher's (``engine == "student+teacher"``); a structure whose
            elements the TDN calculator does not cover is relaxed by the teacher alone
            (``engine == "teacher"``).
        finish_when: which structures ``finish`` continues: ``"uncertain"`` (the TDN
            calculator flags atoms at its minimum, ``results["uncertain"]``),
            ``"unverified"`` (the finish teacher's single point there exceeds
            ``verify_fmax``), ``"uncertain-or-unverified"`` (flagged, or, where not flagged,
            failing that single point) or ``"always"``.
        verify_fmax: threshold of ``verified`` and ``"unverified"``, eV/Å (default 3 x
            ``fmax``).
        teacher_device: device of neural-network teachers (``"cpu"``, ``"cuda"``).
        initial_hessian: ``[3 n_atoms, 3 n_atoms]`` starting Hessian (eV/Å²) of a BFGS
            optimizer without cell filter (ignored otherwise); a finish seeds the teacher's
            BFGS with the student's (:mod:`tdn_calc.relax.hessian`).

    Raises:
        InputError: bad options, an unknown teacher or one whose package is missing, a
            teacher that does not cover the elements of ``atoms``.
    """
    if fmax <= 0 or steps < 0:
        raise InputError(f"need fmax > 0 eV/Å and steps >= 0, got fmax={fmax}, steps={steps}")
    if verify or finish:
        from .teacher import teacher_stage

        stage = teacher_stage(verify, finish, finish_when, fmax, verify_fmax, teacher_device)
        stage.check_elements([("structure", atoms)])
        calculator = _resolve_calculator(atoms, calculator)
        kwargs = dict(steps=steps, optimizer=optimizer, cell_filter=cell_filter,
                      logfile=logfile, guard=guard)  # fmt: skip
        try:
            first = relax(atoms, calculator, fmax, fix_symmetry=fix_symmetry,
                          trajectory=trajectory, loginterval=loginterval,
                          optimizer_kwargs=optimizer_kwargs, filter_kwargs=filter_kwargs,
                          warn=False, polish=polish, polish_fmax=polish_fmax,
                          **kwargs)  # fmt: skip
        except UnsupportedElementError:
            if not finish:
                raise
            result = teacher_relax(atoms, stage, fmax, fix_symmetry=fix_symmetry, **kwargs)
        else:
            uncertain = student_uncertain(calculator, first.atoms, first.converged)
            result = finish_with_teacher(first, stage, uncertain, fmax, student=calculator,
                                         **kwargs)
        if warn and not result.converged:
            warnings.warn(not_converged_message(result, fmax), ConvergenceWarning, stacklevel=2)
        return result
    if polish:
        calculator = _resolve_calculator(atoms, calculator)
        if not 0 < polish_fmax <= fmax:
            raise InputError(f"need 0 < polish_fmax <= fmax, got {polish_fmax} and {fmax}")
        kwargs = dict(steps=steps, cell_filter=cell_filter, loginterval=loginterval,
                      filter_kwargs=filter_kwargs, guard=guard, logfile=logfile)  # fmt: skip
        first = relax(atoms, calculator, fmax, optimizer=optimizer, fix_symmetry=fix_symmetry,
                      trajectory=trajectory, optimizer_kwargs=optimizer_kwargs, warn=False,
                      **kwargs)  # fmt: skip
        if not first.converged:
            if warn:
                warnings.warn(not_converged_message(first, fmax), ConvergenceWarning, stacklevel=2)
            return first
        result = polish_relaxation(first, calculator, polish_fmax, **kwargs)
        if warn and not result.converged:
            warnings.warn(not_converged_message(result, polish_fmax, "polish"),
                          ConvergenceWarning, stacklevel=2)  # fmt: skip
        return result
    if optimizer_kwargs and is_auto(optimizer):
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
    if initial_hessian is not None and target is work:
        seed_hessian(opt, initial_hessian)
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
        from ..structure_io import write_structures

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
        from ..calculator import TDNCalculator

        calculator = TDNCalculator("auto")
    return calculator


def polish_relaxation(
    first: RelaxResult,
    calculator: Calculator,
    fmax: float = 0.001,
    *,
    steps: int = 500,
    cell_filter: str | None = None,
    loginterval: int = 1,
    filter_kwargs: dict[str, Any] | None = None,
    guard: DivergenceGuard | None = DEFAULT_GUARD,
    logfile: str | os.PathLike | None = None,
) -> RelaxResult:
    """The float64 polish: continue the relaxation ``first`` (converged at a looser ``fmax``)
    from its final structure, constraints included, with
    :data:`~tdn_calc.relax.options.POLISH_OPTIMIZER` on ``calculator``'s float64 twin
    (:func:`~tdn_calc.relax.precision.float64_calculator`) down to ``fmax`` eV/Å.

    Used by ``relax(..., polish=True)`` and by the batched job (``tdn-relax --polish``).

    Returns:
        Both stages merged (:func:`~tdn_calc.relax.result.merge_results`): ``converged``
        means ``fmax`` was reached; steps and histories cover both. No warning is emitted.
    """
    second = relax(first.atoms.copy(), float64_calculator(calculator), fmax, steps=steps,
                   optimizer=POLISH_OPTIMIZER, cell_filter=cell_filter, loginterval=loginterval,
                   filter_kwargs=filter_kwargs, guard=guard, logfile=logfile,
                   warn=False)  # fmt: skip
    return merge_results(first, second)


def student_uncertain(calculator: Calculator, atoms: Atoms, converged: bool = True
                      ) -> bool | None:
    """Whether ``calculator`` (a TDN calculator with extrapolation scores) flags any atom of
    ``atoms`` (``results["uncertain"]``), or, at this minimum, its model card's committee
    partner disagrees on a force by more than its threshold (:mod:`tdn_calc.committee`) or
    the adsorbate's softest mode is softer than the card's curvature threshold
    (:mod:`tdn_calc.soft_modes`; only where the student ``converged``); ``None`` when no
    signal applies. Reuses the calculator's results when it last saw ``atoms``."""
    from ..calculator import calculator_on_model_device
    from ..committee import add_committee_scores, partner_for_loaded_model
    from ..soft_modes import add_curvature_scores, threshold_for_loaded_model
    from ..uncertainty import uncertain_atoms

    probe = atoms.copy()
    probe.calc = calculator
    probe.get_potential_energy()
    scores = dict(getattr(calculator, "results", {}))
    committee_threshold = curvature_threshold = None
    model = getattr(calculator, "model", None)
    if "forces" in scores:
        partner = partner_for_loaded_model(model)
        committee_threshold = add_committee_scores(scores, atoms, scores["forces"], partner)
    threshold = None if model is None else threshold_for_loaded_model(model)
    if threshold is not None and converged:  # a minimum's check; not one: finished anyway
        plain = calculator_on_model_device(model, extrapolation=False, uncertainty=False)
        curvature_threshold = add_curvature_scores(scores, atoms, plain, threshold)
    flags = uncertain_atoms(scores, getattr(calculator, "uncertainty_threshold", None),
                            committee_threshold, curvature_threshold)
    return None if flags is None else bool(np.any(flags))


def finish_with_teacher(
    first: RelaxResult,
    stage: TeacherStage,
    uncertain: bool | None,
    fmax: float,
    *,
    steps: int = 500,
    optimizer: str | type[Optimizer] = "auto",
    cell_filter: str | None = None,
    logfile: str | os.PathLike | None = None,
    guard: DivergenceGuard | None = DEFAULT_GUARD,
    student: Calculator | None = None,
) -> RelaxResult:
    """The teacher stage after a student relaxation ``first``: continue it with
    ``stage.finish`` from its final structure (constraints included) to ``fmax`` eV/Å when
    :meth:`~tdn_calc.relax.teacher.TeacherStage.wants_finish` says so (``uncertain``: the
    student's flag at its minimum, or a student that did not converge), then verify the
    final structure with ``stage.verify``. With the ``student`` calculator, a teacher BFGS
    without cell filter starts from the student's Hessian at its minimum
    (:func:`~tdn_calc.relax.hessian.student_hessian`) instead of a diagonal guess.

    Returns:
        ``first`` or both stages merged, with ``engine``, ``student_steps``,
        ``teacher_steps``, the teacher fields and ``uncertain`` set. No warning is emitted.
    """
    start = stage.usage()
    result = dataclasses.replace(first, student_steps=first.n_steps, uncertain=uncertain)
    known = None  # (teacher, energy, fmax) at the current final structure
    if stage.needs_single_point(uncertain, first.converged):
        known = (stage.finish, *stage.single_point(stage.finish, first.atoms))
    if stage.wants_finish(uncertain, known[2] if known else None, first.converged):
        hessian = None
        if student is not None and resolve_cell_filter(cell_filter) == "none" and \
                resolve_optimizer(optimizer, len(first.atoms)) is BFGS:
            hessian = student_hessian(first.atoms, student)
        second = relax(first.atoms, stage.calculator(stage.finish), fmax, steps=steps,
                       optimizer=optimizer, cell_filter=cell_filter, logfile=logfile,
                       guard=guard, warn=False, initial_hessian=hessian)  # fmt: skip
        result = dataclasses.replace(merge_results(first, second, "teacher"),
                                     engine="student+teacher", student_steps=first.n_steps,
                                     teacher_steps=second.n_steps, uncertain=uncertain)  # fmt: skip
        known = (stage.finish, float(second.atoms.get_potential_energy()),
                 constrained_fmax(second.atoms))  # fmt: skip
    return _verified(result, stage, known, start)


def teacher_relax(atoms: Atoms, stage: TeacherStage, fmax: float, **kwargs: Any) -> RelaxResult:
    """Relax ``atoms`` with the teacher ``stage.finish`` alone (a structure no TDN model
    covers) to ``fmax`` eV/Å, then verify it with ``stage.verify``; ``engine == "teacher"``.
    ``kwargs``: options of :func:`relax` (``steps``, ``optimizer``, ``cell_filter``,
    ``fix_symmetry``, ``trajectory``, ``logfile``, ``loginterval``, ``guard``). No warning
    is emitted."""
    start = stage.usage()
    result = relax(atoms, stage.calculator(stage.finish), fmax, warn=False, **kwargs)
    result = dataclasses.replace(result, engine="teacher", student_steps=0,
                                 teacher_steps=result.n_steps)  # fmt: skip
    known = (stage.finish, float(result.atoms.get_potential_energy()),
             constrained_fmax(result.atoms))  # fmt: skip
    return _verified(result, stage, known, start)


def _verified(result: RelaxResult, stage: TeacherStage,
              known: tuple[str, float, float] | None,
              start: tuple[int, float]) -> RelaxResult:  # fmt: skip
    """``result`` with the verifying teacher's energy, fmax and ``verified`` (``known``: a
    teacher's ``(name, energy, fmax)`` at the final structure, reused when it is the verify
    teacher or no verify teacher is named) and the teacher calls and time since ``start``
    (:meth:`~tdn_calc.relax.teacher.TeacherStage.usage`)."""
    if stage.verify and not (known and stage.same(known[0], stage.verify)):
        known = (stage.verify, *stage.single_point(stage.verify, result.atoms))
    fields: dict[str, Any] = {}
    if known is not None:
        fields = {"teacher_energy": known[1], "teacher_fmax": known[2],
                  "verified": bool(known[2] <= stage.verify_fmax)}  # fmt: skip
    calls, seconds = stage.usage()
    return dataclasses.replace(result, teacher_calls=calls - start[0],
                               teacher_time=seconds - start[1], **fields)  # fmt: skip
