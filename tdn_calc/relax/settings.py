"""Options of a relaxation job (``tdn-relax``) and whether the batched path can run them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..structure_io import StructureRecord
from . import options
from .options import DEFAULT_BATCH_SIZE, choose_optimizer, is_auto, resolve_cell_filter

if TYPE_CHECKING:
    from .teacher import TeacherStage


@dataclass
class RelaxSettings:
    """Options of a relaxation job (units: eV/Å for ``fmax`` and ``verify_fmax``, Å for
    ``fix_below``). ``verify``/``finish`` name teachers (:mod:`tdn_calc.teachers`), see
    :func:`tdn_calc.relax.relax` and docs/advanced.md ("Verify and finish with a teacher")."""

    fmax: float = 0.05
    steps: int = 500
    optimizer: str = "auto"
    cell_filter: str = "none"
    fix_symmetry: bool = False
    fix_bottom_layers: int | None = None
    fix_below: float | None = None
    trajectory: str | None = None
    loginterval: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    polish: bool = False
    polish_fmax: float = 0.001
    verify: str | None = None
    verify_fmax: float | None = None
    finish: str | None = None
    finish_when: str = "uncertain"

    def teacher_stage(self, device: str = "cpu") -> TeacherStage | None:
        """The teachers of ``verify``/``finish`` (:class:`~tdn_calc.relax.teacher.TeacherStage`,
        built now), or ``None`` when neither is set. ``verify_fmax`` ``None``: 3 x ``fmax``.

        Raises:
            InputError: an unknown teacher or one whose package is missing.
        """
        from .teacher import teacher_stage

        return teacher_stage(self.verify, self.finish, self.finish_when, self.fmax,
                             self.verify_fmax, device)  # fmt: skip

    def batched(self, records: Sequence[StructureRecord]) -> bool:
        """Whether the batched relaxation can do this job (else ASE, one by one). An explicit
        BFGS is batched only when no structure exceeds ``BFGS_MAX_ATOMS`` (every batched
        structure keeps a dense ``[3n, 3n]`` Hessian)."""
        from ase.constraints import FixAtoms

        from .optimizers import BATCH_OPTIMIZERS

        auto = is_auto(self.optimizer)
        name = choose_optimizer(self.optimizer)  # checks the name; "auto" is chosen per size
        return (
            self.batch_size > 1
            and (auto or name in BATCH_OPTIMIZERS)
            and (auto or name != "BFGS"
                 or all(len(r.atoms) <= options.BFGS_MAX_ATOMS for r in records))
            and resolve_cell_filter(self.cell_filter) == "none"
            and not self.fix_symmetry
            and self.trajectory is None
            and all(isinstance(c, FixAtoms) for r in records for c in r.atoms.constraints)
        )
