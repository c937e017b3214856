"""Old path of :func:`tdn_calc.relax.batch_relax`, kept for code not yet moved."""

import warnings

from .relax.optimizers import BATCH_OPTIMIZERS, BFGSParams, FireParams
from .relax.optimizers import BFGSMemory as _BFGSState
from .relax.queue import batch_relax, is_out_of_memory

__all__ = ["BATCH_OPTIMIZERS", "BFGSParams", "FireParams", "_BFGSState", "batch_relax",
           "is_out_of_memory"]  # fmt: skip
warnings.warn("tdn_calc.batch_relax moved to tdn_calc.relax.queue", DeprecationWarning, 2)
