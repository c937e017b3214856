"""Training data: the HDF5 frame format, readers, shards, splits, summaries and importers.

The pipelines that generate data (molecules, catalysis, teachers) are in
:mod:`tdn_calc.datagen`; they write through this package, which never imports them.

Format description: docs/data_format.md. Names import lazily (torch, h5py, rdkit, tblite are
only loaded by the modules that need them).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Frame": "tdn_calc.data.frames",
    "FrameKind": "tdn_calc.data.frames",
    "H5Writer": "tdn_calc.data.h5format",
    "ShardedWriter": "tdn_calc.data.shards",
    "list_shards": "tdn_calc.data.shards",
    "read_identifiers": "tdn_calc.data.shards",
    "H5Dataset": "tdn_calc.data.dataset",
    "Collater": "tdn_calc.data.dataset",
    "Split": "tdn_calc.data.split",
    "make_split": "tdn_calc.data.split",
    "load_split": "tdn_calc.data.split",
    "load_or_make_split": "tdn_calc.data.split",
    "split_path": "tdn_calc.data.split",
    "import_ase": "tdn_calc.data.importers",
    "import_pubchemqcr": "tdn_calc.data.importers",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tdn_calc.data' has no attribute {name!r}")
