"""Lazy reading of frame files (one ``.h5`` or a directory of shards) for training.

Per-frame arrays (energy, cell, stress, ...) are loaded at construction (a few bytes per
frame); per-atom arrays are read one frame at a time through an HDF5 handle opened lazily
in each process (so the data set works with ``DataLoader(num_workers>0)``).

A shard that another process is still writing is locked by HDF5; it is skipped with a
warning (set ``complete_only=True`` to read only shards marked complete).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from ..atomic_graph import AtomicGraph
from ..errors import InputError
from .h5format import check_format, committed_counts
from .shards import list_shards

log = logging.getLogger(__name__)

_FRAME_FIELDS = ("frame_atom_ptr", "n_atoms", "energy", "cell", "pbc", "stress", "has_stress",
                 "frame_kind", "traj_id")


class H5Dataset(torch.utils.data.Dataset):
    """Frames of a tdn-calc data set; ``ds[i]`` is a dict of numpy arrays (see :meth:`__getitem__`).

    With ``in_memory=True`` each process loads a shard's per-atom arrays on first use
    (~40 bytes per atom; a 150k-frame molecule set is ~200 MB) instead of reading per frame.

    Attributes:
        identifiers: ``[n_trajs]`` str, one per trajectory (global trajectory id = position).
        traj: ``[n_frames]`` int64 global trajectory id of each frame.
        n_atoms: ``[n_frames]`` int64; ``energy`` ``[n_frames]`` eV; ``frame_kind`` ``[n_frames]``.
        reference_method: the label method named by the files (all must agree).
    """

    def __init__(self, path: str | os.PathLike | list[str | os.PathLike], *,
                 complete_only: bool = False, in_memory: bool = False):
        if isinstance(path, (list, tuple)) and len(path) == 1:
            path = path[0]  # one data set, however it was given
        self.path = path
        self.shards = []
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (*_FRAME_FIELDS, "shard", "local")}
        self.identifiers: list[str] = []
        methods = set()
        for shard in list_shards(path):
            try:
                f = h5py.File(shard, "r")
            except OSError as exc:
                log.warning("skipping %s: cannot open it (%s); is a builder writing it?",
                            shard, exc)
                continue
            with f:
                check_format(f, shard)
                if complete_only and not f.attrs.get("shard_complete", False):
                    continue
                counts = committed_counts(f)
                nf = counts["frame"]
                methods.add(str(f.attrs["reference_method"]))
                for name in _FRAME_FIELDS:
                    parts[name].append(f[name][:nf])
                parts["traj_id"][-1] = parts["traj_id"][-1].astype(np.int64) + len(self.identifiers)
                parts["shard"].append(np.full(nf, len(self.shards), dtype=np.int32))
                parts["local"].append(np.arange(nf, dtype=np.int64))
                self.identifiers += [x.decode() if isinstance(x, bytes) else str(x)
                                     for x in f["identifiers"][: counts["traj"]]]
                self.shards.append(shard)
        if not self.shards:
            raise InputError(f"no readable frame files in {path}")
        several = isinstance(path, (list, tuple))
        twice = sorted(x for x, n in Counter(self.identifiers).items() if n > 1) if several else []
        if twice:
            raise InputError(f"the data sets {list(map(str, path))} share trajectory identifiers "
                             f"({', '.join(twice[:3])}, ...): they cannot be trained on together")
        if len(methods) > 1:
            raise InputError(f"{path} mixes reference methods {sorted(methods)}; use one")
        self.reference_method = methods.pop()
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        self._ptr = cat["frame_atom_ptr"].astype(np.int64)
        self.n_atoms = cat["n_atoms"].astype(np.int64)
        self.energy = cat["energy"].astype(np.float64)
        self._cell = cat["cell"]
        self._pbc = cat["pbc"].astype(bool)
        self._stress = cat["stress"]
        self._has_stress = cat["has_stress"].astype(bool)
        self.frame_kind = cat["frame_kind"].astype(np.int64)
        self.traj = cat["traj_id"]
        self._shard = cat["shard"]
        self.in_memory = in_memory
        self._handles: dict[int, h5py.File] = {}
        self._arrays: dict[int, tuple] = {}
        self._pid = os.getpid()

    # --- torch Dataset protocol ----------------------------------------------------------
    def __len__(self) -> int:
        return int(self.energy.shape[0])

    def __getitem__(self, idx: int) -> dict:
        """One frame: ``atomic_numbers`` [n] int64, ``positions`` [n,3] Å, ``forces`` [n,3]
        eV/Å (float64), ``energy`` eV, ``cell`` [3,3] Å, ``pbc`` [3], ``stress`` [3,3]
        eV/Å^3, ``has_stress``, ``traj`` (global trajectory id), ``kind``, ``index``."""
        idx = int(idx)
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"frame index {idx} out of range for {len(self)} frames")
        numbers, positions, forces = self._atom_arrays(int(self._shard[idx]))
        a, b = int(self._ptr[idx]), int(self._ptr[idx] + self.n_atoms[idx])
        return {
            "atomic_numbers": numbers[a:b].astype(np.int64),
            "positions": positions[a:b].astype(np.float64),
            "forces": forces[a:b].astype(np.float64),
            "energy": float(self.energy[idx]),
            "cell": self._cell[idx].astype(np.float64),
            "pbc": self._pbc[idx],
            "stress": self._stress[idx].astype(np.float64),
            "has_stress": bool(self._has_stress[idx]),
            "traj": int(self.traj[idx]),
            "kind": int(self.frame_kind[idx]),
            "index": idx,
        }

    def _handle(self, shard: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: never share handles
            self._handles, self._arrays, self._pid = {}, {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = h5py.File(self.shards[shard], "r")
        return self._handles[shard]

    def _atom_arrays(self, shard: int) -> tuple:
        """``(atomic_numbers, positions, forces)`` of a shard: h5py datasets (kept, so their
        chunk cache survives between frames) or, with ``in_memory``, numpy arrays."""
        if os.getpid() != self._pid or shard not in self._arrays:
            f = self._handle(shard)
            arrays = tuple(f[name] for name in ("atomic_numbers", "positions", "forces"))
            if self.in_memory:
                n = int(f.attrs["n_complete_atoms"])
                arrays = tuple(ds[:n] for ds in arrays)
            self._arrays[shard] = arrays
        return self._arrays[shard]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"], state["_arrays"] = {}, {}
        return state

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles, self._arrays = {}, {}

    # --- helpers ---------------------------------------------------------------------------
    @property
    def n_trajs(self) -> int:
        return len(self.identifiers)

    def frames_of(self, identifiers) -> np.ndarray:
        """``[k]`` int64 indices of all frames whose trajectory identifier is in ``identifiers``."""
        wanted = set(identifiers)
        mask_traj = np.array([ident in wanted for ident in self.identifiers], dtype=bool)
        return np.flatnonzero(mask_traj[self.traj]).astype(np.int64)

    def identifiers_of(self, indices) -> list[str]:
        """Identifiers of the trajectories the frames ``indices`` belong to (each once, in
        trajectory order): the inverse of :meth:`frames_of`."""
        trajs = np.unique(self.traj[np.asarray(indices, dtype=np.int64)])
        return [self.identifiers[t] for t in trajs]

    def composition(self, elements) -> np.ndarray:
        """``[n_frames, len(elements)]`` counts of each atomic number per frame (reads all
        atomic numbers once; used to fit per-element reference energies)."""
        col = {int(z): k for k, z in enumerate(elements)}
        out = np.zeros((len(self), len(col)), dtype=np.int64)
        for s in range(len(self.shards)):
            rows = np.flatnonzero(self._shard == s)
            z = self._atom_arrays(s)[0][:].astype(np.int64)
            frame_of_atom = np.repeat(rows, self.n_atoms[rows])
            atoms = np.concatenate([np.arange(p, p + n) for p, n in
                                    zip(self._ptr[rows], self.n_atoms[rows], strict=True)])
            unknown = set(np.unique(z[atoms]).tolist()) - set(col)
            if unknown:
                raise InputError(f"elements {sorted(unknown)} are not in {sorted(col)}")
            np.add.at(out, (frame_of_atom, np.vectorize(col.get)(z[atoms])), 1)
        return out


def sample_atoms(sample: dict):
    """``ase.Atoms`` (numbers, positions Å, cell, pbc; no calculator) of a frame dict as
    :meth:`H5Dataset.__getitem__` returns it."""
    from ase import Atoms

    return Atoms(numbers=sample["atomic_numbers"], positions=sample["positions"],
                 cell=sample["cell"], pbc=sample["pbc"])


@dataclass(frozen=True)
class Collater:
    """Batch frames into ``(AtomicGraph, targets)`` for a model with radial ``cutoff`` Å.

    ``targets``: ``energy`` [S] eV, ``forces`` [N, 3] eV/Å, ``stress`` [S, 3, 3] eV/Å^3,
    ``stress_mask`` [S] bool, ``n_atoms`` [S] int64, ``index`` [S] int64 frame indices.
    Picklable, so it can be a DataLoader ``collate_fn`` with worker processes.
    """

    cutoff: float
    dtype: torch.dtype = torch.float32
    max_neighbors: int | None = None

    def __call__(self, samples: list[dict]) -> tuple[AtomicGraph, dict[str, torch.Tensor]]:
        from ..graph import arrays_to_graph

        graph = arrays_to_graph(
            [(s["atomic_numbers"], s["positions"], s["cell"], s["pbc"]) for s in samples],
            self.cutoff, dtype=self.dtype, max_neighbors=self.max_neighbors,
        )

        def t(x) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x), dtype=self.dtype)

        targets = {
            "energy": t([s["energy"] for s in samples]),
            "forces": t(np.concatenate([s["forces"] for s in samples])),
            "stress": t(np.stack([s["stress"] for s in samples])),
            "stress_mask": torch.tensor([s["has_stress"] for s in samples], dtype=torch.bool),
            "n_atoms": torch.tensor([len(s["atomic_numbers"]) for s in samples]),
            "index": torch.tensor([s["index"] for s in samples]),
        }
        return graph, targets
