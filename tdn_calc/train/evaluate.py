"""Errors of a model on frames of a data set: energy per atom, forces (overall and per
element) and stress, in meV units. Used for validation during training and by ``tdn eval``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

from ..data.dataset import Collater, H5Dataset
from ..errors import InputError
from .loss import LossWeights, energy_per_atom_error


class ErrorSums:
    """Running sums of errors; all in one float64 vector so ranks can ``all_reduce`` it.

    Layout: ``[n_frames, sum|dE|, sum dE^2, n_force_components, sum|dF|, sum dF^2,
    n_stress_components, sum|dS|, sum dS^2, per-element sum|dF| (K), per-element
    n_components (K)]`` with dE in eV/atom, dF in eV/Å and dS in eV/Å^3.
    """

    _SCALARS = 9

    def __init__(self, elements: Sequence[int]) -> None:
        self.elements = [int(z) for z in elements]
        self.values = torch.zeros(self._SCALARS + 2 * len(self.elements), dtype=torch.float64)

    def add(self, out: dict[str, torch.Tensor], graph, targets: dict[str, torch.Tensor],
            target_energy: torch.Tensor, e0: torch.Tensor, species: torch.Tensor) -> None:
        """Add a batch (``species``: ``[N]`` index into ``elements``)."""
        v = self.values
        de = energy_per_atom_error(out["energies"].detach(), graph, target_energy, e0).cpu()
        df = (out["forces"].detach() - targets["forces"]).double().cpu()
        v[0] += de.numel()
        v[1] += de.abs().sum()
        v[2] += (de**2).sum()
        v[3] += df.numel()
        v[4] += df.abs().sum()
        v[5] += (df**2).sum()
        mask = targets["stress_mask"].cpu()
        if "stress" in out and bool(mask.any()):
            ds = (out["stress"].detach().cpu() - targets["stress"].cpu())[mask].double()
            v[6] += ds.numel()
            v[7] += ds.abs().sum()
            v[8] += (ds**2).sum()
        k = len(self.elements)
        per_atom = df.abs().sum(dim=1)
        v[self._SCALARS:self._SCALARS + k] += torch.zeros(k, dtype=torch.float64).index_add(
            0, species.cpu(), per_atom)
        v[self._SCALARS + k:] += torch.zeros(k, dtype=torch.float64).index_add(
            0, species.cpu(), torch.full_like(per_atom, 3.0))

    def metrics(self, weights: LossWeights | None = None) -> dict:
        """Metrics in meV units (NaN where there is nothing to average) and, with
        ``weights``, the weighted validation ``loss`` (eV units, as in training)."""
        v = self.values.tolist()
        k = len(self.elements)

        def ratio(a: float, b: float) -> float:
            return a / b if b > 0 else math.nan

        out = {
            "n_frames": int(v[0]),
            "energy_mae_meV_atom": 1000 * ratio(v[1], v[0]),
            "energy_rmse_meV_atom": 1000 * math.sqrt(ratio(v[2], v[0])),
            "forces_mae_meV_A": 1000 * ratio(v[4], v[3]),
            "forces_rmse_meV_A": 1000 * math.sqrt(ratio(v[5], v[3])),
        }
        if v[6] > 0:
            out["stress_mae_meV_A3"] = 1000 * ratio(v[7], v[6])
            out["stress_rmse_meV_A3"] = 1000 * math.sqrt(ratio(v[8], v[6]))
        out["forces_mae_meV_A_per_element"] = {
            chemical_symbols[z]: 1000 * ratio(v[self._SCALARS + i], v[self._SCALARS + k + i])
            for i, z in enumerate(self.elements) if v[self._SCALARS + k + i] > 0
        }
        if weights is not None:
            out["loss"] = (weights.energy * ratio(v[2], v[0])
                           + weights.forces * ratio(v[5], v[3])
                           + (weights.stress * ratio(v[8], v[6]) if v[6] > 0 else 0.0))
        return out


def reference_energies(model: torch.nn.Module, species: torch.Tensor) -> torch.Tensor:
    """``[N]`` float64 E0 of each atom from the model config (eV)."""
    e0 = model.config.atomic_energies or [0.0] * len(model.config.elements)
    return torch.tensor(e0, dtype=torch.float64, device=species.device)[species]


def evaluate(model: torch.nn.Module, dataset: H5Dataset, indices: np.ndarray, *,
             batch_size: int = 16, weights: LossWeights | None = None,
             num_workers: int = 0, reduce=None, progress: bool = False) -> dict:
    """Errors of ``model`` on the frames ``indices`` of ``dataset``.

    ``reduce`` (optional) is called on the :class:`ErrorSums` vector before the metrics are
    formed (e.g. a distributed all-reduce). Returns :meth:`ErrorSums.metrics` plus
    ``n_structures`` (distinct trajectories) and ``n_atoms``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    sums = error_sums(model, dataset, indices, batch_size=batch_size, num_workers=num_workers,
                      progress=progress)
    if reduce is not None:
        reduce(sums.values)
    return _with_counts(sums.metrics(weights), dataset, indices)


