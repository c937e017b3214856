"""tdn-calc: Tensor Decomposition Network interatomic potentials for ASE.

Public API: :class:`TDNCalculator`, :func:`load_model`, :func:`relax` (and the
``tdn-relax`` / ``tdn`` command-line tools). Heavy modules import lazily so that
``import tdn_calc`` and ``tdn-relax --help`` stay fast.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
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

# PyTorch puts CPU tensors of >= 2 MB on transparent huge pages when this is set (it reads it
# at allocation time). The [n_edges, 9, C] features of large cells are that big; without huge
# pages the time per atom grew 1.3x from 256 to 2,048 Cu atoms (TLB misses and page faults),
# with them it stays flat: benchmarks/model_speed.py, docs/benchmarks.md. Set
# THP_MEM_ALLOC_ENABLE=0 before importing tdn_calc to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# Idle OpenMP threads sleep instead of spinning. With the default (spin) policy, torch's
# threads fight other busy processes for the cores: relaxing aspirin with tdn-relax took 31 s
# instead of 1.1 s beside two busy processes on 2 cores (docs/cli.md). OpenMP reads it once,
# when torch loads it: import tdn_calc before torch, or set OMP_WAIT_POLICY yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
        globals()[name] = value  # cached: later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'tdn_calc' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``tdn_calc`` itself: its attribute ``relax`` stays the public function :func:`relax`.

    Python binds a subpackage to an attribute of its parent when it is first imported, so
    ``import tdn_calc.relax.single`` would otherwise turn ``tdn_calc.relax`` into the package
    ``tdn_calc/relax/``. That package stays in ``sys.modules`` and all ``from tdn_calc.relax
    import ...`` forms work; only ``import tdn_calc.relax.x as y`` does not.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "relax" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
