"""Options of a relaxation job (``tdn-relax``) and whether the batched path can run them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..structure_io import StructureRecord
from . import options
from .options import DEFAULT_BATCH_SIZE, choose_optimizer, is_auto, resolve_cell_filter


@dataclass
class RelaxSettings:
    """Options of a relaxation job (units: eV/Å for ``fmax``, Å for ``fix_below``)."""

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
