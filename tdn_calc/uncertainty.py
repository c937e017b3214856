"""Per-atom chemistry-novelty scores: does an atom sit in a local chemistry the model never saw?

The score of an atom is the distance from its *neighbour-element histogram* to the nearest
training atom of the same element, divided by the 99.9th percentile of that distance among
the training atoms themselves (leave-one-out), so 99.9 % of training atoms score below 1.

The histogram of atom ``i`` has one column per element the model knows (``E`` columns):
``h[i, e] = sum_j w(r_ij)`` over the neighbours ``j`` of element ``e`` within the cutoff,
``w(r) = (1 - (r / r_c)^2)^2`` (a smooth coordination number per neighbour element). It
reacts to what the last-layer feature statistics miss (benchmarks/uncertainty_study.py): a C
atom with two O neighbours (COOH, HCOO), an N-N bond (NNH), a four-fold hollow or a step edge
(other facets), whereas a per-element Gaussian of the model's features puts such atoms near
the middle of the training cloud. It is a property of the structure, not of the model's
weights, so it is computed from the model's graph edges in well under a millisecond per
structure of a few hundred atoms.

The summary (:class:`ChemistryNovelty`) is JSON: per element, a bank of training histograms
(float32, base64) and the normalising scale. Registered models keep it in a sidecar file
next to their checkpoint, named with its sha256 in the manifest entry's ``"uncertainty"``
record (:func:`tdn_calc.registry.uncertainty_sidecar`); the calculator then adds
``results["uncertainty"]`` (``[n_atoms]``) and ``calc.uncertainty_threshold``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import atomic_numbers as symbol_to_z
from ase.data import chemical_symbols

from .atomic_graph import AtomicGraph
from .errors import InputError

FORMAT = "tdn-calc-chemistry-novelty-1"
METHOD = "neighbour-histogram-knn"
#: rows of the query block of one distance computation (memory ``_CHUNK * bank`` floats)
_CHUNK = 2048


def neighbour_histogram(
    numbers: np.ndarray, i: np.ndarray, j: np.ndarray, distances: np.ndarray,
    elements: Sequence[int], cutoff: float,
) -> np.ndarray:
    """``[n_atoms, len(elements)]`` smooth per-element coordination numbers.

    Args:
        numbers: ``[n_atoms]`` atomic numbers.
        i, j: ``[n_edges]`` directed edges ``i -> j`` (each neighbour pair once per
            direction, as the model's graphs hold them).
        distances: ``[n_edges]`` edge lengths, Å.
        elements: the histogram's columns (atomic numbers); a neighbour of another element
            adds nothing.
        cutoff: Å; ``w(r) = (1 - (r / cutoff)^2)^2`` for ``r < cutoff``, else 0.
    """
    numbers = np.asarray(numbers)
    elements = np.asarray(elements)
    out = np.zeros((len(numbers), len(elements)))
    if len(i) == 0:
        return out
    lookup = np.full(max(int(numbers.max()), int(elements.max())) + 1, -1)
    lookup[elements] = np.arange(len(elements))
    col = lookup[numbers[j]]
    d = np.asarray(distances, dtype=np.float64)
    w = np.where(d < cutoff, (1.0 - (d / cutoff) ** 2) ** 2, 0.0)
    keep = col >= 0
    flat = np.asarray(i)[keep] * len(elements) + col[keep]  # bincount sums in edge order too
    return np.bincount(flat, w[keep], out.size).reshape(out.shape)


def graph_histogram(graph: AtomicGraph, elements: Sequence[int], cutoff: float,
                    distances: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """:func:`neighbour_histogram` of every atom of ``graph`` (all its systems), from its
    edges (``distances``: their ``[E]`` lengths, Å, when known); ``[n_atoms, len(elements)]``."""
    from .extrapolation import edge_distances

    if distances is None:
        i, j, d = edge_distances(graph)
    else:
        (i, j), d = graph.edge_index.cpu().numpy(), distances
    return neighbour_histogram(graph.atomic_numbers.cpu().numpy(), i, j, d, elements, cutoff)


def _nearest(queries: np.ndarray, bank: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """``[n]`` Euclidean distance of each row of ``queries`` ``[n, E]`` to its nearest row of
    ``bank`` ``[M, E]`` (``exclude_self``: ``queries`` is ``bank``; skip the row itself)."""
    bank = np.asarray(bank, dtype=np.float64)
    b2 = np.einsum("me,me->m", bank, bank)
    out = np.empty(len(queries))
    for s in range(0, len(queries), _CHUNK):
        q = np.asarray(queries[s:s + _CHUNK], dtype=np.float64)
        d2 = np.einsum("ne,ne->n", q, q)[:, None] + b2[None, :] - 2.0 * q @ bank.T
        if exclude_self:
            d2[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        out[s:s + len(q)] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def _encode(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode()}


def _decode(data: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(data["float32_base64"])
    return np.frombuffer(raw, dtype="<f4").reshape(data["shape"]).astype(np.float32)


@dataclass
class ChemistryNovelty:
    """Training summary behind the novelty score (see the module docstring).

    Attributes:
        elements: the histogram's columns, atomic numbers (the model's elements).
        cutoff: Å, the neighbour cutoff of the histogram (the model's).
        banks: atomic number -> ``[M, E]`` float32 training histograms of that element.
        scales: atomic number -> the ``quantile`` of the bank's leave-one-out nearest
            distances (the score's unit).
        quantile: fraction of training atoms scoring below 1 (0.999).
        n_frames: training frames the banks were drawn from.
    """

    elements: tuple[int, ...]
    cutoff: float
    banks: dict[int, np.ndarray]
    scales: dict[int, float]
    quantile: float = 0.999
    n_frames: int = 0

    def score(self, histograms: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        """``[n_atoms]`` scores of ``histograms`` ``[n_atoms, E]``; ``inf`` for elements
        without a bank. The nearest bank rows come from a k-d tree per element (built once)."""
        numbers = np.asarray(numbers)
        out = np.full(len(numbers), np.inf)
        trees = self.__dict__.setdefault("_trees", {})  # z -> (bank, its k-d tree)
        for z in np.unique(numbers).tolist():
            bank = self.banks.get(z)
            if bank is not None and len(bank):
                tree = trees.get(z)
                if tree is None or tree[0] is not bank:
                    from scipy.spatial import cKDTree

                    tree = trees[z] = (bank, cKDTree(np.asarray(bank, dtype=np.float64)))
                nearest = tree[1].query(np.asarray(histograms[numbers == z], np.float64))[0]
                out[numbers == z] = nearest / self.scales[z]
        return out

    def score_graph(self, graph: AtomicGraph, distances: np.ndarray | None = None) -> np.ndarray:
        """``[n_atoms]`` scores of every atom of ``graph`` (its edges must reach
        ``cutoff``: the model's graph does; ``distances``: the ``[E]`` edge lengths, Å, when
        the caller has them)."""
        hist = graph_histogram(graph, self.elements, self.cutoff, distances)
        return self.score(hist, graph.atomic_numbers.cpu().numpy())

    def score_atoms(self, atoms) -> np.ndarray:
        """``[n_atoms]`` scores of an ``ase.Atoms``."""
        import torch

        from .graph import atoms_to_graph

        graph = atoms_to_graph([atoms], self.cutoff, dtype=torch.float64, device="cpu")
        return self.score_graph(graph)

    # --- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": METHOD,
            "feature": "per-element neighbour histogram, w(r) = (1 - (r/cutoff)^2)^2",
            "elements": [chemical_symbols[z] for z in self.elements],
            "cutoff": self.cutoff,
            "quantile": self.quantile,
            "n_frames": self.n_frames,
            "banks": {chemical_symbols[z]: {"scale": self.scales[z], **_encode(b)}
                      for z, b in sorted(self.banks.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChemistryNovelty:
        if data.get("format") != FORMAT:
            raise InputError(f"not a chemistry-novelty summary: format {data.get('format')!r}, "
                             f"expected {FORMAT!r}")  # fmt: skip
        banks = {symbol_to_z[s]: _decode(b) for s, b in data["banks"].items()}
        scales = {symbol_to_z[s]: float(b["scale"]) for s, b in data["banks"].items()}
        return cls(tuple(symbol_to_z[s] for s in data["elements"]), float(data["cutoff"]),
                   banks, scales, float(data["quantile"]), int(data.get("n_frames", 0)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ChemistryNovelty:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON summary to ``path`` (atomically)."""
        from .fileio import atomic_write

        with atomic_write(Path(path), "w") as fh:
            fh.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ChemistryNovelty:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def thin(bank: np.ndarray, radius: float) -> np.ndarray:
    """Rows of ``bank`` ``[M, E]`` kept greedily so that every row lies within ``radius`` of
    a kept one (nearest distances to the thinned bank err by at most ``radius``)."""
    kept: list[int] = []
    d_min = np.full(len(bank), np.inf)
    b = np.asarray(bank, dtype=np.float64)
    for k in range(len(b)):
        if d_min[k] > radius:
            kept.append(k)
            d_min = np.minimum(d_min, np.linalg.norm(b - b[k], axis=1))
    return np.asarray(bank)[kept]


def fit_histograms(
    histograms: dict[int, np.ndarray], elements: Sequence[int], cutoff: float, *,
    bank_size: int = 4000, quantile: float = 0.999, resolution: float = 0.05,
    n_frames: int = 0, seed: int = 0,
) -> ChemistryNovelty:
    """The summary of training ``histograms`` (atomic number -> ``[n, E]``): per element a
    random bank of at most ``bank_size`` rows, its leave-one-out distance ``quantile`` (the
    scale), then the bank thinned (:func:`thin`) to ``resolution`` scale units (scores err
    by at most that much)."""
    if not 0 < quantile < 1 or bank_size < 2:
        raise InputError(f"need 0 < quantile < 1 and bank_size >= 2, got {quantile}, "
                         f"{bank_size}")  # fmt: skip
    rng = np.random.default_rng(seed)
    banks, scales = {}, {}
    for z, h in sorted(histograms.items()):
        h = np.asarray(h, dtype=np.float32)
        if len(h) > bank_size:
            h = h[np.sort(rng.choice(len(h), bank_size, replace=False))]
        banks[int(z)] = h
        loo = _nearest(h, h, exclude_self=True) if len(h) > 1 else np.ones(1)
        scales[int(z)] = max(float(np.quantile(loo, quantile)), 1e-6)
        banks[int(z)] = thin(h, resolution * scales[int(z)]) if resolution > 0 else h
    return ChemistryNovelty(tuple(int(e) for e in elements), float(cutoff), banks, scales,
                            quantile, n_frames)  # fmt: skip


def fit_chemistry_novelty(
    dataset, indices: Sequence[int] | np.ndarray, elements: Sequence[int], cutoff: float, *,
    batch_size: int = 64, max_frames: int | None = None, seed: int = 0, **fit_kwargs,
) -> ChemistryNovelty:
    """Summarise the frames ``indices`` (the training split) of ``dataset`` (an
    :class:`~tdn_calc.data.H5Dataset`): neighbour histograms of every atom (no model needed),
    then :func:`fit_histograms` (``bank_size``, ``quantile``)."""
    import torch

    from .data.dataset import Collater

    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise InputError("no training frames to summarise")
    if max_frames and indices.size > max_frames:
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_frames, replace=False))
    collate = Collater(cutoff=cutoff, dtype=torch.float64, max_neighbors=None)
    parts: dict[int, list[np.ndarray]] = {}
    for start in range(0, indices.size, batch_size):
        graph, _ = collate([dataset[int(k)] for k in indices[start:start + batch_size]])
        hist = graph_histogram(graph, elements, cutoff)
        numbers = graph.atomic_numbers.numpy()
        for z in np.unique(numbers):
            parts.setdefault(int(z), []).append(hist[numbers == z])
    hists = {z: np.concatenate(p) for z, p in parts.items()}
    return fit_histograms(hists, elements, cutoff, n_frames=int(indices.size), seed=seed,
                          **fit_kwargs)  # fmt: skip


