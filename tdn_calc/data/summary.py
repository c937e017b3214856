"""Statistics of a data set, as printed by ``tdn data info``."""

from __future__ import annotations

import os
from collections import Counter

import h5py
import numpy as np

from .frames import kind_name
from .h5format import check_format, committed_counts
from .shards import list_shards


def summarize(path: str | os.PathLike) -> dict:
    """Counts and label statistics of a file or shard directory.

    Returns shards (complete / in progress), trajectories, frames, atoms, the reference
    method, frames per kind, element counts, energy per atom (eV) and force-component
    statistics (eV/Å). Shards another process is writing are reported as ``locked``.
    """
    out: dict = {"path": str(path), "shards": 0, "complete_shards": 0, "locked_shards": 0,
                 "trajectories": 0, "frames": 0, "atoms": 0}
    kinds: Counter = Counter()
    elements: Counter = Counter()
    methods: set[str] = set()
    e_per_atom, f_abs = [], []
    for shard in list_shards(path):
        try:
            f = h5py.File(shard, "r")
        except OSError:
            out["locked_shards"] += 1
            continue
        with f:
            check_format(f, shard)
            counts = committed_counts(f)
            out["shards"] += 1
            out["complete_shards"] += int(bool(f.attrs.get("shard_complete", False)))
            out["trajectories"] += counts["traj"]
            out["frames"] += counts["frame"]
            out["atoms"] += counts["atom"]
            methods.add(str(f.attrs["reference_method"]))
            kinds.update(f["frame_kind"][: counts["frame"]].tolist())
            z = f["atomic_numbers"][: counts["atom"]]
            elements.update(dict(zip(*np.unique(z, return_counts=True), strict=True)))
            e_per_atom.append(f["energy"][: counts["frame"]] / f["n_atoms"][: counts["frame"]])
            f_abs.append(np.abs(f["forces"][: counts["atom"]]).ravel())
    from ase.data import chemical_symbols

    out["reference_method"] = sorted(methods)
    out["frames_by_kind"] = {kind_name(k): int(v) for k, v in sorted(kinds.items())}
    out["elements"] = {chemical_symbols[int(z)]: int(n) for z, n in sorted(elements.items())}
    if out["frames"]:
        e = np.concatenate(e_per_atom)
        fa = np.concatenate(f_abs).astype(np.float64)
        out["frames_per_trajectory"] = round(out["frames"] / max(out["trajectories"], 1), 2)
        out["energy_per_atom_eV"] = {"min": float(e.min()), "max": float(e.max()),
                                     "mean": float(e.mean())}
        out["force_component_eV_per_A"] = {"mean_abs": float(fa.mean()),
                                           "rms": float(np.sqrt((fa**2).mean())),
                                           "max_abs": float(fa.max())}
    return out
