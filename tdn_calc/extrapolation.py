"""Per-atom extrapolation scores: how far an atom's environment lies from the training data.

A :class:`TrainingDistribution` summarises a model's training set: per element, the mean and
a shrinkage covariance of the per-atom invariant features of the last layer
(``TDNModel.node_features(graph)[:, 0, :]``, ``[n_atoms, C]``), and per element pair the
shortest interatomic distance seen (Å). An atom's score is its Mahalanobis distance to its
element's training features divided by the 99.9th percentile of the training atoms' own
distances, so 99.9% of training atoms score below 1 and a score above 1 means
"extrapolating". An atom closer to a neighbour than any pair of those elements was in training
(or with a neighbour element never seen within the cutoff) has a distance violation.

The summary is JSON and lives in the model card under ``"training_distribution"``; the
calculator then adds ``results["extrapolation"]`` (``[n_atoms]``) and ``tdn-relax`` flags
structures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase.data import atomic_numbers as symbol_to_z
from ase.data import chemical_symbols

from .atomic_graph import AtomicGraph
from .errors import InputError

CARD_KEY = "training_distribution"
FORMAT = "tdn-calc-training-distribution-1"

#: Å below the shortest training distance of a pair before an atom is flagged: a bond 0.001 Å
#: shorter than any seen is not news (validation flagged such hairlines on the test split).
DISTANCE_TOLERANCE = 0.03


@dataclass
class ElementSummary:
    """Feature statistics of one element: ``mean`` ``[C]``, ``covariance`` ``[C, C]``
    (shrunk), ``scale`` (the training atoms' Mahalanobis-distance quantile), ``n_atoms``."""

    mean: np.ndarray
    covariance: np.ndarray
    scale: float
    n_atoms: int
    _precision: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def precision(self) -> np.ndarray:
        if self._precision is None:
            self._precision = np.linalg.inv(self.covariance)
        return self._precision

    def distances(self, features: np.ndarray) -> np.ndarray:
        """``[n]`` Mahalanobis distances of ``features`` ``[n, C]``."""
        d = np.asarray(features, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(((d @ self.precision) * d).sum(axis=1), 0.0))


@dataclass
class TrainingDistribution:
    """Training-set summary of a model (see the module docstring).

    Attributes:
        elements: atomic number -> :class:`ElementSummary`.
        min_distances: ``(z1, z2)`` with ``z1 <= z2`` -> shortest distance seen, Å (only pairs
            seen within the cutoff).
        cutoff: the model's cutoff, Å (pairs farther apart are not checked).
        quantile: fraction of training atoms scoring below 1 (0.999).
        shrinkage: covariance shrinkage towards ``mean(diag) * I`` (0..1).
        n_frames: training frames summarised.
    """

    elements: dict[int, ElementSummary]
    min_distances: dict[tuple[int, int], float]
    cutoff: float
    quantile: float = 0.999
    shrinkage: float = 0.1
    n_frames: int = 0

    def score(self, features: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        """``[n_atoms]`` scores of ``features`` ``[n_atoms, C]``; ``inf`` for elements absent
        from the training data."""
        numbers = np.asarray(numbers)
        out = np.full(len(numbers), np.inf)
        for z in np.unique(numbers):
            summary = self.elements.get(int(z))
            if summary is not None:
                sel = numbers == z
                out[sel] = summary.distances(features[sel]) / summary.scale
        return out

    def distance_violations(
        self, numbers: np.ndarray, i: np.ndarray, j: np.ndarray, distances: np.ndarray,
        tolerance: float = DISTANCE_TOLERANCE,
    ) -> np.ndarray:
        """``[n_atoms]`` bool: atoms with a neighbour (edges ``i -> j`` at ``distances`` Å,
        within the cutoff) closer than the shortest distance of that element pair in
        training minus ``tolerance`` Å, or of a pair never seen within the cutoff."""
        numbers = np.asarray(numbers)
        bad = np.zeros(len(numbers), dtype=bool)
        if len(i) == 0:
            return bad
        limit = self._limit_table()[numbers[i], numbers[j]]
        hit = (distances < limit - tolerance) & (distances < self.cutoff)
        bad[i[hit]] = True
        bad[j[hit]] = True
        return bad

    def _limit_table(self) -> np.ndarray:
        """``[119, 119]`` shortest training distance of each element pair (``inf`` where
        never seen), built once: a lookup replaces a dictionary access per edge."""
        table = self.__dict__.get("_limits")
        if table is None or table[1] != self.min_distances:
            limits = np.full((119, 119), np.inf)
            for (a, b), d in self.min_distances.items():
                limits[a, b] = limits[b, a] = d
            table = (limits, dict(self.min_distances))
            self.__dict__["_limits"] = table
        return table[0]

    # --- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def rounded(a: np.ndarray) -> list:  # shortest repr that round-trips exactly
            return np.asarray(a, dtype=np.float64).tolist()

        return {
            "format": FORMAT,
            "feature": "TDNModel.node_features(graph)[:, 0, :] (last-layer invariants)",
            "quantile": self.quantile,
            "shrinkage": self.shrinkage,
            "cutoff": self.cutoff,
            "n_frames": self.n_frames,
            "elements": {
                chemical_symbols[z]: {
                    "mean": rounded(s.mean),
                    "covariance": rounded(s.covariance),
                    "scale": s.scale,
                    "n_atoms": s.n_atoms,
                }
                for z, s in sorted(self.elements.items())
            },
            "min_distances": {
                f"{chemical_symbols[a]}-{chemical_symbols[b]}": d
                for (a, b), d in sorted(self.min_distances.items())
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingDistribution:
        if data.get("format") != FORMAT:
            raise InputError(f"not a training distribution: format {data.get('format')!r}, "
                             f"expected {FORMAT!r}")  # fmt: skip
        elements = {
            symbol_to_z[sym]: ElementSummary(
                mean=np.asarray(e["mean"], dtype=np.float64),
                covariance=np.asarray(e["covariance"], dtype=np.float64),
                scale=float(e["scale"]),
                n_atoms=int(e["n_atoms"]),
            )
            for sym, e in data["elements"].items()
        }
        pairs = {}
        for key, d in data["min_distances"].items():
            a, b = (symbol_to_z[s] for s in key.split("-"))
            pairs[(min(a, b), max(a, b))] = float(d)
        return cls(elements, pairs, float(data["cutoff"]), float(data["quantile"]),
                   float(data["shrinkage"]), int(data.get("n_frames", 0)))  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> TrainingDistribution:
        return cls.from_dict(json.loads(text))


def from_card(card: dict[str, Any] | None) -> TrainingDistribution | None:
    """The summary stored in a model card, or ``None`` when it has none."""
    data = (card or {}).get(CARD_KEY)
    return None if not data else TrainingDistribution.from_dict(data)


def invariant_features(model: torch.nn.Module, graph: AtomicGraph) -> np.ndarray:
    """``[n_atoms, C]`` last-layer invariant features (float64 numpy), by a separate
    forward pass without gradients (``model(graph, return_features=True)`` gives the same
    features together with the energy)."""
    with torch.no_grad():
        x = model.node_features(graph)
    return x[:, 0, :].detach().to("cpu", torch.float64).numpy()


def edge_distances(graph: AtomicGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, d)`` of every edge of ``graph``: numpy indices and distances (Å)."""
    i, j = graph.edge_index
    offsets = torch.einsum("ek,ekl->el", graph.shifts, graph.cell[graph.system_idx[i]])
    d = torch.linalg.vector_norm(graph.positions[j] - graph.positions[i] + offsets, dim=1)
    return i.cpu().numpy(), j.cpu().numpy(), d.detach().to("cpu", torch.float64).numpy()


def shrunk_covariance(x: np.ndarray, shrinkage: float) -> np.ndarray:
    """``(1 - s) * S + s * mean(diag S) * I`` of samples ``x`` ``[n, C]`` (positive definite
    for ``s > 0``; a floor keeps constant features finite)."""
    c = x.shape[1]
    s = np.cov(x, rowvar=False, bias=True).reshape(c, c) if len(x) > 1 else np.zeros((c, c))
    level = max(float(np.mean(np.diag(s))), 1e-12)
    return (1 - shrinkage) * s + shrinkage * level * np.eye(c) + 1e-12 * np.eye(c)


def fit_training_distribution(
    model: torch.nn.Module,
    dataset,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 16,
    quantile: float = 0.999,
    shrinkage: float = 0.1,
    max_frames: int | None = 20000,
    seed: int = 0,
) -> TrainingDistribution:
    """Summarise the frames ``indices`` (the training split) of ``dataset`` (an
    :class:`~tdn_calc.data.H5Dataset`) for ``model``.

    Args:
        quantile: fraction of the summarised atoms that score below 1.
        shrinkage: covariance shrinkage (0..1), needed when an element has fewer atoms than
            feature channels.
        max_frames: summarise a random subset of at most this many frames (``None``: all);
            the minimum distances use the same frames.
    """
    from .data.dataset import Collater

    if not 0 < quantile < 1 or not 0 <= shrinkage <= 1:
        raise InputError(f"need 0 < quantile < 1 and 0 <= shrinkage <= 1, got {quantile}, "
                         f"{shrinkage}")  # fmt: skip
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise InputError("no training frames to summarise")
    if max_frames and indices.size > max_frames:
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_frames, replace=False))
    param = next(model.parameters())
    collate = Collater(cutoff=model.cutoff, dtype=param.dtype,
                       max_neighbors=model.config.max_neighbors)  # fmt: skip
    feats: dict[int, list[np.ndarray]] = {}
    pairs: dict[tuple[int, int], float] = {}
    model.eval()
    for start in range(0, indices.size, batch_size):
        graph, _ = collate([dataset[int(k)] for k in indices[start:start + batch_size]])
        graph = graph.to(param.device)
        x = invariant_features(model, graph)
        numbers = graph.atomic_numbers.cpu().numpy()
        for z in np.unique(numbers):
            feats.setdefault(int(z), []).append(x[numbers == z])
        i, j, d = edge_distances(graph)
        lo, hi = np.minimum(numbers[i], numbers[j]), np.maximum(numbers[i], numbers[j])
        for a, b in set(zip(lo.tolist(), hi.tolist(), strict=True)):
            sel = (lo == a) & (hi == b)
            pairs[(a, b)] = min(pairs.get((a, b), np.inf), float(d[sel].min()))
    elements = {}
    for z, parts in feats.items():
        x = np.concatenate(parts)
        summary = ElementSummary(x.mean(axis=0), shrunk_covariance(x, shrinkage), 1.0, len(x))
        summary.scale = max(float(np.quantile(summary.distances(x), quantile)), 1e-12)
        elements[z] = summary
    return TrainingDistribution(elements, pairs, model.cutoff, quantile, shrinkage,
                                int(indices.size))  # fmt: skip


@dataclass
class StructureScores:
    """Scores of one structure: ``scores`` ``[n_atoms]`` and ``too_close`` ``[n_atoms]``
    bool; an atom extrapolates when its score exceeds 1 or it is too close."""

    scores: np.ndarray
    too_close: np.ndarray

    @property
    def max_score(self) -> float:
        return float(self.scores.max()) if self.scores.size else 0.0

    @property
    def uncertain(self) -> np.ndarray:
        """``[n_atoms]`` bool: score > 1 or a distance violation."""
        return (self.scores > 1.0) | self.too_close

    @property
    def n_extrapolating(self) -> int:
        """Atoms with score > 1 or a distance violation."""
        return int(self.uncertain.sum())

    @property
    def flagged(self) -> bool:
        return self.n_extrapolating > 0


def score_graph(
    model: torch.nn.Module,
    dist: TrainingDistribution,
    graph: AtomicGraph,
    features: torch.Tensor | None = None,
    distances: np.ndarray | None = None,
) -> StructureScores:
    """Scores of every atom of ``graph`` (all its systems together).

    ``features``: the ``[n_atoms, C]`` ``"node_features"`` that ``model(graph,
    return_features=True)`` already returned (saves a forward pass); computed when absent.
    ``distances``: the ``[E]`` edge lengths (Å) when the caller has them (the neighbour list
    does); computed from the graph when absent.
    """
    numbers = graph.atomic_numbers.cpu().numpy()
    if features is None:
        x = invariant_features(model, graph)
    else:
        x = features.detach().to("cpu", torch.float64).numpy()
    scores = dist.score(x, numbers)
    if distances is None:
        i, j, d = edge_distances(graph)
    else:
        i, j = graph.edge_index.cpu().numpy()
        d = np.asarray(distances, dtype=np.float64)
    return StructureScores(scores, dist.distance_violations(numbers, i, j, d))


def score_atoms(model: torch.nn.Module, dist: TrainingDistribution, atoms) -> StructureScores:
    """Scores of every atom of an ``ase.Atoms``."""
    from .graph import atoms_to_graph

    param = next(model.parameters())
    graph = atoms_to_graph([atoms], model.cutoff, dtype=param.dtype, device=param.device,
                           max_neighbors=model.config.max_neighbors)  # fmt: skip
    return score_graph(model, dist, graph)


def attach_to_checkpoint(
    checkpoint: str,
    data: str | list[str],
    output: str,
    *,
    split: str = "train",
    split_file: str | None = None,
    device: str = "cpu",
    **fit_kwargs,
) -> TrainingDistribution:
    """Fit the summary of ``split`` of the HDF5 data set ``data`` (or of several trained on
    together, a list) for the model in
    ``checkpoint`` and write the model with the summary in its card to ``output`` (a new
    file: the input is never overwritten; its sha256 changes, so update a registry entry).

    The split is found as ``tdn eval`` finds it (``split_file``, the card's split file, or
    ``split-seed42.json`` beside the data). Features are computed in float64.
    """
    from pathlib import Path

    from .checkpoint import load_model, save_model
    from .data.dataset import H5Dataset
    from .train.evaluate import select_frames

    if Path(output).resolve() == Path(checkpoint).resolve():
        raise InputError(f"output {output!r} is the input checkpoint; give a new file name")
    model = load_model(checkpoint, device=device, dtype="float64")
    card = dict(getattr(model, "card", {}) or {})
    dataset = H5Dataset(data)
    indices, _ = select_frames(dataset, split, split_file, card)
    dist = fit_training_distribution(model, dataset, indices, **fit_kwargs)
    card[CARD_KEY] = dist.to_dict()
    save_model(model.float(), output, card=card)
    return dist
