"""The batched state: many structures as one set of tensors, their neighbour lists and the
graph the model evaluates.

Fields are sorted by what they index (as TorchSim's ``SimState``): per atom ``[N, ...]``,
per system ``[S, ...]`` (``S`` structures in the batch) and per edge. Optimizers extend
:class:`BatchState` with their own per-atom / per-system fields (declared with
``field(metadata=PER_ATOM)`` / ``field(metadata=PER_SYSTEM)``), and
:meth:`BatchState.select` and :meth:`BatchState.cat` carry those along when structures leave
or join the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms

from .. import slab
from ..atomic_graph import AtomicGraph
from ..errors import InputError
from ..graph import neighbor_list

S = TypeVar("S", bound="BatchState")


#: ``field(metadata=PER_ATOM)``: a per-atom field, ``[N, ...]`` tensor.
PER_ATOM = {"per": "atom"}
#: ``field(metadata=PER_SYSTEM)``: a per-system field, ``[S, ...]`` tensor or a list of ``S``
#: Python objects (e.g. one BFGS Hessian per structure).
PER_SYSTEM = {"per": "system"}


@dataclass(kw_only=True)
class BatchState:
    """The structures being relaxed together.

    Attributes:
        numbers: ``[N]`` atomic numbers.
        sys: ``[N]`` index of each atom's structure in the batch (``system_idx``).
        pos: ``[N, 3]`` positions, Å.
        fixed: ``[N]`` bool, atoms held by ``FixAtoms``.
        pos0: ``[N, 3]`` start positions, Å.
        nl_pos: ``[N, 3]`` positions at the last neighbour-list build, Å (NaN: never built).
        ids: ``[S]`` index of each structure in the caller's input list.
        cell: ``[S, 3, 3]`` cells, Å (rows are lattice vectors; zeros when not periodic).
        pbc: ``[S, 3]`` bool periodicity.
        n_steps: ``[S]`` optimizer steps taken.
        e0: ``[S]`` start energy, eV (NaN before the first evaluation).
        edge_index: ``[2, E]`` neighbour pairs within ``cutoff + skin``.
        shifts: ``[E, 3]`` integer cell shifts of the pairs.
    """

    numbers: torch.Tensor = field(metadata=PER_ATOM)
    sys: torch.Tensor
    pos: torch.Tensor = field(metadata=PER_ATOM)
    fixed: torch.Tensor = field(metadata=PER_ATOM)
    pos0: torch.Tensor = field(metadata=PER_ATOM)
    nl_pos: torch.Tensor = field(metadata=PER_ATOM)
    ids: torch.Tensor = field(metadata=PER_SYSTEM)
    cell: torch.Tensor = field(metadata=PER_SYSTEM)
    pbc: torch.Tensor = field(metadata=PER_SYSTEM)
    n_steps: torch.Tensor = field(metadata=PER_SYSTEM)
    e0: torch.Tensor = field(metadata=PER_SYSTEM)
    edge_index: torch.Tensor
    shifts: torch.Tensor

    @property
    def n_systems(self) -> int:
        """Number of structures ``S``."""
        return int(self.ids.shape[0])

    def ssum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``[N]`` per-atom values per structure -> ``[S]``."""
        return torch.zeros(self.n_systems, dtype=values.dtype, device=values.device).index_add(
            0, self.sys, values
        )

    def smax(self, values: torch.Tensor) -> torch.Tensor:
        """Max of ``[N]`` per-atom values per structure -> ``[S]``."""
        out = torch.full((self.n_systems,), -torch.inf, dtype=values.dtype, device=values.device)
        return out.scatter_reduce(0, self.sys, values, "amax")

    def extend(self, cls: type[S], **extra: Any) -> S:
        """This state as ``cls`` (a subclass adding an optimizer's fields), given ``extra``."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(BatchState)}, **extra)

    def select(self: S, keep: torch.Tensor) -> S:
        """The structures where ``keep`` (``[S]`` bool) is True, optimizer fields included."""
        atom_keep = keep[self.sys]
        new_atom = torch.cumsum(atom_keep.long(), 0) - 1
        new_sys = torch.cumsum(keep.long(), 0) - 1
        edge_keep = atom_keep[self.edge_index[0]]
        keep_list = keep.tolist()
        kw: dict[str, Any] = {}
        for f in fields(self):
            value, per = getattr(self, f.name), f.metadata.get("per")
            if per == "atom":
                kw[f.name] = value[atom_keep]
            elif per == "system":
                kw[f.name] = (value[keep] if isinstance(value, torch.Tensor)
                              else [v for v, k in zip(value, keep_list, strict=True) if k])
        kw["sys"] = new_sys[self.sys[atom_keep]]
        kw["edge_index"] = new_atom[self.edge_index[:, edge_keep]]
        kw["shifts"] = self.shifts[edge_keep]
        return type(self)(**kw)

    @classmethod
    def cat(cls: type[S], batches: Sequence[S]) -> S:
        """One state of all structures of ``batches`` (same class), in order."""
        if len(batches) == 1:
            return batches[0]
        kw: dict[str, Any] = {}
        for f in fields(cls):
            values = [getattr(b, f.name) for b in batches]
            if f.name != "edge_index":
                kw[f.name] = (torch.cat(values) if isinstance(values[0], torch.Tensor)
                              else [v for part in values for v in part])
        atoms, systems, sys, edges = 0, 0, [], []
        for b in batches:
            sys.append(b.sys + systems)
            edges.append(b.edge_index + atoms)
            atoms += b.pos.shape[0]
            systems += b.n_systems
        kw["sys"] = torch.cat(sys)
        kw["edge_index"] = torch.cat(edges, dim=1)
        return cls(**kw)


def fixed_mask(atoms: Atoms) -> np.ndarray:
    """``[n_atoms]`` bool: atoms held by ``FixAtoms``.

    Raises:
        InputError: another constraint (the batched relaxation supports only ``FixAtoms``).
    """
    for c in atoms.constraints:
        if not isinstance(c, FixAtoms):
            raise InputError(
                f"batched relaxation supports only FixAtoms constraints, got "
                f"{type(c).__name__}; relax this structure with relax() instead"
            )
    return slab.fixed_mask(atoms)


def from_atoms(
    atoms_list: Sequence[Atoms], ids: Sequence[int], dtype: torch.dtype, device: torch.device
) -> BatchState:
    """The state of ``atoms_list`` (input indices ``ids``) before any step; no edges yet."""

    def f(x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

    def i(x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.long, device=device)

    n = [len(a) for a in atoms_list]
    pos = f(np.concatenate([a.positions for a in atoms_list]))
    cells = [a.cell.array if a.pbc.any() else np.zeros((3, 3)) for a in atoms_list]
    s = len(atoms_list)
    return BatchState(
        ids=i(list(ids)),
        numbers=i(np.concatenate([a.numbers for a in atoms_list])),
        sys=i(np.repeat(np.arange(s), n)),
        pos=pos,
        fixed=torch.as_tensor(np.concatenate([fixed_mask(a) for a in atoms_list]), device=device),
        pos0=pos.clone(),
        nl_pos=torch.full_like(pos, torch.nan),
        cell=f(np.stack(cells)),
        pbc=torch.as_tensor(np.stack([a.pbc for a in atoms_list]), device=device),
        n_steps=torch.zeros(s, dtype=torch.long, device=device),
        e0=torch.full((s,), torch.nan, dtype=dtype, device=device),
        edge_index=torch.zeros((2, 0), dtype=torch.long, device=device),
        shifts=torch.zeros((0, 3), dtype=dtype, device=device),
    )


def update_neighbors(b: S, cutoff: float, skin: float, max_neighbors: int | None) -> S:
    """Rebuild the lists (radius ``cutoff + skin``, Å) of the structures with an atom moved
    more than ``skin / 2`` since their last build (all of them with ``max_neighbors``)."""
    moved = torch.linalg.vector_norm(b.pos - b.nl_pos, dim=1)
    stale = ~(moved <= skin / 2) if max_neighbors is None else torch.ones_like(moved, dtype=bool)
    rebuild = b.ssum(stale.to(b.pos.dtype)) > 0
    if not bool(rebuild.any()):
        return b
    pos = b.pos.detach().cpu().numpy()
    counts = torch.bincount(b.sys, minlength=b.n_systems).cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cells, pbcs = b.cell.cpu().numpy(), b.pbc.cpu().numpy()
    radius = cutoff + (skin if max_neighbors is None else 0.0)
    new_edges, new_shifts = [], []
    for s in np.flatnonzero(rebuild.cpu().numpy()):
        lo, hi = starts[s], starts[s] + counts[s]
        i, j, S = neighbor_list(pos[lo:hi], cells[s], pbcs[s], radius, max_neighbors=max_neighbors)
        new_edges.append(np.stack([i, j]) + lo)
        new_shifts.append(S)
    keep = ~rebuild[b.sys[b.edge_index[0]]]
    edge_index = torch.cat(
        [b.edge_index[:, keep], torch.as_tensor(np.concatenate(new_edges, 1), device=b.pos.device)],
        dim=1,
    )
    new = torch.as_tensor(np.concatenate(new_shifts), dtype=b.pos.dtype, device=b.pos.device)
    shifts = torch.cat([b.shifts[keep], new])
    atom_rebuild = rebuild[b.sys].unsqueeze(1)
    return replace(
        b,
        edge_index=edge_index,
        shifts=shifts,
        nl_pos=torch.where(atom_rebuild, b.pos, b.nl_pos),
    )


def to_graph(b: BatchState, cutoff: float) -> tuple[AtomicGraph, torch.Tensor]:
    """The graph of the edges shorter than ``cutoff`` (Å) and the ``[S]`` shortest pair
    distance per structure, Å (``inf`` without pairs)."""
    i, j = b.edge_index
    vec = b.pos[j] - b.pos[i] + torch.einsum("ek,ekl->el", b.shifts, b.cell[b.sys[i]])
    d = torch.linalg.vector_norm(vec, dim=1)
    inside = d < cutoff
    dmin = torch.full((b.n_systems,), torch.inf, dtype=d.dtype, device=d.device)
    dmin = dmin.scatter_reduce(0, b.sys[i], d, "amin")
    graph = AtomicGraph(
        positions=b.pos,
        atomic_numbers=b.numbers,
        system_idx=b.sys,
        edge_index=b.edge_index[:, inside],
        shifts=b.shifts[inside],
        cell=b.cell,
        pbc=b.pbc,
    )
    return graph, dmin
