"""Old path of :mod:`tdn_calc.relax.single` (and friends), kept for code not yet moved."""

import warnings

from .relax.options import BFGS_MAX_ATOMS, CELL_FILTERS, POLISH_OPTIMIZER, resolve_cell_filter
from .relax.precision import float64_calculator, float64_model
from .relax.result import ConvergenceWarning, RelaxResult, merge_results, not_converged_message
from .relax.single import OPTIMIZERS, relax, resolve_optimizer, snapshot

__all__ = ["BFGS_MAX_ATOMS", "CELL_FILTERS", "OPTIMIZERS", "POLISH_OPTIMIZER",
           "ConvergenceWarning", "RelaxResult", "float64_calculator", "float64_model",
           "merge_results", "not_converged_message", "relax", "resolve_cell_filter",
           "resolve_optimizer", "snapshot"]  # fmt: skip
warnings.warn("tdn_calc.relaxation moved to tdn_calc.relax", DeprecationWarning, 2)
