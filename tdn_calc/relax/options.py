"""The rules every relaxation path shares: optimizer names, ``optimizer="auto"``, cell
filters, the polish optimizer and the default batch size.

Light on purpose (no torch, no ASE optimizers): the CLI reads these constants for its options
and ``--help`` text without loading torch.
"""

from __future__ import annotations

from ..errors import InputError

#: ASE optimizers of the single-structure path, by name (:func:`tdn_calc.relax.relax`).
ASE_OPTIMIZERS = ("FIRE", "BFGS", "LBFGS", "BFGSLineSearch")
#: ``optimizer="auto"``: BFGS up to this many atoms, FIRE above. At the same ``fmax``, BFGS
#: ends much nearer the minimum of floppy molecules (GFN2-xTB itself, 100 test molecules from
#: noisy starts to 0.05 eV/Å: within 1 meV/atom of the tight minimum 77 % with BFGS, 38 % with
#: FIRE; docs/benchmarks.md), but its dense ``[3n, 3n]`` Hessian is diagonalised every step.
BFGS_MAX_ATOMS = 300
#: Optimizer of the float64 polish: quasi-Newton near the minimum (FIRE wandered at 1e-3 eV/Å
#: on floppy molecules: its float64 polish of aspirin with tdn-organic ended at 0.37 eV/Å
#: after 500 steps).
POLISH_OPTIMIZER = "BFGS"
#: Most structures the batched relaxation evaluates together (``tdn-relax --batch-size``,
#: :func:`tdn_calc.relax.batch_relax`, the adsorption workflow); halved on out-of-memory.
DEFAULT_BATCH_SIZE = 32
#: Cell filters of the single-structure path (``"none"``: positions only).
CELL_FILTERS = ("none", "frechet", "exp")


def is_auto(optimizer: object) -> bool:
    """Whether ``optimizer`` is the name ``"auto"`` (any case)."""
    return isinstance(optimizer, str) and optimizer.lower() == "auto"


def choose_optimizer(
    optimizer: str, n_atoms: int | None = None, names: tuple[str, ...] = ASE_OPTIMIZERS
) -> str:
    """The canonical name of ``optimizer`` among ``names`` (case-insensitive).

    ``"auto"`` is ``"BFGS"`` for ``n_atoms <= BFGS_MAX_ATOMS`` (or ``n_atoms`` unknown) and
    ``"FIRE"`` above: the one place this rule is written.

    Args:
        optimizer: ``"auto"`` or a name in ``names``.
        n_atoms: number of atoms of the structure to relax (``None``: not known).
        names: the optimizers allowed (default: the ASE ones).

    Raises:
        InputError: ``optimizer`` is neither ``"auto"`` nor in ``names`` (listing them).
    """
    if is_auto(optimizer):
        return "BFGS" if n_atoms is None or n_atoms <= BFGS_MAX_ATOMS else "FIRE"
    canonical = {name.lower(): name for name in names}
    key = str(optimizer).lower()
    if key not in canonical:
        raise InputError(f"unknown optimizer {optimizer!r}; use auto or one of {', '.join(names)}")
    return canonical[key]


def resolve_cell_filter(cell_filter: str | None) -> str:
    """``None``/``"none"``/``"frechet"``/``"exp"`` (any case) -> the lower-case name.

    Raises:
        InputError: an unknown filter (listing the known ones).
    """
    key = "none" if cell_filter is None else str(cell_filter).lower()
    if key not in CELL_FILTERS:
        raise InputError(f"unknown cell filter {cell_filter!r}; use one of {CELL_FILTERS}")
    return key