def for_model(name: str | os.PathLike, manifest: str | os.PathLike | None = None
              ) -> tuple[ChemistryNovelty, float] | None:
    """The summary and threshold of the registered model ``name`` (its manifest entry's
    ``"uncertainty"`` record, sidecar sha256 checked), or ``None`` when it has none or
    ``name`` is not a registered model. A checkpoint path counts as the registered model
    whose sha256 it has."""
    from .errors import ModelNotFoundError
    from .fileio import sha256_file
    from .registry import name_for_sha256, uncertainty_sidecar

    if Path(name).is_file():
        name = name_for_sha256(sha256_file(name), manifest)
        if not name:
            return None
    try:
        found = uncertainty_sidecar(str(name), manifest)
    except ModelNotFoundError:
        return None
    if found is None:
        return None
    path, record = found
    return ChemistryNovelty.load(path), float(record["threshold"])


def for_loaded_model(model: Any, manifest: str | os.PathLike | None = None
                     ) -> tuple[ChemistryNovelty, float] | None:
    """:func:`for_model` for a loaded model, found by its file's sha256 (``model.sha256``,
    set by :func:`~tdn_calc.checkpoint.load_model`): the one lookup the calculator and the
    relaxation job share. Kept on the model, keyed by the manifest file and its mtime, so it
    is parsed once per model and re-read when the manifest changes."""
    from .registry import per_registered_model

    return per_registered_model(model, "_tdn_novelty", manifest,
                                lambda name: for_model(name, manifest))