def evaluate_by_kind(model: torch.nn.Module, dataset: H5Dataset, indices: np.ndarray, *,
                     batch_size: int = 16) -> dict:
    """:func:`evaluate` of all ``indices`` plus ``by_frame_kind``: the same metrics for the
    frames of each :class:`~tdn_calc.data.frames.FrameKind` among them (relaxation steps,
    rattled minima, displaced adsorbates, ...), each frame evaluated once."""
    from ..data.frames import kind_name

    indices = np.asarray(indices, dtype=np.int64)
    kinds = dataset.frame_kind[indices]
    total = ErrorSums(model.config.elements)
    by_kind = {}
    for kind in np.unique(kinds):
        part = indices[kinds == kind]
        sums = error_sums(model, dataset, part, batch_size=batch_size)
        total.values += sums.values
        by_kind[kind_name(kind)] = _with_counts(sums.metrics(), dataset, part)
    return {**_with_counts(total.metrics(), dataset, indices), "by_frame_kind": by_kind}


def _with_counts(metrics: dict, dataset: H5Dataset, indices: np.ndarray) -> dict:
    metrics["n_structures"] = int(np.unique(dataset.traj[indices]).size) if indices.size else 0
    metrics["n_atoms"] = int(dataset.n_atoms[indices].sum())
    return metrics


def error_sums(model: torch.nn.Module, dataset: H5Dataset, indices: np.ndarray, *,
               batch_size: int = 16, num_workers: int = 0,
               progress: bool = False) -> ErrorSums:
    """The :class:`ErrorSums` of ``model`` over the frames ``indices`` ([n] int64)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    batches = [indices[i:i + batch_size].tolist() for i in range(0, indices.size, batch_size)]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers,
        collate_fn=Collater(cutoff=model.config.cutoff, dtype=dtype,
                            max_neighbors=model.config.max_neighbors))
    sums = ErrorSums(model.config.elements)
    was_training = model.training
    model.eval()
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, total=len(batches), unit="batch", desc="eval")
    for graph, targets in iterator:
        graph = graph.to(device)
        targets = {k: v.to(device) for k, v in targets.items()}
        want_stress = bool(targets["stress_mask"].any())
        out = model(graph, compute_forces=True, compute_stress=want_stress, training=False)
        species = model.species_index(graph.atomic_numbers)
        target_energy = torch.as_tensor(dataset.energy[targets["index"].cpu().numpy()],
                                        dtype=torch.float64, device=device)
        sums.add(out, graph, targets, target_energy, reference_energies(model, species), species)
    model.train(was_training)
    return sums


def select_frames(dataset: H5Dataset, split: str, split_file: str | None = None,
                  card: dict | None = None) -> tuple[np.ndarray, str | None]:
    """Frame indices of ``split`` ("all", "train", "val", "test") and the split file used.

    Without ``split_file``, the split named in the model ``card`` is used when it exists,
    else ``split-seed42.json`` beside the data.
    """
    from ..data.split import load_split, split_path

    if split == "all":
        return np.arange(len(dataset), dtype=np.int64), None
    candidates = [split_file] if split_file else [
        (card or {}).get("trained_on", {}).get("split_file"),
        None if isinstance(dataset.path, (list, tuple)) else split_path(dataset.path, 42)]
    for path in candidates:
        if path and Path(path).is_file():
            return load_split(path).indices(dataset)[split], str(path)
    raise InputError(f"--split {split} needs a split file: none given, and none of "
                     f"{[str(c) for c in candidates if c]} exists; pass --split-file")


def run_evaluation(model_name: str, data: str, *, split: str = "all",
                   split_file: str | None = None, batch_size: int = 16,
                   max_frames: int | None = None, device: str = "auto",
                   dtype: str = "float32", by_kind: bool = False) -> dict:
    """Load ``model_name`` and evaluate it on ``data`` (what ``tdn eval`` prints); with
    ``by_kind``, also per frame kind (:func:`evaluate_by_kind`).

    Frames with elements the model does not support are skipped and counted
    (``n_frames_skipped``, ``skipped_elements``).
    """
    from ..checkpoint import load_model

    model = load_model(model_name, device=device, dtype=dtype)
    dataset = H5Dataset(data)
    card = getattr(model, "card", {}) or {}
    indices, used_split = select_frames(dataset, split, split_file, card)
    indices, skipped = supported_frames(dataset, indices, model.config.elements)
    if indices.size == 0:
        raise InputError(f"the {split!r} split of {data} has no frames with only the model's "
                         f"elements {[chemical_symbols[z] for z in model.config.elements]}")
    if max_frames and indices.size > max_frames:
        indices = np.sort(np.random.default_rng(0).choice(indices, max_frames, replace=False))
    metrics = (evaluate_by_kind if by_kind else evaluate)(model, dataset, indices,
                                                          batch_size=batch_size)
    trained_on = card.get("trained_on", {}).get("reference_method")
    metrics.update(model=str(model_name), data=str(data), split=split, split_file=used_split,
                   reference_method=dataset.reference_method,
                   model_reference_method=trained_on, **skipped)
    return metrics


def supported_frames(dataset: H5Dataset, indices: np.ndarray,
                     elements: Sequence[int]) -> tuple[np.ndarray, dict]:
    """Drop frames with elements the model lacks; say how many and which elements."""
    from .stats import dataset_elements

    present = dataset_elements(dataset)
    outside = [k for k, z in enumerate(present) if z not in set(elements)]
    if not outside:
        return indices, {"n_frames_skipped": 0, "skipped_elements": []}
    counts = dataset.composition(present)[indices][:, outside]
    keep = counts.sum(axis=1) == 0
    symbols = [chemical_symbols[present[k]] for k, n in zip(outside, counts.sum(axis=0),
                                                             strict=True) if n]
    return indices[keep], {"n_frames_skipped": int((~keep).sum()),
                           "skipped_elements": symbols}
