"""Relaxation, one home per concept (names re-exported here, imported lazily so that the CLI
can read :mod:`~tdn_calc.relax.options` without loading torch):

- :mod:`~tdn_calc.relax.options`: optimizer names, ``choose_optimizer`` (``"auto"``), cell
  filters, the polish optimizer, the default batch size;
- :mod:`~tdn_calc.relax.result`: :class:`RelaxResult`, :class:`ConvergenceWarning`;
- :mod:`~tdn_calc.relax.guard`: the divergence guard;
- :mod:`~tdn_calc.relax.single`: :func:`relax`, one structure with ASE's optimizers, and its
  float64 polish (:mod:`~tdn_calc.relax.precision`: float64 twins of models/calculators);
- :mod:`~tdn_calc.relax.state`, :mod:`~tdn_calc.relax.optimizers` (``OPTIM_REGISTRY`` of
  ``(init, step)`` pairs: FIRE, BFGS) and :mod:`~tdn_calc.relax.queue` (:func:`batch_relax`,
  the queue and out-of-memory eviction): many structures at once on a TDN model;
- :mod:`~tdn_calc.relax.teacher`: :class:`TeacherStage`, the teachers that verify and
  finish a relaxation (``verify=``/``finish=``; the relaxations are
  :func:`~tdn_calc.relax.single.finish_with_teacher` and
  :func:`~tdn_calc.relax.single.teacher_relax`);
- :mod:`~tdn_calc.relax.job` (with :mod:`~tdn_calc.relax.inputs` and
  :mod:`~tdn_calc.relax.outputs`): the work behind ``tdn-relax``.

Import submodules with ``from tdn_calc.relax import job`` or ``from tdn_calc.relax.job import
RelaxJob``: the attribute ``tdn_calc.relax`` is the function :func:`relax` (public API), so
``import tdn_calc.relax.job as job`` does not work.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "relax": "single",
    "polish_relaxation": "single",
    "resolve_optimizer": "single",
    "snapshot": "single",
    "RelaxResult": "result",
    "ConvergenceWarning": "result",
    "merge_results": "result",
    "DivergenceGuard": "guard",
    "DEFAULT_GUARD": "guard",
    "batch_relax": "queue",
    "OPTIM_REGISTRY": "optimizers",
    "FireParams": "optimizers",
    "BFGSParams": "optimizers",
    "RelaxJob": "job",
    "RelaxSettings": "settings",
    "TeacherStage": "teacher",
    "float64_model": "precision",
    "float64_calculator": "precision",
    "choose_optimizer": "options",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # cached: later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
