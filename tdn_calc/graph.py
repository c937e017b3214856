"""Neighbour lists (via vesin) and conversion of structures into an :class:`AtomicGraph`.

Edges follow ``ase.neighborlist.neighbor_list("ijS")``: a full list (both ``i -> j`` and
``j -> i``), no self-pair at zero shift, and ``r_ij = pos[j] - pos[i] + S @ cell`` for every
pair with ``|r_ij| < cutoff``. Full, mixed (slabs, wires) and no periodicity, non-orthogonal
cells and cells smaller than the cutoff (several images of one atom) are all handled by vesin.
Edges are sorted by centre ``i``, then neighbour ``j``.

vesin 0.6 divides by zero (SIGFPE, which kills the process) when its cell list of at most
~1e5 cells cannot give every direction a cell (a very long, thin box, or atoms spread over
~1e5 cutoffs), and it is very slow for mixed periodicity with atoms spread far along a
non-periodic direction. So atoms separated by more than the cutoff along a non-periodic
direction are listed group by group, and geometries vesin cannot take go to ASE's neighbour
list instead (same convention).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import vesin
from ase import Atoms
from ase.neighborlist import primitive_neighbor_list

from .atomic_graph import AtomicGraph
from .cell import check_cell, normalize_pbc
from .errors import InputError

# (atomic numbers [n], positions [n, 3] Å, cell [3, 3] Å or None, pbc [3] bool)
SystemArrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | Sequence[bool]"]

_VESIN_MAX_CELLS = 100_000  # vesin's cap on the number of cells of its cell list
_VESIN_SAFE_CELLS = 50_000  # below this many cells vesin never shrinks its cell list
_VESIN_MAX_MIXED_SPREAD = 100.0  # mixed pbc: largest non-periodic spread, in cutoffs


def _vesin_is_safe(positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float) -> bool:
    """Whether vesin handles this geometry without crashing or crawling (see module doc)."""
    extent = np.ptp(positions, axis=0)  # Cartesian spread of the atoms, Å
    if pbc.all():
        volume = abs(np.linalg.det(box))
        heights = [
            volume / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])) for k in range(3)
        ]
    elif not pbc.any():
        heights = extent.tolist()
    else:
        if float(np.linalg.norm(extent)) > _VESIN_MAX_MIXED_SPREAD * cutoff:
            return False
        heights = [np.linalg.norm(box[k]) if pbc[k] else float(extent.max()) for k in range(3)]
    n_cells = np.maximum(np.floor(np.asarray(heights, dtype=np.float64) / cutoff), 1.0)
    total = float(np.prod(n_cells))
    if not np.isfinite(total):
        return False
    if total <= _VESIN_SAFE_CELLS:
        return True
    scale = (_VESIN_MAX_CELLS / total) ** (1.0 / 3.0)
    return bool((np.floor(n_cells * scale) >= 2).all())  # margin: vesin needs >= 1


def neighbor_list_with_distances(
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: bool | Iterable[bool],
    cutoff: float,
    *,
    max_neighbors: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`neighbor_list`, also returning the ``[E]`` float64 distances ``|r_ij|``, Å."""
    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    pbc = normalize_pbc(pbc)
    check_cell(cell, pbc)
    # lattice vectors of non-periodic directions play no part in r_ij; vesin would still use
    # them (and hangs when one is nearly parallel to a periodic vector), so they are zeroed
    box = np.zeros((3, 3))
    if pbc.any():
        box = np.where(pbc[:, None], np.asarray(cell, dtype=np.float64), 0.0)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    if not np.isfinite(positions).all():
        raise InputError("positions contain NaN or inf; cannot build a neighbour list")
    groups = _separated_groups(positions, box, pbc, cutoff)
    if len(groups) == 1:
        i, j, S, d = _pairs(positions, box, pbc, cutoff)
    else:  # atoms far apart along a non-periodic direction: each group on its own
        parts = [(g, _pairs(positions[g], box, pbc, cutoff)) for g in groups]
        i = np.concatenate([g[p[0]] for g, p in parts])
        j = np.concatenate([g[p[1]] for g, p in parts])
        S = np.concatenate([p[2] for _, p in parts])
        d = np.concatenate([p[3] for _, p in parts])
    if max_neighbors is not None:
        i, j, S, d = _keep_nearest(i, j, S, d, max_neighbors)
    order = np.lexsort((j, i))
    return i[order], j[order], S[order], d[order]


