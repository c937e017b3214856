"""Helpers of tests/test_campaigns.py importable by Dask worker processes (the test folder is
on their ``sys.path``): a tiny EMT spec, and a teacher that kills its worker once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TINY = {
    "model": "emt",
    "surfaces": [{"element": "Pt", "facet": "111", "size": "2x2", "layers": 3,
                  "fixed_layers": 1, "lattice_constant": 3.92}],
    "adsorbates": ["H", "O"],
    "placement": {"sites": True, "random": 1, "seed": 0},
    "relax": {"fmax": 0.1, "steps": 60, "batch_size": 2},
}


def tiny_spec(**changes: Any) -> dict[str, Any]:
    """A copy of :data:`TINY` with top-level ``changes``."""
    import copy

    return {**copy.deepcopy(TINY), **changes}


def dying_emt(marker: str) -> Any:
    """ASE's EMT; the first process to call it (no ``marker`` file yet) creates the marker
    and exits at once, as a worker killed mid-task."""
    from ase.calculators.emt import EMT

    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return EMT()
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


def marker_pid(marker: str | Path) -> int:
    """Process id written into ``marker`` by :func:`dying_emt`."""
    return int(Path(marker).read_text())