#: what each signal of :func:`signal_flags` means, in words (the warnings of ``tdn-relax``)
SIGNAL_WORDS = {
    "novelty": "chemistry novelty above the model's threshold",
    "extrapolation": "extrapolation score above 1 (unusual geometry for the model)",
    "too_close": "atoms closer than any training pair",
    "committee": "its committee partner disagreeing on a force at the minimum",
    "soft_mode": "the adsorbate resting on a saddle or flat spot of the model's surface",
}


def signal_flags(scores: dict[str, np.ndarray], threshold: float | None,
                 committee_threshold: float | None = None,
                 curvature_threshold: float | None = None) -> dict[str, np.ndarray]:
    """``{signal: [n_atoms] bool}`` for every signal ``scores`` carries (a calculator's
    ``results`` or a relaxed frame's ``arrays``; keys of :data:`SIGNAL_WORDS`): the
    chemistry-novelty ``"uncertainty"`` above ``threshold`` (the model's), the Mahalanobis
    ``"extrapolation"`` above 1 (99.9 % of training atoms below) and a distance violation
    (``"extrapolation_too_close"``), and at a relaxed minimum the committee partner's force
    disagreement ``"committee_force"`` (eV/Å, :mod:`tdn_calc.committee`) above
    ``committee_threshold`` and the adsorbate's softest curvature ``"adsorbate_curvature"``
    (eV/Å², NaN on other atoms, :mod:`tdn_calc.soft_modes`) below ``curvature_threshold``."""
    flags: dict[str, np.ndarray] = {}
    if "uncertainty" in scores and threshold is not None:
        flags["novelty"] = np.asarray(scores["uncertainty"]) > threshold
    if "extrapolation" in scores:
        flags["extrapolation"] = np.asarray(scores["extrapolation"]) > 1.0
        flags["too_close"] = np.asarray(scores["extrapolation_too_close"], dtype=bool)
    if "committee_force" in scores and committee_threshold is not None:
        flags["committee"] = np.asarray(scores["committee_force"]) > committee_threshold
    if "adsorbate_curvature" in scores and curvature_threshold is not None:
        with np.errstate(invalid="ignore"):
            flags["soft_mode"] = (np.asarray(scores["adsorbate_curvature"], float)
                                  < curvature_threshold)
    return flags


def uncertain_atoms(scores: dict[str, np.ndarray], threshold: float | None,
                    committee_threshold: float | None = None,
                    curvature_threshold: float | None = None) -> np.ndarray | None:
    """``[n_atoms]`` bool: the atoms to distrust, any signal of :func:`signal_flags`
    raised; ``None`` without scores. The one rule behind ``results["uncertain"]`` and the
    relaxed frames' ``uncertain``."""
    flags = signal_flags(scores, threshold, committee_threshold, curvature_threshold)
    return np.logical_or.reduce(list(flags.values())) if flags else None