def _pairs(
    positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, S, d)`` from vesin, or from ASE where vesin would crash or crawl."""
    try:
        if _vesin_is_safe(positions, box, pbc, cutoff):
            calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
            i, j, S, d = calculator.compute(
                points=positions, box=box, periodic=pbc.tolist(), quantities="ijSd"
            )
        else:
            with np.errstate(invalid="ignore", over="ignore"):  # far-apart atoms
                i, j, S, d = primitive_neighbor_list(
                    "ijSd", pbc, box, positions, float(cutoff), self_interaction=False
                )
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"neighbour list failed for cell {box.tolist()} Å, pbc {pbc.tolist()}: {exc}"
        ) from exc
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int64), np.asarray(d)


def _open_directions(box: np.ndarray, pbc: np.ndarray) -> list[np.ndarray]:
    """Unit vectors spanning the non-periodic space: orthogonal to every periodic vector."""
    periodic = box[pbc]
    if len(periodic) == 0:
        return list(np.eye(3))
    # the right singular vectors beyond the rank of the periodic vectors span their complement
    _, _, vt = np.linalg.svd(periodic)
    return list(vt[len(periodic) :])


def _separated_groups(
    positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float
) -> list[np.ndarray]:
    """Index groups of atoms that cannot interact: split wherever the atoms, sorted along a
    non-periodic direction, leave a gap wider than ``cutoff`` (one group when fully periodic)."""
    groups = [np.arange(len(positions))]
    if pbc.all():
        return groups
    for direction in _open_directions(box, pbc):
        split = []
        for g in groups:
            h = positions[g] @ direction
            if len(g) < 2 or h.max() - h.min() <= cutoff:  # no gap can be wider than cutoff
                split.append(g)
                continue
            order = np.argsort(h, kind="stable")
            cuts = np.flatnonzero(np.diff(h[order]) > cutoff) + 1
            split += [g[part] for part in np.split(order, cuts)] if cuts.size else [g]
        groups = split
    return groups


def neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: bool | Iterable[bool],
    cutoff: float,
    *,
    max_neighbors: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs closer than ``cutoff``.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian positions, Å (need not be wrapped into the cell).
        cell: ``[3, 3]`` lattice vectors as rows, Å; may be ``None`` when nothing is periodic.
            Lattice vectors of non-periodic directions are ignored (may be zero).
        pbc: periodicity along each lattice vector (a single bool applies to all three).
        cutoff: radial cutoff, Å.
        max_neighbors: keep only the nearest ``max_neighbors`` neighbours of each centre
            (ties broken by the order vesin returns). This truncation makes the energy a
            discontinuous function of the positions; leave it ``None`` for relaxations and MD.

    Returns:
        ``(i, j, S)``: ``[E]`` int64 centres, ``[E]`` int64 neighbours and ``[E, 3]`` int64
        cell shifts, with ``r_ij = positions[j] - positions[i] + S @ cell``.
    """
    i, j, S, _ = neighbor_list_with_distances(
        positions, cell, pbc, cutoff, max_neighbors=max_neighbors
    )
    return i, j, S


