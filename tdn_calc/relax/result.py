"""What a relaxation returns: :class:`RelaxResult`, its not-converged warning and message,
and the merge of a relaxation with its continuation (the float64 polish)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ase import Atoms


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
        engine: who relaxed it: ``"student"`` (the calculator given, e.g. a TDN model),
            ``"student+teacher"`` (finished by a teacher, ``relax(..., finish=...)``) or
            ``"teacher"`` (the teacher alone).
        student_steps / teacher_steps: steps of each engine (``n_steps`` is their sum;
            ``student_steps`` ``None``: all of ``n_steps`` are the student's).
        teacher_calls: teacher calculations spent on this structure (finishing and
            verifying); teacher_time: seconds spent in them.
        teacher_energy: the verifying teacher's energy at the final structure, eV.
        teacher_fmax: its max force there, eV/Å (fixed atoms excluded).
        verified: ``teacher_fmax <= verify_fmax`` (``None``: not verified).
        uncertain: the student flagged atoms it does not know at its minimum (``None``: no
            extrapolation scores).
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
    engine: str = "student"
    student_steps: int | None = None
    teacher_steps: int = 0
    teacher_calls: int = 0
    teacher_time: float = 0.0
    teacher_energy: float | None = None
    teacher_fmax: float | None = None
    verified: bool | None = None
    uncertain: bool | None = None

    @property
    def diverged(self) -> bool:
        """Whether the divergence guard stopped it (``reason`` starts with ``"diverged"``)."""
        return bool(self.reason and self.reason.startswith("diverged"))


def merge_results(first: RelaxResult, second: RelaxResult, stage: str = "polish") -> RelaxResult:
    """One result for a relaxation continued by ``second`` (e.g. a float64 polish, or a
    teacher's finish): final state and convergence of ``second``, steps, times and histories
    of both; a reason for not converging starts with ``stage``."""
    return RelaxResult(
        atoms=second.atoms,
        converged=second.converged,
        n_steps=first.n_steps + second.n_steps,
        energy=second.energy,
        fmax=second.fmax,
        wall_time=first.wall_time + second.wall_time,
        reason=None if second.converged else f"{stage}: {second.reason}",
        energies=first.energies + second.energies,
        fmaxs=first.fmaxs + second.fmaxs,
        optimizer="+".join(o for o in (first.optimizer, second.optimizer) if o) or None,
    )


def not_converged_message(result: RelaxResult, fmax: float, label: str = "") -> str:
    """``"<label>: relaxation not converged after N steps: fmax X eV/Å, target Y eV/Å
    (reason)"`` (``fmax``: the target, eV/Å)."""
    prefix = f"{label}: " if label else ""
    return (
        f"{prefix}relaxation not converged after {result.n_steps} steps: fmax "
        f"{result.fmax:.4f} eV/Å, target {fmax} eV/Å ({result.reason})"
    )
