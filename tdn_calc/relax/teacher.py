"""Teachers in a relaxation: verify the student's final structures with a teacher single point
and finish them with the teacher (``tdn-relax --verify/--finish``, ``relax(..., verify=...,
finish=...)``).

:class:`TeacherStage` holds the teacher calculators of a run (built once, up front, from the
registry :mod:`tdn_calc.teachers`), counts their calculations and time, and decides which
structures to finish (:data:`FINISH_WHEN`). The relaxations themselves are
:func:`tdn_calc.relax.single.finish_with_teacher` and
:func:`tdn_calc.relax.single.teacher_relax`. Units: eV, eV/Å, s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import InputError

#: When ``finish`` continues a structure with the teacher: flagged by the student's
#: extrapolation scores, failing the teacher single point (``verify_fmax``), either (the
#: single point only where the student did not flag: flagged ones are finished without it),
#: or every one.
FINISH_WHEN = ("uncertain", "unverified", "uncertain-or-unverified", "always")
#: ``verify_fmax`` when not given: this many times the relaxation's ``fmax``.
VERIFY_FMAX_FACTOR = 3.0


def default_verify_fmax(fmax: float, verify_fmax: float | None = None) -> float:
    """``verify_fmax`` (eV/Å), or :data:`VERIFY_FMAX_FACTOR` x ``fmax`` when ``None``.

    Raises:
        InputError: a ``verify_fmax`` that is not positive.
    """
    if verify_fmax is None:
        return VERIFY_FMAX_FACTOR * fmax
    if not verify_fmax > 0:
        raise InputError(f"need verify_fmax > 0 eV/Å, got {verify_fmax}")
    return float(verify_fmax)


def constrained_fmax(atoms: Atoms) -> float:
    """Max force norm of ``atoms``' calculator with its constraints applied (fixed atoms
    count 0), eV/Å."""
    forces = np.asarray(atoms.get_forces(apply_constraint=True))
    return float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0


@dataclass
class _Meter:
    """A teacher calculator whose ``calculate`` calls are counted and timed."""

    calc: Any
    calls: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        inner = self.calc.calculate

        def calculate(*args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            try:
                inner(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start

        self.calc.calculate = calculate  # get_property() calls self.calculate


@dataclass
class TeacherStage:
    """The teachers of one relaxation run.

    Args:
        verify: teacher (registry name, alias, ``package.module:factory``, optionally with a
            JSON object of keyword arguments) for one single point at every final structure.
        finish: teacher that continues the relaxation from the student's minimum.
        finish_when: which structures ``finish`` continues (:data:`FINISH_WHEN`).
        verify_fmax: a structure is ``verified`` when the teacher's max force (fixed atoms
            excluded) is at most this, eV/Å.
        device: device of the neural-network teachers.

    Raises:
        InputError: an unknown teacher, a missing teacher package, a bad ``finish_when``.
    """

    verify: str | None = None
    finish: str | None = None
    finish_when: str = "uncertain"
    verify_fmax: float = 0.15
    device: str = "cpu"
    _meters: dict[str, _Meter] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from ..teachers import canonical_teacher_name, get_teacher

        if self.finish_when not in FINISH_WHEN:
            raise InputError(f"unknown finish_when {self.finish_when!r}; use one of "
                             f"{', '.join(FINISH_WHEN)}")  # fmt: skip
        if not self.verify_fmax > 0:
            raise InputError(f"need verify_fmax > 0 eV/Å, got {self.verify_fmax}")
        for name in (self.verify, self.finish):
            if name and canonical_teacher_name(name) not in self._meters:
                self._meters[canonical_teacher_name(name)] = _Meter(
                    get_teacher(name, device=self.device))

    @property
    def active(self) -> bool:
        """Whether any teacher takes part."""
        return bool(self.verify or self.finish)

    def calculator(self, name: str) -> Any:
        """The (counted) calculator of teacher ``name`` (``verify`` or ``finish``)."""
        from ..teachers import canonical_teacher_name

        return self._meters[canonical_teacher_name(name)].calc

    def same(self, a: str | None, b: str | None) -> bool:
        """Whether ``a`` and ``b`` name the same teacher (aliases and kwargs resolved)."""
        from ..teachers import canonical_teacher_name

        return bool(a and b) and canonical_teacher_name(a) == canonical_teacher_name(b)

    def usage(self) -> tuple[int, float]:
        """Teacher calculations and seconds spent so far (all teachers together)."""
        return (sum(m.calls for m in self._meters.values()),
                sum(m.seconds for m in self._meters.values()))  # fmt: skip

    def check_elements(self, labelled: Iterable[tuple[str, Atoms]]) -> None:
        """Refuse up front structures with elements a teacher does not cover.

        Args:
            labelled: ``(label, atoms)`` of every structure the teachers may see.

        Raises:
            InputError: naming the teacher, the structure and the elements.
        """
        from ..teachers import missing_elements, teacher_spec

        for name in dict.fromkeys(n for n in (self.verify, self.finish) if n):
            for label, atoms in labelled:
                missing = missing_elements(name, atoms.get_chemical_symbols())
                if missing:
                    raise InputError(
                        f"{label}: teacher {teacher_spec(name).name!r} does not cover "
                        f"{', '.join(missing)} (it covers {teacher_spec(name).elements})")

    def single_point(self, name: str, atoms: Atoms) -> tuple[float, float]:
        """``(energy, fmax)`` of teacher ``name`` at ``atoms`` (eV, eV/Å; constraints
        applied to the forces)."""
        probe = atoms.copy()
        probe.calc = self.calculator(name)
        return float(probe.get_potential_energy()), constrained_fmax(probe)

    def needs_single_point(self, uncertain: bool | None, converged: bool = True) -> bool:
        """Whether :meth:`wants_finish` needs the finish teacher's single point at the
        student's minimum: always under ``"unverified"``; under ``"uncertain-or-unverified"``
        only for a converged student that did not flag (the others are finished anyway)."""
        if not self.finish:
            return False
        if self.finish_when == "unverified":
            return True
        flagged = _flagged(uncertain, converged)  # finished without the single point
        return self.finish_when == "uncertain-or-unverified" and not flagged

    def wants_finish(
        self, uncertain: bool | None, teacher_fmax: float | None, converged: bool = True
    ) -> bool:
        """Whether ``finish`` continues a structure: ``uncertain`` from the student's scores
        (``None``: no scores), ``teacher_fmax`` from the finish teacher's single point (eV/Å;
        needed where :meth:`needs_single_point`), ``converged`` whether the student reached
        its fmax (a student that did not is finished under ``"uncertain"`` and
        ``"uncertain-or-unverified"`` too: it is not a minimum)."""
        if not self.finish:
            return False
        if self.finish_when == "always":
            return True
        flagged = _flagged(uncertain, converged)
        if self.finish_when == "uncertain":
            return flagged
        if self.finish_when == "uncertain-or-unverified" and flagged:
            return True
        return teacher_fmax is None or teacher_fmax > self.verify_fmax


def _flagged(uncertain: bool | None, converged: bool) -> bool:
    """The student's own case for a finish: it flagged its minimum, or did not converge (not
    a minimum)."""
    return bool(uncertain) or not converged


def teacher_stage(verify: str | None, finish: str | None, finish_when: str, fmax: float,
                  verify_fmax: float | None = None, device: str = "cpu"
                  ) -> TeacherStage | None:  # fmt: skip
    """The :class:`TeacherStage` of these options, or ``None`` when no teacher is named
    (``verify_fmax`` ``None``: :data:`VERIFY_FMAX_FACTOR` x ``fmax``, eV/Å)."""
    if not (verify or finish):
        return None
    return TeacherStage(verify=verify, finish=finish, finish_when=finish_when,
                        verify_fmax=default_verify_fmax(fmax, verify_fmax), device=device)