def _keep_nearest(
    i: np.ndarray, j: np.ndarray, S: np.ndarray, d: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep, for every centre, the ``k`` edges of smallest distance."""
    order = np.lexsort((d, i))  # by centre, then distance
    i, j, S, d = i[order], j[order], S[order], d[order]
    starts = np.searchsorted(i, i, side="left")  # first edge of each edge's centre
    keep = (np.arange(len(i)) - starts) < k
    return i[keep], j[keep], S[keep], d[keep]


def arrays_to_graph(
    systems: Sequence[SystemArrays],
    cutoff: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    max_neighbors: int | None = None,
) -> AtomicGraph:
    """Batch structures given as raw arrays into one :class:`AtomicGraph`.

    Args:
        systems: ``(numbers [n], positions [n, 3] Å, cell [3, 3] Å or None, pbc [3])`` each.
        cutoff: neighbour cutoff, Å.
        dtype: floating dtype of positions, shifts and cell.
        device: where the tensors go.
        max_neighbors: see :func:`neighbor_list`.

    Non-periodic structures get a zero cell, as :class:`AtomicGraph` expects.
    """
    return _graph_and_distances(systems, cutoff, dtype, device, max_neighbors)[0]


def arrays_to_graph_with_distances(
    systems: Sequence[SystemArrays], cutoff: float, **options: Any
) -> tuple[AtomicGraph, np.ndarray]:
    """:func:`arrays_to_graph` (same keyword arguments) that also returns the ``[E]`` float64
    edge lengths (Å, in edge order) that the neighbour list computed anyway."""
    return _graph_and_distances(systems, cutoff, **options)


def _graph_and_distances(
    systems: Sequence[SystemArrays], cutoff: float, dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu", max_neighbors: int | None = None,
) -> tuple[AtomicGraph, np.ndarray]:  # fmt: skip
    """The graph and edge lengths of :func:`arrays_to_graph_with_distances`."""
    if len(systems) == 0:
        raise InputError("no structures to convert; give at least one")
    numbers_all, positions_all, system_idx, edges, shifts, cells, pbcs = [], [], [], [], [], [], []
    distances = []
    offset = 0
    for s, (numbers, positions, cell, pbc) in enumerate(systems):
        numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        pbc = normalize_pbc(pbc)
        i, j, S, d = neighbor_list_with_distances(
            positions, cell, pbc, cutoff, max_neighbors=max_neighbors
        )
        numbers_all.append(numbers)
        positions_all.append(positions)
        system_idx.append(np.full(len(numbers), s, dtype=np.int64))
        edges.append(np.stack([i, j]) + offset)
        shifts.append(S)
        distances.append(np.asarray(d, dtype=np.float64))
        cells.append(np.zeros((3, 3)) if not pbc.any() else np.asarray(cell, dtype=np.float64))
        pbcs.append(pbc)
        offset += len(numbers)

    def floats(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(device=device, dtype=dtype)

    def ints(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(device=device, dtype=torch.int64)

    graph = AtomicGraph(
        positions=floats(np.concatenate(positions_all)),
        atomic_numbers=ints(np.concatenate(numbers_all)),
        system_idx=ints(np.concatenate(system_idx)),
        edge_index=ints(np.concatenate(edges, axis=1)),
        shifts=floats(np.concatenate(shifts).astype(np.float64)),
        cell=floats(np.stack(cells)),
        pbc=torch.from_numpy(np.stack(pbcs)).to(device=device),
    )
    return graph, np.concatenate(distances)


def atoms_to_graph(
    atoms_list: Atoms | Sequence[Atoms],
    cutoff: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    max_neighbors: int | None = None,
) -> AtomicGraph:
    """Batch one or several ``ase.Atoms`` into an :class:`AtomicGraph` (see
    :func:`arrays_to_graph` for the arguments)."""
    if isinstance(atoms_list, Atoms):
        atoms_list = [atoms_list]
    systems = [(a.numbers, a.positions, a.cell.array, a.pbc) for a in atoms_list]
    return arrays_to_graph(systems, cutoff, dtype=dtype, device=device, max_neighbors=max_neighbors)
