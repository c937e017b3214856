"""The batched graph that TDN models consume.

Conventions (those of ``ase.neighborlist.neighbor_list("ijS")``):

* ``edge_index[0]`` is the centre atom ``i`` (the receiver of the message),
  ``edge_index[1]`` the neighbour ``j`` (the sender).
* The edge vector is ``r_ij = positions[j] - positions[i] + shifts[e] @ cell[system_idx[i]]``
  in Å; ``shifts`` are integer cell-image offsets stored as floats.
* ``cell`` rows are lattice vectors (ASE convention); non-periodic systems carry a
  zero cell and zero shifts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class AtomicGraph:
    """Many structures in one graph.

    Attributes:
        positions: ``[n_atoms, 3]`` Cartesian positions, Å.
        atomic_numbers: ``[n_atoms]`` int64.
        system_idx: ``[n_atoms]`` int64, index of the structure each atom belongs to
            (sorted, starting at 0).
        edge_index: ``[2, n_edges]`` int64, ``(i, j)`` pairs, see module docstring.
        shifts: ``[n_edges, 3]`` integer cell shifts of ``j`` (same dtype as positions).
        cell: ``[n_systems, 3, 3]`` lattice vectors as rows, Å (zeros when non-periodic).
        pbc: ``[n_systems, 3]`` bool.
    """

    positions: torch.Tensor
    atomic_numbers: torch.Tensor
    system_idx: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    def atoms_per_system(self) -> torch.Tensor:
        """``[n_systems]`` int64 number of atoms in each structure."""
        return torch.bincount(self.system_idx, minlength=self.n_systems)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to ``device``; floating tensors (positions, shifts, cell) are cast to ``dtype``."""
        changes = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t.is_floating_point():
                changes[f.name] = t.to(device=device, dtype=dtype)
            else:
                changes[f.name] = t.to(device=device)
        return replace(self, **changes)

    def with_positions(self, positions: torch.Tensor) -> AtomicGraph:
        """A copy with new ``[n_atoms, 3]`` positions (same topology)."""
        return replace(self, positions=positions)
