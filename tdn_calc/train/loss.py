"""The training loss and the error sums behind every reported metric.

Energies are compared per atom after subtracting the per-element reference energies in
float64, so large total energies (e.g. DFT, ~1e4 eV) lose no precision in float32 models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..atomic_graph import AtomicGraph


@dataclass(frozen=True)
class LossWeights:
    """Weights of MSE(energy per atom) [eV^2], MSE(forces) [eV^2/Å^2], MSE(stress)."""

    energy: float = 1.0
    forces: float = 10.0
    stress: float = 0.0


def energy_per_atom_error(energies: torch.Tensor, graph: AtomicGraph,
                          target_energy: torch.Tensor, e0: torch.Tensor) -> torch.Tensor:
    """``[S]`` float64 error of the energy per atom, eV/atom.

    Args:
        energies: ``[N]`` per-atom model energies, eV (any float dtype; may carry grad).
        graph: the batch.
        target_energy: ``[S]`` float64 reference total energies, eV.
        e0: ``[N]`` float64 reference energy of each atom's element, eV.
    """
    n_sys = graph.n_systems
    zeros = torch.zeros(n_sys, dtype=torch.float64, device=energies.device)
    pred = zeros.index_add(0, graph.system_idx, energies.double() - e0)
    target = target_energy - zeros.index_add(0, graph.system_idx, e0)
    return (pred - target) / graph.atoms_per_system().to(torch.float64)


def loss_terms(out: dict[str, torch.Tensor], graph: AtomicGraph,
               targets: dict[str, torch.Tensor], target_energy: torch.Tensor,
               e0: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean squared errors of one batch: ``energy`` (eV/atom)^2, ``forces`` (eV/Å)^2 per
    component, ``stress`` (eV/Å^3)^2 over frames that have stress (0 when none or not
    computed)."""
    de = energy_per_atom_error(out["energies"], graph, target_energy, e0)
    terms = {"energy": (de**2).mean(),
             "forces": ((out["forces"] - targets["forces"]) ** 2).mean().double()}
    mask = targets["stress_mask"]
    if "stress" in out and bool(mask.any()):
        terms["stress"] = ((out["stress"][mask] - targets["stress"][mask]) ** 2).mean().double()
    else:
        terms["stress"] = torch.zeros((), dtype=torch.float64, device=de.device)
    return terms


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    return (weights.energy * terms["energy"] + weights.forces * terms["forces"]
            + weights.stress * terms["stress"])
