"""Old path of :mod:`tdn_calc.relax.job` (and its inputs/outputs), kept for code not yet moved."""

import warnings

from .relax import inputs, job, outputs

__all__ = [n for m in (inputs, outputs, job) for n in vars(m) if not n.startswith("_")]
globals().update({n: getattr(m, n) for m in (inputs, outputs, job) for n in vars(m)
                  if not n.startswith("_")})  # fmt: skip
warnings.warn("tdn_calc.relax_job moved to tdn_calc.relax.job", DeprecationWarning, 2)
