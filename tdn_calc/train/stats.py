"""Statistics of the training split that set up a model before training.

* per-element reference energies ``E0[Z]`` (eV) by least squares of the total energy on the
  composition counts, so that the network only learns the residual;
* the energy scale (eV): the RMS force component (default) or the std of the per-atom
  residual energy;
* ``avg_num_neighbors``: mean number of neighbours within the cutoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from ..data.dataset import Collater, H5Dataset
from ..data.h5format import committed_counts
from ..errors import InputError

log = logging.getLogger(__name__)


def dataset_elements(dataset: H5Dataset) -> list[int]:
    """Sorted atomic numbers present in the committed frames of ``dataset``."""
    found: set[int] = set()
    for shard in dataset.shards:
        with h5py.File(shard, "r") as f:
            n = committed_counts(f)["atom"]
            z = f["atomic_numbers"][:n]
            found.update(int(x) for x in np.unique(z))
    return sorted(found)


def frame_max_force(dataset: H5Dataset) -> np.ndarray:
    """``[n_frames]`` largest force norm of each frame, eV/Å (reads all forces once)."""
    out = []
    for shard in dataset.shards:
        with h5py.File(shard, "r") as f:
            counts = committed_counts(f)
            norms = np.linalg.norm(f["forces"][: counts["atom"]], axis=1)
            ptr = f["frame_atom_ptr"][: counts["frame"]].astype(np.int64)
            out.append(np.maximum.reduceat(norms, ptr) if ptr.size else np.zeros(0))
    result = np.concatenate(out)
    if result.size != len(dataset):
        raise InputError(f"{dataset.path} changed while it was read; try again")
    return result


def composition_of(dataset: H5Dataset, elements) -> np.ndarray:
    """``[n_frames, len(elements)]`` atom counts of ``elements`` per frame; other elements in
    the data are ignored (unlike ``H5Dataset.composition``, which refuses them)."""
    present = dataset_elements(dataset)
    full = dataset.composition(present)
    column = {z: k for k, z in enumerate(present)}
    out = np.zeros((len(dataset), len(elements)), dtype=np.int64)
    for k, z in enumerate(elements):
        if int(z) in column:
            out[:, k] = full[:, column[int(z)]]
    return out


def fit_atomic_energies(composition: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Least-squares ``E0`` ``[K]`` eV with ``energy[f] ≈ sum_k composition[f, k] E0[k]``.

    Args:
        composition: ``[n_frames, K]`` atom counts per element.
        energy: ``[n_frames]`` total energies, eV.

    Elements absent from every frame get 0. The fit is done in float64.
    """
    composition = np.asarray(composition, dtype=np.float64)
    energy = np.asarray(energy, dtype=np.float64)
    if composition.ndim != 2 or composition.shape[0] != energy.shape[0]:
        raise InputError(f"composition {composition.shape} does not match energy {energy.shape}")
    if composition.shape[0] == 0:
        raise InputError("cannot fit reference energies on zero frames")
    present = composition.sum(axis=0) > 0
    e0 = np.zeros(composition.shape[1])
    solution, *_ = np.linalg.lstsq(composition[:, present], energy, rcond=None)
    e0[present] = solution
    return e0


@dataclass(frozen=True)
class TrainingStats:
    """Statistics of a training split (see the module docstring)."""

    elements: list[int]
    atomic_energies: list[float]  # eV, ordered as elements
    energy_residual_std: float  # eV/atom, std of (E - sum E0) / n_atoms
    forces_rms: float  # eV/Å, RMS force component over the sample
    avg_num_neighbors: float
    n_frames: int
    n_sampled: int

    def energy_scale(self, mode: str | float) -> float:
        """The initial energy scale (eV) for ``mode`` ("forces_rms", "energy_std" or a number)."""
        if not isinstance(mode, str):
            return float(mode)
        value = self.forces_rms if mode == "forces_rms" else self.energy_residual_std
        return float(value) if value > 1e-6 else 1.0


def compute_stats(dataset: H5Dataset, train_indices: np.ndarray, elements: list[int],
                  cutoff: float, *, max_frames: int = 1000, seed: int = 0,
                  max_neighbors: int | None = None) -> TrainingStats:
    """Fit reference energies on all ``train_indices`` and sample up to ``max_frames`` of them
    (seeded) for the force RMS and the average neighbour count within ``cutoff`` Å."""
    train_indices = np.asarray(train_indices, dtype=np.int64)
    if train_indices.size == 0:
        raise InputError("the training split is empty; use more data or a larger train fraction")
    composition = composition_of(dataset, elements)[train_indices]
    energy = dataset.energy[train_indices]
    e0 = fit_atomic_energies(composition, energy)
    residual = (energy - composition @ e0) / dataset.n_atoms[train_indices]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(train_indices, min(max_frames, train_indices.size),
                                replace=False))
    collate = Collater(cutoff=cutoff, dtype=torch.float64, max_neighbors=max_neighbors)
    sq_forces, n_components, n_edges, n_atoms = 0.0, 0, 0, 0
    for start in range(0, sample.size, 64):
        graph, targets = collate([dataset[int(i)] for i in sample[start:start + 64]])
        forces = targets["forces"]
        sq_forces += float((forces**2).sum())
        n_components += forces.numel()
        n_edges += graph.n_edges
        n_atoms += graph.n_atoms
    stats = TrainingStats(
        elements=list(elements),
        atomic_energies=[float(x) for x in e0],
        energy_residual_std=float(residual.std()),
        forces_rms=float(np.sqrt(sq_forces / max(n_components, 1))),
        avg_num_neighbors=float(max(n_edges / max(n_atoms, 1), 1.0)),
        n_frames=int(train_indices.size),
        n_sampled=int(sample.size),
    )
    log.info("training-set statistics: %s", stats)
    return stats
