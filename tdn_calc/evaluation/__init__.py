"""Evaluation shared by the benchmarks, ``tdn adsorb`` and screening campaigns.

* :mod:`~tdn_calc.evaluation.sites`: adsorption sites and the site classifier (one
  vocabulary: ontop, bridge, shortbridge, longbridge, fcc, hcp, hollow, desorbed);
* :mod:`~tdn_calc.evaluation.references`: named gas-phase reference schemes, adsorption
  energies;
* :mod:`~tdn_calc.evaluation.landing`: does a relaxation land in the reference's minimum
  (energy, bonding, site);
* :mod:`~tdn_calc.evaluation.anomalies`: AdsorbML's anomalies (desorbed, dissociated,
  surface changed, intercalated);
* :mod:`~tdn_calc.evaluation.metrics`: error statistics, energy/force errors, rank
  correlation.
"""

from .anomalies import ANOMALIES, anomalies
from .landing import Landing, bond_changes, bonds, delta_e_mev, landing, passes
from .metrics import error_stats, prediction_metrics, ranks, spearman
from .references import (
    DEFAULT_SCHEME,
    HYDRIDES,
    MOLECULES_O2_N2,
    SCHEMES,
    ReferenceScheme,
    adsorption_energy,
    get_scheme,
    reference_terms,
)
from .sites import (
    SITE_NAMES,
    Site,
    canonical_site,
    classify_site,
    lateral_distances,
    metal_layers,
    nearest_site,
    surface_sites,
)

__all__ = [
    "ANOMALIES", "DEFAULT_SCHEME", "HYDRIDES", "MOLECULES_O2_N2", "SCHEMES", "SITE_NAMES",
    "Landing", "ReferenceScheme", "Site", "adsorption_energy", "anomalies", "bond_changes",
    "bonds", "canonical_site", "classify_site", "delta_e_mev", "error_stats", "get_scheme",
    "landing", "lateral_distances", "metal_layers", "nearest_site", "passes",
    "prediction_metrics", "ranks", "reference_terms", "spearman", "surface_sites",
]
