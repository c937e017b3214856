"""Shared pieces of the relaxation tests (import the fixtures into a test module to use them)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from ase import Atoms
from ase.build import molecule


@pytest.fixture(autouse=True)
def one_thread():
    """One torch and BLAS thread: on a busy shared machine threads spin and runs crawl."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only limits BLAS threads
        threadpool_limits = contextlib.nullcontext
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


def rattled_molecules(names=("CH3CH2OH", "H2O", "CH4", "CH3OH", "HCOOH"), amount=0.1):
    """ASE g2 molecules (H, C, O only), each rattled with its own seed."""
    out = []
    for k, name in enumerate(names):
        atoms = molecule(name)
        atoms.rattle(amount, seed=k)
        out.append(atoms)
    return out


def periodic_cho(seed: int = 0) -> Atoms:
    """8 C/H/O atoms on a rattled grid in a 5 Å triclinic cell."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cell = np.array([[5.2, 0.0, 0.0], [0.6, 5.0, 0.0], [0.3, -0.4, 5.4]])
    grid = np.array([[a, b, c] for a in (0, 0.5) for b in (0, 0.5) for c in (0, 0.5)])
    frac = grid + rng.normal(scale=0.03, size=grid.shape)
    return Atoms("C2O2H4", scaled_positions=frac, cell=cell, pbc=True)


class MorsePairs(torch.nn.Module):
    """A well-conditioned stand-in for a TDNModel: the same call
    (``model(graph, compute_forces=..., compute_stress=...)``), outputs and attributes
    (``elements``, ``cutoff``, ``config``, ``card``), with a smooth Morse pair energy,
    ``E = sum over pairs D [(1 - exp(-a (r - r0)))^2 - 1] (1 - (r / cutoff)^2)^2``.

    Bounded below, smooth and soft (forces below 1 eV/Å on the test structures): FIRE and
    BFGS reach fmax 0.001 eV/Å in 20-180 steps on molecules, bulk cells (with or without
    a cell filter) and slabs, in float32 or float64, on any machine. Tests of
    what a relaxation does *around* the physics (fixed atoms, outputs, resume, batching)
    use it instead of a random TDN model, whose relaxations are chaotic.
    """

    def __init__(self, elements=(1, 6, 8), cutoff=4.5, r0=2.2, a=1.0, depth=0.2,
                 max_neighbors=None):  # fmt: skip
        super().__init__()
        self.depth = torch.nn.Parameter(torch.tensor(float(depth), dtype=torch.float64))  # eV
        self.r0, self.a = float(r0), float(a)
        self.elements = sorted(int(z) for z in elements)
        self.cutoff = float(cutoff)
        self.config = SimpleNamespace(
            elements=self.elements, cutoff=self.cutoff, max_neighbors=max_neighbors,
            lmax=0, channels=1, num_layers=1,  # for the calculator's memory estimate
        )
        self.card: dict = {}

    def forward(self, graph, compute_forces=True, compute_stress=False, training=False,
                return_features=False):  # fmt: skip
        with torch.enable_grad():
            positions = graph.positions.detach().requires_grad_(True)
            strain = torch.zeros_like(graph.cell, requires_grad=True)
            deformation = torch.eye(3, dtype=strain.dtype) + strain
            cell = graph.cell @ deformation
            moved = torch.einsum("ni,nij->nj", positions, deformation[graph.system_idx])
            i, j = graph.edge_index
            offsets = torch.einsum("ek,ekl->el", graph.shifts, cell[graph.system_idx[i]])
            r = torch.linalg.vector_norm(moved[j] - moved[i] + offsets, dim=-1)
            morse = (1 - torch.exp(-self.a * (r - self.r0))) ** 2 - 1
            envelope = (1 - (r / self.cutoff) ** 2).clamp(min=0) ** 2
            pair = 0.5 * self.depth * morse * envelope  # each pair appears twice
            energies = torch.zeros(len(moved), dtype=pair.dtype).index_add(0, i, pair)
            energy = torch.zeros(graph.n_systems, dtype=pair.dtype)
            energy = energy.index_add(0, graph.system_idx, energies)
            d_pos, d_strain = torch.autograd.grad(energy.sum(), [positions, strain])
        volume = torch.linalg.det(graph.cell).abs().view(-1, 1, 1)
        stress = torch.where(volume > 1e-8, d_strain / volume.clamp(min=1e-8), 0.0)
        out = {"energy": energy.double(), "energies": energies.double(), "forces": -d_pos}
        if compute_stress:
            out["stress"] = stress
        return {key: value.detach() for key, value in out.items()}


class Runaway(torch.nn.Module):
    """A fake model: E = -strength sum |x|^2 (atoms run away, the energy falls without
    bound); raises an out-of-memory error for more than ``max_systems`` structures."""

    def __init__(self, max_systems: int = 100, strength: float = 1.0):
        super().__init__()
        self.strength = float(strength)
        self.w = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
        self.max_systems = max_systems
        self.calls: list[int] = []
        self.config = type("C", (), {"max_neighbors": None})()
        self.cutoff, self.elements = 3.0, [1, 6, 8]

    def forward(self, graph, compute_forces=True, compute_stress=False):
        self.calls.append(graph.n_systems)
        if graph.n_systems > self.max_systems:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        x = graph.positions
        energies = -self.strength * (x**2).sum(1)
        energy = torch.zeros(graph.n_systems, dtype=x.dtype)
        energy = energy.index_add(0, graph.system_idx, energies)
        return {"energy": energy, "energies": energies, "forces": 2 * self.strength * x}


@pytest.fixture
def morse_checkpoints(monkeypatch):
    """Every checkpoint file loads (and is checked) as usual but runs as :class:`MorsePairs`
    over the same elements: CLI tests keep the real loading path, not its chaotic numerics."""
    from tdn_calc import checkpoint

    real = checkpoint.load_checkpoint_file

    def load(path, *, device="auto", dtype="float32", **kwargs):
        model = real(path, device=device, dtype=dtype, **kwargs)
        param = next(model.parameters())
        toy = MorsePairs(model.elements).to(device=param.device, dtype=param.dtype)
        toy.card = getattr(model, "card", {})
        return toy.eval()

    monkeypatch.setattr(checkpoint, "load_checkpoint_file", load)
