"""The same relax function as a jobflow job (docs/campaigns.md; run by tests/test_quacc.py).
jobflow stores job outputs as JSON, so the relaxed Atoms go out as ASE JSON text
(``ase.io.jsonio.encode``; ``decode`` reads them back, constraints included)."""

from __future__ import annotations

from ase.io.jsonio import encode
from jobflow import job
from screen_flow import relax_placement


@job
def relax_placement_job(atoms, n_slab, model="tdn-catalysis", fmax=0.05, max_steps=300):
    out = relax_placement(atoms, n_slab, model, fmax, max_steps)
    out["atoms"] = encode(out["atoms"])
    return out
