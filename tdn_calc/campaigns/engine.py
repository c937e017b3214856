"""The relaxation engine of a campaign: what runs inside a task (in-process or on a Dask
worker). Energies in eV, forces in eV/Å.

An :class:`Engine` is small and picklable; :func:`relax_items` relaxes a batch of
``(key, Atoms)`` with it and returns plain :class:`Relaxed` records. The campaign's model is
the *student*: a TDN model (registered name such as ``tdn-catalysis``, or a checkpoint
path) relaxes the batch together (:func:`tdn_calc.relax.batch_relax`) and scores every
final structure against its training set (``extrapolation_max``, > 1: extrapolating;
``uncertain``: the model flags an atom, :func:`tdn_calc.uncertainty.uncertain_atoms`); a
teacher used as the model (:func:`tdn_calc.teachers.get_teacher` name, e.g. ``emt``)
relaxes each structure with ASE (:func:`tdn_calc.relax.relax`), its calls counted.

Then the teachers of the relax package take over
(:class:`~tdn_calc.relax.teacher.TeacherStage`,
:func:`~tdn_calc.relax.single.finish_with_teacher`, as ``tdn-relax --verify/--finish``):
``verify`` adds one teacher single point at each final structure; ``finish`` continues the
structures its ``finish_when`` rule picks (:data:`~tdn_calc.relax.teacher.FINISH_WHEN`)
with the teacher from the student's minimum to ``fmax``. Loaded models, calculators and
teacher stages are cached per process.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ase import Atoms

_CACHE: dict[tuple[Any, ...], Any] = {}


def is_teacher(name: str) -> bool:
    """``name`` is a teacher (registered name or ``package.module:factory``), not a TDN
    model."""
    from ..errors import InputError
    from ..teachers import split_teacher_name, teacher_spec

    try:
        teacher_spec(split_teacher_name(name)[0])
    except InputError:
        return False
    return True


@dataclass(frozen=True)
class Engine:
    """How to relax: ``model`` (TDN model name/path, or a teacher name), ``device``,
    ``dtype`` (TDN), ``fmax`` eV/Å, ``steps``, ``optimizer``, ``batch_size`` (structures
    per batched step), ``verify`` (a teacher name for single points, or None), ``finish``
    (a teacher name that continues the student's minima, or None) and ``finish_when``
    (which ones: :data:`~tdn_calc.relax.teacher.FINISH_WHEN`)."""

    model: str
    device: str = "auto"
    dtype: str = "float32"
    fmax: float = 0.05
    steps: int = 300
    optimizer: str = "auto"
    batch_size: int = 16
    verify: str | None = None
    finish: str | None = None
    finish_when: str = "uncertain"


@dataclass
class Relaxed:
    """One relaxed structure.

    Attributes:
        key: the caller's key.
        atoms: the final structure (energy and forces of the engine that relaxed it last
            attached).
        energy: its energy, eV (the teacher's when ``relaxed_by`` is ``student+teacher``).
        converged: the last engine reached ``fmax``.
        steps: optimizer steps of both engines.
        fmax: final max force, eV/Å.
        extrapolation_max: the TDN student's largest per-atom score at its own minimum
            (None without a training-set summary or for a teacher as the model).
        uncertain: the TDN student flags an atom at its minimum (None: no scores).
        relaxed_by: ``student`` (the model alone) or ``student+teacher`` (finished).
        student_energy: the student's energy at its minimum, eV.
        student_steps / teacher_steps: optimizer steps of each engine.
        student_converged: the student reached ``fmax`` before any finish.
        student_calls: calculator calls of a teacher used as the model (None for TDN
            models, which evaluate structures in batches).
        teacher_calls: calls of the verify/finish teacher (single points and steps).
        teacher_energy: the teacher's energy at ``atoms`` (verify single point or the end of
            the finish), eV; teacher_fmax: its max force there, eV/Å (fixed atoms
            excluded); verified: ``teacher_fmax`` <= the verify threshold.
    """

    key: str
    atoms: Atoms
    energy: float
    converged: bool
    steps: int
    fmax: float
    extrapolation_max: float | None = None
    teacher_energy: float | None = None
    uncertain: bool | None = None
    relaxed_by: str = "student"
    student_energy: float | None = None
    student_steps: int | None = None
    teacher_steps: int = 0
    student_converged: bool | None = None
    student_calls: int | None = None
    teacher_calls: int = 0
    teacher_fmax: float | None = None
    verified: bool | None = None

    @property
    def energy_source(self) -> str:
        """Whose energy ``energy`` is: ``teacher`` (finished) or ``student``."""
        return "student" if self.relaxed_by == "student" else "teacher"


def calculator(name: str, device: str = "auto", dtype: str = "float32") -> Any:
    """An ASE calculator for ``name``: a teacher, or a :class:`~tdn_calc.TDNCalculator` of
    the TDN model (cached per process)."""
    key = ("calc", name, device, dtype)
    if key not in _CACHE:
        if is_teacher(name):
            from ..teachers import get_teacher

            _CACHE[key] = get_teacher(name, device="cpu" if device == "auto" else device)
        else:
            from ..calculator import TDNCalculator

            _CACHE[key] = TDNCalculator(name, device=device, dtype=dtype)
    return _CACHE[key]


def _tdn_model(engine: Engine, structures: Sequence[Atoms]) -> tuple[Any, Any]:
    """``(model, training distribution or None)``, cached per process."""
    key = ("tdn", engine.model, engine.device, engine.dtype)
    if key not in _CACHE:
        from ..device import resolve_device
        from ..extrapolation import from_card
        from ..relax.inputs import load_job_model

        model, _ = load_job_model(
            engine.model, structures, str(resolve_device(engine.device)), engine.dtype
        )
        _CACHE[key] = (model, from_card(getattr(model, "card", None)))
    return _CACHE[key]


def teacher_stage(engine: Engine) -> Any:
    """The :class:`~tdn_calc.relax.teacher.TeacherStage` of ``engine``'s ``verify`` and
    ``finish`` teachers (cached per process, its ``finish_when`` set from ``engine``), or
    None without either."""
    if not (engine.verify or engine.finish):
        return None
    device = "cpu" if engine.device == "auto" else engine.device
    key = ("stage", engine.verify, engine.finish, device, engine.fmax)
    if key not in _CACHE:
        from ..relax.teacher import teacher_stage as build

        _CACHE[key] = build(
            engine.verify, engine.finish, engine.finish_when, engine.fmax, device=device
        )
    stage = _CACHE[key]
    stage.finish_when = engine.finish_when
    return stage


def _counted_model(engine: Engine) -> Any:
    """A teacher used as the model, as a stage whose calculator counts its calls (cached per
    process)."""
    device = "cpu" if engine.device == "auto" else engine.device
    key = ("model-stage", engine.model, device)
    if key not in _CACHE:
        from ..relax.teacher import TeacherStage

        _CACHE[key] = TeacherStage(finish=engine.model, device=device)
    return _CACHE[key]


#: What a student relaxation returns, one entry per structure: RelaxResults,
#: extrapolation_max, uncertain, calculator calls.
_StudentRun = tuple[list[Any], list[float | None], list[bool | None], list[int | None]]


def _teacher_as_model(engine: Engine, structures: Sequence[Atoms]) -> _StudentRun:
    """A teacher named as the model relaxes each structure with ASE, its calls counted:
    ``(results, scores (None), flags (None), calls)``."""
    from ..relax.single import relax

    model = _counted_model(engine)
    calc = model.calculator(engine.model)
    results, calls = [], []
    for atoms in structures:
        before = model.usage()[0]
        results.append(relax(atoms, calc, fmax=engine.fmax, steps=engine.steps,
                             optimizer=engine.optimizer, warn=False))  # fmt: skip
        calls.append(model.usage()[0] - before)
    none = [None] * len(structures)
    return results, none, list(none), calls


def _tdn_student(engine: Engine, structures: Sequence[Atoms]) -> _StudentRun:
    """The TDN model relaxes the structures together and scores each minimum:
    ``(results, extrapolation_max, uncertain, calls (None))``."""
    from ..committee import partner_for_loaded_model
    from ..relax.job import annotate_extrapolation
    from ..relax.queue import batch_relax
    from ..soft_modes import threshold_for_loaded_model
    from ..uncertainty import for_loaded_model

    model, dist = _tdn_model(engine, structures)
    signals = (dist, for_loaded_model(model),
               partner_for_loaded_model(model),  # a bad committee partner fails before relaxing
               threshold_for_loaded_model(model))  # so does a bad curvature threshold
    results = batch_relax(structures, model, fmax=engine.fmax, steps=engine.steps,
                          batch_size=engine.batch_size, optimizer=engine.optimizer,
                          warn=False)  # fmt: skip
    scores: list[float | None] = [None] * len(structures)
    flags: list[bool | None] = [None] * len(structures)
    if any(x is not None for x in signals):
        for k, r in enumerate(results):
            annotate_extrapolation(r.atoms, model, dist, r.converged)
            x, u = r.atoms.info.get("extrapolation_max"), r.atoms.info.get("uncertain")
            scores[k] = None if x is None else float(x)
            flags[k] = None if u is None else bool(u)
    return results, scores, flags, [None] * len(structures)


def relax_items(engine: Engine, items: Sequence[tuple[str, Atoms]]) -> list[Relaxed]:
    """Relax every ``(key, atoms)`` of ``items`` with ``engine``: the student, then its
    verify/finish teachers (:func:`~tdn_calc.relax.single.finish_with_teacher`, which
    decides by ``finish_when`` and the student's flags); one :class:`Relaxed` per item, in
    order."""
    from ..relax.single import ConvergenceWarning, finish_with_teacher

    structures = [a for _, a in items]
    student = _teacher_as_model if is_teacher(engine.model) else _tdn_student
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        students, scores, flags, calls = student(engine, structures)
        stage = teacher_stage(engine)
        hessian_source = None  # the student's calculator seeds a finishing BFGS
        if stage is not None and stage.finish:
            hessian_source = calculator(engine.model, engine.device, engine.dtype)
        finals = students if stage is None else [
            finish_with_teacher(r, stage, flag, engine.fmax, steps=engine.steps,
                                optimizer=engine.optimizer, student=hessian_source)
            for r, flag in zip(students, flags, strict=True)
        ]  # fmt: skip
    out = []
    for (key, _), s, r, x, u, n in zip(items, students, finals, scores, flags, calls,
                                       strict=True):  # fmt: skip
        out.append(Relaxed(
            key, r.atoms, float(r.energy), bool(r.converged), int(r.n_steps), float(r.fmax),
            extrapolation_max=x, teacher_energy=r.teacher_energy, uncertain=u,
            relaxed_by=r.engine, student_energy=float(s.energy), student_steps=int(s.n_steps),
            teacher_steps=int(r.teacher_steps), student_converged=bool(s.converged),
            student_calls=n, teacher_calls=int(r.teacher_calls), teacher_fmax=r.teacher_fmax,
            verified=r.verified,
        ))  # fmt: skip
    return out
