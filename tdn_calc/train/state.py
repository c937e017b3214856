"""The training state checkpoint: plain tensors, numbers and strings only.

Written with ``torch.save`` through an atomic replace and read with
``torch.load(weights_only=True)``, so loading never runs pickled code. Holds model, EMA,
optimizer and scheduler state, the RNG states of torch, NumPy and Python, the position in
the data (epoch, batch within the epoch, step), the best validation metric and the configs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..fileio import atomic_write

STATE_FORMAT = "tdn-calc-train-state"
STATE_VERSION = 1


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), NumPy's legacy global RNG and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (saved, not used)
    py_version, py_internal, py_gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(py_version), "internal": list(py_internal),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plain data) atomically to ``path``."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, **state}
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return Path(path)


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state saved by :func:`save_state` (safely: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state at {str(path)!r}; nothing to resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, unsafe globals
        raise CheckpointError(f"cannot read training state {str(path)!r}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a tdn-calc training state")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{str(path)!r} has training-state version {state.get('version')}; "
                              f"this tdn-calc reads version {STATE_VERSION}")
    return state
