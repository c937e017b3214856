"""Old path of :mod:`tdn_calc.relax.guard`, kept for code not yet moved; to be removed."""

import warnings

from .relax.guard import DEFAULT_GUARD, DivergenceGuard, min_pair_distance

__all__ = ["DEFAULT_GUARD", "DivergenceGuard", "min_pair_distance"]
warnings.warn("tdn_calc.relax_guard moved to tdn_calc.relax.guard", DeprecationWarning, 2)
