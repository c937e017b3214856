"""tdn-calc: Tensor Decomposition Network interatomic potentials for ASE.

Public API: :class:`TDNCalculator`, :func:`load_model`, :func:`relax` (and the
``tdn-relax`` / ``tdn`` command-line tools). Heavy modules import lazily so that
``import tdn_calc`` and ``tdn-relax --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    CheckpointError,
    ConfigError,
    InputError,
    ModelNotFoundError,
    TDNError,
    UnsupportedElementError,
)

__version__ = "0.1.0"

_LAZY = {
    "TDNCalculator": "tdn_calc.calculator",
    "load_model": "tdn_calc.checkpoint",
    "save_model": "tdn_calc.checkpoint",
    "list_models": "tdn_calc.registry",
    "model_info": "tdn_calc.registry",
    "relax": "tdn_calc.relax",
    "RelaxResult": "tdn_calc.relax",
    "TDNConfig": "tdn_calc.nn.config",
    "TDNModel": "tdn_calc.nn.model",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InputError",
    "ModelNotFoundError",
    "TDNError",
    "UnsupportedElementError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        # importing the submodule tdn_calc.relax binds the *module* to tdn_calc.relax; bind
        # the function instead so that `from tdn_calc import relax` gives the function
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tdn_calc' has no attribute {name!r}")
