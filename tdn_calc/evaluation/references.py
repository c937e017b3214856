"""Gas-phase reference schemes and adsorption energies (eV).

``E_ads = E(slab + adsorbate) - E(clean slab) - sum_g c_g E(g)``, every energy from one
method; negative means binding. The gas references ``g`` and coefficients ``c_g`` of an
adsorbate come from a named :class:`ReferenceScheme`; name the scheme with every table and
use one scheme across a comparison:

* ``molecules-O2-N2`` (:data:`MOLECULES_O2_N2`, the default of ``tdn adsorb``): an adsorbate
  that is itself a stable molecule (CO, NO, CO2, H2O, NH3, CH4, H2, O2, N2, H2S) is its own
  reference; otherwise mu_H = 1/2 E(H2), mu_O = 1/2 E(O2), mu_N = 1/2 E(N2),
  mu_C = E(CH4) - 2 E(H2), mu_S = E(H2S) - E(H2); e.g. OH = 1/2 O2 + 1/2 H2;
* ``H2-H2O-NH3-CH4`` (:data:`HYDRIDES`, closed-shell molecules only, no O2): every adsorbate
  by its elements, mu_H = 1/2 E(H2), mu_O = E(H2O) - E(H2), mu_N = E(NH3) - 3/2 E(H2),
  mu_C = E(CH4) - 2 E(H2), mu_S = E(H2S) - E(H2); e.g. CO = CH4 + H2O - 3 H2.

Gas names are ASE's g2 names (``ase.build.molecule``; H2S is ``SH2``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from ase import Atoms

from ..errors import InputError


@dataclass(frozen=True)
class ReferenceScheme:
    """A named choice of gas-phase references.

    ``elements``: ``{symbol: {gas: coefficient}}``, the chemical potential of each element as
    a sum of gas energies; ``molecules``: gases that are their own reference when the
    adsorbate is that molecule (empty: always by elements).
    """

    name: str
    elements: Mapping[str, Mapping[str, float]]
    molecules: tuple[str, ...] = field(default=())
    description: str = ""


MOLECULES_O2_N2 = ReferenceScheme(
    name="molecules-O2-N2",
    elements={"H": {"H2": 0.5}, "O": {"O2": 0.5}, "N": {"N2": 0.5},
              "C": {"CH4": 1.0, "H2": -2.0}, "S": {"SH2": 1.0, "H2": -1.0}},
    molecules=("CO", "NO", "CO2", "H2O", "NH3", "CH4", "H2", "O2", "N2", "SH2"),
    description="stable molecules as themselves; H = 1/2 H2, O = 1/2 O2, N = 1/2 N2, "
                "C = CH4 - 2 H2, S = H2S - H2",
)
HYDRIDES = ReferenceScheme(
    name="H2-H2O-NH3-CH4",
    elements={"H": {"H2": 0.5}, "O": {"H2O": 1.0, "H2": -1.0}, "N": {"NH3": 1.0, "H2": -1.5},
              "C": {"CH4": 1.0, "H2": -2.0}, "S": {"SH2": 1.0, "H2": -1.0}},
    description="H = 1/2 H2, O = H2O - H2, N = NH3 - 3/2 H2, C = CH4 - 2 H2, S = H2S - H2",
)
#: the schemes by name
SCHEMES = {s.name: s for s in (MOLECULES_O2_N2, HYDRIDES)}
DEFAULT_SCHEME = MOLECULES_O2_N2
FORMULA = "E_ads = E(slab+ads) - E(slab) - sum_g c_g E(g)"


def get_scheme(scheme: str | ReferenceScheme) -> ReferenceScheme:
    """The scheme named ``scheme`` (or ``scheme`` itself); ``InputError`` lists the names."""
    if isinstance(scheme, ReferenceScheme):
        return scheme
    if scheme not in SCHEMES:
        raise InputError(f"unknown reference scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return SCHEMES[scheme]


def formula_key(atoms: Atoms) -> str:
    """Hill formula of ``atoms`` (``CO``, ``H2O``), used to match molecule references."""
    return atoms.get_chemical_formula(mode="hill", empirical=False)


def reference_terms(adsorbate: Atoms,
                    scheme: str | ReferenceScheme = DEFAULT_SCHEME) -> dict[str, float]:
    """Gas-phase references ``{gas: coefficient}`` of ``adsorbate`` under ``scheme``;
    ``InputError`` for an element the scheme has no reference for."""
    from ase.build import molecule

    scheme = get_scheme(scheme)
    key = formula_key(adsorbate)
    for name in scheme.molecules:
        if formula_key(molecule(name)) == key:
            return {name: 1.0}
    terms: Counter = Counter()
    for symbol, count in Counter(adsorbate.get_chemical_symbols()).items():
        if symbol not in scheme.elements:
            raise InputError(
                f"no gas-phase reference for element {symbol} in adsorbate {key} (scheme "
                f"{scheme.name}); supported elements: {', '.join(scheme.elements)}")
        for gas, c in scheme.elements[symbol].items():
            terms[gas] += c * count
    return {g: c for g, c in terms.items() if abs(c) > 1e-12}


def reference_energy(gas_energies: Mapping[str, float], terms: Mapping[str, float]) -> float:
    """``sum_g terms[g] * gas_energies[g]`` (eV); ``InputError`` names a missing gas."""
    missing = sorted(set(terms) - set(gas_energies))
    if missing:
        raise InputError(f"no gas-phase energy for {missing}; have {sorted(gas_energies)}")
    return float(sum(c * gas_energies[g] for g, c in terms.items()))


def adsorption_energy(energy: float, slab_energy: float, gas_energies: Mapping[str, float],
                      terms: Mapping[str, float]) -> float:
    """``energy - slab_energy - sum_g terms[g] * gas_energies[g]`` (eV): ``energy`` of slab +
    adsorbate, ``slab_energy`` of the clean slab, ``terms`` from :func:`reference_terms`."""
    return energy - slab_energy - reference_energy(gas_energies, terms)
