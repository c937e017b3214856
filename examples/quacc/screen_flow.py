"""A `tdn screen` step as a quacc flow: relax every placement of a campaign spec with
TDNCalculator through quacc's ASE runner (docs/campaigns.md, "With quacc (and
jobflow/atomate2)"; run by tests/test_quacc.py).

``relax_placement`` is a plain function (also wrapped as a jobflow job in
``jobflow_job.py``); ``relax_job`` is it as a quacc ``@job``; ``screen_flow`` is a quacc
``@flow`` with one ``relax_job`` per placement, built by tdn_calc's own placement code.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from quacc import flow, job
from quacc.runners.ase import Runner

from tdn_calc import TDNCalculator
from tdn_calc.campaigns.placements import (
    Placement,
    build_slab,
    enumerate_placements,
    lattice_of,
)
from tdn_calc.campaigns.spec import CampaignSpec


def relax_placement(atoms: Atoms, n_slab: int, model: str = "tdn-catalysis",
                    fmax: float = 0.05, max_steps: int = 300) -> dict:
    """Relax one placement (slab atoms first, adsorbate anchor at ``n_slab``) with quacc's
    ``Runner.run_opt`` (BFGS, the slab's own FixAtoms kept) and summarise it."""
    dyn = Runner(atoms, TDNCalculator(model)).run_opt(fmax=fmax, max_steps=max_steps)
    final = dyn.atoms
    forces = final.get_forces()  # constrained atoms count as zero, as for the optimizer
    anchor = final.get_distances(n_slab, list(range(n_slab)), mic=True).min()
    return {
        "atoms": final,
        "energy": float(final.get_potential_energy()),
        "fmax": float(np.linalg.norm(forces, axis=1).max()),
        "steps": int(dyn.nsteps),
        "anchor_metal_distance": float(anchor),  # Å, anchor to its nearest slab atom
    }


relax_job = job(relax_placement)


def placements(spec: CampaignSpec) -> list[Placement]:
    """Every placement of ``spec`` (surfaces x adsorbates x sites, plus its random ones) on
    the unrelaxed slabs; a ``lattice_constant: model`` is fitted with ``spec.model``."""
    out = []
    for surface in spec.surfaces:
        lattice = lattice_of(surface, lambda _: TDNCalculator(spec.model))
        out += enumerate_placements(spec, surface, build_slab(surface, lattice))
    return out


@flow
def screen_flow(spec: CampaignSpec) -> dict:
    """``{placement key: relax_job(...)}``, with the spec's model, relax.fmax, relax.steps."""
    return {p.key: relax_job(p.atoms, p.n_slab, spec.model, spec.fmax, spec.steps)
            for p in placements(spec)}
