"""Adsorption screening campaigns (``tdn screen SPEC.yaml``): every adsorbate of a spec on
every surface, placed on the symmetry-distinct sites and at random points, relaxed in
batches, classified (final site, AdsorbML anomalies) and stored with adsorption energies
(eV) in an ASE database; the lowest valid minimum per (surface, adsorbate) summarised.

* :mod:`.spec`: the YAML spec and its validation (:func:`load_spec`);
* :mod:`.placements`: slabs, distinct sites, placements;
* :mod:`.engine`: the relaxation inside a task (TDN model or teacher);
* :mod:`.executors`: in-process or Dask;
* :mod:`.store`: the ASE database (rows, resume);
* :mod:`.run`: :func:`run_campaign`;
* :mod:`.report`: summary table, CSV, heat map.

docs/campaigns.md is the user's reference.
"""

from .report import PairSummary, heatmap, summarize, table, write_placements_csv, write_summary_csv
from .run import RunStats, run_campaign
from .spec import AdsorbateSpec, CampaignSpec, SpecError, SurfaceSpec, load_spec, parse_spec

__all__ = [
    "AdsorbateSpec", "CampaignSpec", "PairSummary", "RunStats", "SpecError", "SurfaceSpec",
    "heatmap", "load_spec", "parse_spec", "run_campaign", "summarize", "table",
    "write_placements_csv", "write_summary_csv",
]
