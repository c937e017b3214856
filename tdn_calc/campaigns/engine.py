"""The relaxation engine of a campaign: what runs inside a task (in-process or on a Dask
worker). Energies in eV, forces in eV/Å.

An :class:`Engine` is small and picklable; :func:`relax_items` relaxes a batch of
``(key, Atoms)`` with it and returns plain :class:`Relaxed` records. A TDN model (registered
name such as ``tdn-catalysis``, or a checkpoint path) relaxes the batch together
(:func:`tdn_calc.relax.batch_relax`) and scores every final structure against the
model's training set (``extrapolation_max``, > 1: extrapolating); a teacher
(:func:`tdn_calc.teachers.get_teacher` name, e.g. ``emt``) relaxes each structure with ASE
(:func:`tdn_calc.relax.relax`). With ``verify``, the teacher's single-point energy of
each final structure is added. Loaded models and calculators are cached per process.
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
    per batched step) and ``verify`` (a teacher name for single points, or None)."""

    model: str
    device: str = "auto"
    dtype: str = "float32"
    fmax: float = 0.05
    steps: int = 300
    optimizer: str = "auto"
    batch_size: int = 16
    verify: str | None = None


@dataclass
class Relaxed:
    """One relaxed structure: ``atoms`` (energy and forces attached), ``energy`` eV,
    ``converged``, ``steps``, ``fmax`` eV/Å, ``extrapolation_max`` (TDN models with a
    training-set summary, else None), ``teacher_energy`` eV (with ``verify``)."""

    key: str
    atoms: Atoms
    energy: float
    converged: bool
    steps: int
    fmax: float
    extrapolation_max: float | None = None
    teacher_energy: float | None = None


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


def relax_items(engine: Engine, items: Sequence[tuple[str, Atoms]]) -> list[Relaxed]:
    """Relax every ``(key, atoms)`` of ``items`` with ``engine``; one :class:`Relaxed` per
    item, in order."""
    from ..relax.single import ConvergenceWarning, relax

    structures = [a for _, a in items]
    extrapolation: list[float | None] = [None] * len(items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if is_teacher(engine.model):
            calc = calculator(engine.model, engine.device)
            results = [
                relax(
                    a,
                    calc,
                    fmax=engine.fmax,
                    steps=engine.steps,
                    optimizer=engine.optimizer,
                    warn=False,
                )
                for a in structures
            ]
        else:
            from ..relax.job import annotate_extrapolation
            from ..relax.queue import batch_relax

            model, dist = _tdn_model(engine, structures)
            results = batch_relax(
                structures,
                model,
                fmax=engine.fmax,
                steps=engine.steps,
                batch_size=engine.batch_size,
                optimizer=engine.optimizer,
                warn=False,
            )
            if dist is not None:
                for k, r in enumerate(results):
                    annotate_extrapolation(r.atoms, model, dist)
                    extrapolation[k] = float(r.atoms.info["extrapolation_max"])
    out = []
    for (key, _), r, x in zip(items, results, extrapolation, strict=True):
        out.append(
            Relaxed(
                key,
                r.atoms,
                float(r.energy),
                bool(r.converged),
                int(r.n_steps),
                float(r.fmax),
                x,
                _single_point(engine, r.atoms),
            )
        )
    return out


def _single_point(engine: Engine, atoms: Atoms) -> float | None:
    """The ``verify`` teacher's energy (eV) of ``atoms``, or None without one."""
    if not engine.verify:
        return None
    probe = atoms.copy()
    probe.calc = calculator(engine.verify, engine.device)
    return float(probe.get_potential_energy())
