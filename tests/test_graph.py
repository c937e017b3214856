"""Neighbour lists: edge-for-edge agreement with ASE, and the AtomicGraph built from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list
from hypothesis import given, settings
from hypothesis import strategies as st

from tdn_calc.errors import InputError
from tdn_calc.graph import (
    arrays_to_graph,
    atoms_to_graph,
    neighbor_list,
    neighbor_list_with_distances,
)


def _edge_set(i, j, S) -> set[tuple]:
    return set(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(S).tolist()), strict=True))


def _molecule() -> Atoms:
    return molecule("CH3CH2OH")


def _bulk_cu() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    return atoms


def _small_triclinic() -> Atoms:
    # all three heights are well below the 5 Å cutoff: many images of each atom
    rng = np.random.default_rng(3)
    cell = [[2.5, 0.0, 0.0], [1.0, 2.2, 0.0], [0.7, 0.4, 2.1]]
    return Atoms("CuAgAu", scaled_positions=rng.random((3, 3)), cell=cell, pbc=True)


def _slab() -> Atoms:
    atoms = fcc111("Pt", (3, 3, 3), vacuum=6.0)
    atoms.rattle(0.05, seed=2)
    atoms.positions += [0.3, -11.0, -4.0]  # unwrapped, partly outside the cell
    return atoms


def _slab_no_c() -> Atoms:
    atoms = _slab()
    atoms.cell[2] = 0.0  # the non-periodic lattice vector may be zero
    return atoms


def _wire() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, orthorhombic=True) * (2, 2, 1)
    atoms.pbc = [False, False, True]
    atoms.rattle(0.05, seed=4)
    return atoms


CASES = {
    "molecule": (_molecule, 3.0),
    "bulk_cu": (_bulk_cu, 5.0),
    "small_triclinic": (_small_triclinic, 5.0),
    "slab_vacuum": (_slab, 5.0),
    "slab_zero_c": (_slab_no_c, 5.0),
    "wire_1d": (_wire, 6.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_ase_edge_for_edge(name):
    make, cutoff = CASES[name]
    atoms = make()
    i_ref, j_ref, S_ref, d_ref = ase_neighbor_list("ijSd", atoms, cutoff)
    i, j, S, d = neighbor_list_with_distances(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert len(i) == len(i_ref) > 0
    assert _edge_set(i, j, S) == _edge_set(i_ref, j_ref, S_ref)
    # same distances, edge by edge, and consistent with the r_ij convention
    key_ref = np.lexsort((S_ref[:, 2], S_ref[:, 1], S_ref[:, 0], j_ref, i_ref))
    key = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    np.testing.assert_allclose(d[key], d_ref[key_ref], rtol=0, atol=1e-10)
    r = atoms.positions[j] - atoms.positions[i] + S @ atoms.cell.array
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), d, atol=1e-10)
    assert (d < cutoff).all()
    # sorted by centre, no zero-shift self pair
    assert (np.diff(i) >= 0).all()
    assert not ((i == j) & (S == 0).all(axis=1)).any()


def test_small_cell_has_several_images_of_one_pair():
    atoms = _small_triclinic()
    i, j, S = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    _, counts = np.unique(np.stack([i, j], axis=1), axis=0, return_counts=True)
    assert counts.max() > 5
    assert ((i == j) & (np.abs(S).sum(axis=1) > 0)).any()  # an atom sees its own images


def test_non_periodic_needs_no_cell_and_single_atom_has_no_edges():
    mol = _molecule()
    i, j, S = neighbor_list(mol.positions, None, False, 3.0)
    i_ref, j_ref, S_ref = ase_neighbor_list("ijS", mol, 3.0)
    assert _edge_set(i, j, S) == _edge_set(i_ref, j_ref, S_ref)
    for pbc, cell in [(False, None), (True, np.eye(3) * 10.0)]:
        i, j, S = neighbor_list(np.zeros((1, 3)), cell, pbc, 4.0)
        assert i.shape == j.shape == (0,) and S.shape == (0, 3)
    far = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    assert len(neighbor_list(far, None, False, 3.0)[0]) == 0


def test_single_atom_in_small_periodic_cell_sees_its_images():
    i, j, S = neighbor_list(np.zeros((1, 3)), np.eye(3) * 2.0, True, 2.5)
    # images at distance 2 (6 of them); sqrt(8) = 2.83 is beyond the cutoff
    assert len(i) == 6 and (i == 0).all() and (j == 0).all()
    assert _edge_set(i, j, S) == {s for s in _edge_set(i, j, S) if sum(map(abs, s[2])) == 1}


@pytest.mark.parametrize("pbc", [True, [True, True, False], [False, True, False]])
def test_periodic_direction_without_cell_is_refused(pbc):
    cell = np.zeros((3, 3))
    with pytest.raises(InputError, match="lattice vector"):
        neighbor_list(np.zeros((2, 3)), cell, pbc, 3.0)
    with pytest.raises(InputError, match="no cell"):
        neighbor_list(np.zeros((2, 3)), None, pbc, 3.0)


def test_degenerate_periodic_cell_is_refused():
    cell = np.array([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]])  # coplanar
    with pytest.raises(InputError, match="linearly dependent"):
        neighbor_list(np.zeros((2, 3)), cell, True, 3.0)


def test_max_neighbors_keeps_the_nearest():
    atoms = _bulk_cu()
    cutoff, k = 5.0, 7
    i_all, j_all, S_all, d_all = neighbor_list_with_distances(
        atoms.positions, atoms.cell.array, atoms.pbc, cutoff
    )
    i, j, S, d = neighbor_list_with_distances(
        atoms.positions, atoms.cell.array, atoms.pbc, cutoff, max_neighbors=k
    )
    assert (np.bincount(i, minlength=len(atoms)) == k).all()
    for centre in range(len(atoms)):
        kept = np.sort(d[i == centre])
        np.testing.assert_allclose(kept, np.sort(d_all[i_all == centre])[:k])
    assert _edge_set(i, j, S) <= _edge_set(i_all, j_all, S_all)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_atoms_to_graph_batches_and_follows_the_edge_convention(dtype):
    structures = [_molecule(), _bulk_cu(), _slab(), _wire()]
    cutoff = 4.0
    graph = atoms_to_graph(structures, cutoff, dtype=dtype)
    assert graph.n_systems == 4
    assert graph.n_atoms == sum(len(a) for a in structures)
    assert graph.positions.dtype == graph.shifts.dtype == graph.cell.dtype == dtype
    assert graph.edge_index.dtype == graph.atomic_numbers.dtype == torch.int64
    assert graph.pbc.dtype == torch.bool
    assert graph.atoms_per_system().tolist() == [len(a) for a in structures]
    # the molecule carries a zero cell
    assert torch.count_nonzero(graph.cell[0]) == 0
    # edge vectors reproduce ASE's distances
    i, j = graph.edge_index
    cell_i = graph.cell[graph.system_idx[i]]
    r = graph.positions[j] - graph.positions[i] + torch.einsum("ek,ekl->el", graph.shifts, cell_i)
    n_ref = sum(len(ase_neighbor_list("i", a, cutoff)) for a in structures)
    assert graph.n_edges == n_ref
    d_ref = np.concatenate([np.sort(ase_neighbor_list("d", a, cutoff)) for a in structures])
    d = r.norm(dim=1).double().numpy()
    sys_of_edge = graph.system_idx[i].numpy()
    d_sorted = np.concatenate([np.sort(d[sys_of_edge == s]) for s in range(4)])
    np.testing.assert_allclose(d_sorted, d_ref, atol=1e-5 if dtype == torch.float32 else 1e-10)
    # edges never cross structures
    assert (graph.system_idx[i] == graph.system_idx[j]).all()


def test_arrays_to_graph_matches_atoms_to_graph():
    structures = [_small_triclinic(), _molecule()]
    a = atoms_to_graph(structures, 4.0, dtype=torch.float64)
    b = arrays_to_graph(
        [(x.numbers, x.positions, x.cell.array, x.pbc) for x in structures],
        4.0,
        dtype=torch.float64,
    )
    for name in (
        "positions",
        "atomic_numbers",
        "system_idx",
        "edge_index",
        "shifts",
        "cell",
        "pbc",
    ):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    with pytest.raises(InputError, match="no structures"):
        arrays_to_graph([], 4.0)


def test_graph_on_cuda(cuda):
    graph = atoms_to_graph(_bulk_cu(), 4.0, device=cuda)
    assert graph.positions.device.type == "cuda" and graph.edge_index.device.type == "cuda"


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_atoms=st.integers(1, 6),
    pbc=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    cutoff=st.floats(1.0, 6.0),
)
def test_random_cells_match_ase(seed, n_atoms, pbc, cutoff):
    """Random (often skewed, often smaller than the cutoff) cells with any pbc mask."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(1.5, 6.0, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
    atoms = Atoms(
        numbers=np.ones(n_atoms, dtype=int),
        scaled_positions=rng.uniform(-0.5, 1.5, (n_atoms, 3)),  # partly outside the cell
        cell=cell,
        pbc=pbc,
    )
    i_ref, j_ref, S_ref = ase_neighbor_list("ijS", atoms, cutoff)
    i, j, S = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert _edge_set(i, j, S) == _edge_set(i_ref, j_ref, S_ref)
    assert len(i) == len(i_ref)
