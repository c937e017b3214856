"""tdn_calc.evaluation: the site classifier on ASE-built slabs, the reference schemes with
hand-computed numbers, the landing metric, anomalies and shared error statistics."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, bcc100, fcc100, fcc110, fcc111, hcp0001, molecule

from tdn_calc.datagen.catalysis.systems import adsorbate_template
from tdn_calc.errors import InputError
from tdn_calc.evaluation import (
    HYDRIDES,
    MOLECULES_O2_N2,
    SITE_NAMES,
    adsorption_energy,
    anomalies,
    canonical_site,
    classify_site,
    error_stats,
    get_scheme,
    landing,
    lateral_distances,
    metal_layers,
    reference_terms,
    surface_sites,
)

FACETS = {"fcc111": (fcc111, "Pt"), "hcp0001": (hcp0001, "Ru"), "fcc100": (fcc100, "Pt"),
          "bcc100": (bcc100, "Fe"), "fcc110": (fcc110, "Pt")}


def with_o(facet: str, site: str, *, size=(3, 3, 4), offset=(0, 0), height=1.5) -> Atoms:
    """``facet`` slab with one O placed by ASE at ``site`` (ASE's own site definitions)."""
    build, metal = FACETS[facet]
    slab = build(metal, size=size, vacuum=8.0)
    add_adsorbate(slab, "O", height, position=site, offset=offset)
    return slab


def o_site(atoms: Atoms, layers=None) -> str:
    return classify_site(atoms, len(atoms) - 1, atoms.numbers != 8, layers)[0]


def ase_sites(facet: str) -> list[str]:
    build, metal = FACETS[facet]
    return list(build(metal, size=(1, 1, 2), vacuum=5.0).info["adsorbate_info"]["sites"])


@pytest.mark.parametrize("facet", FACETS)
@pytest.mark.parametrize("size", [(3, 3, 4), (2, 2, 3), (4, 3, 4)])
def test_every_ase_site_reads_back_with_its_name(facet, size):
    for site in ase_sites(facet):
        assert site in SITE_NAMES
        for offset in ((0, 0), (1, 1)):
            atoms = with_o(facet, site, size=size, offset=offset)
            name, height = classify_site(atoms, len(atoms) - 1, atoms.numbers != 8)
            assert name == site, (facet, size, offset)
            assert height == pytest.approx(1.5, abs=1e-9)


@pytest.mark.parametrize("site", ["ontop", "bridge", "fcc", "hcp"])
def test_site_survives_jitter_rattle_and_other_metals(site, rng):
    for size, metal in (((2, 2, 3), "Cu"), ((4, 3, 4), "Au"), ((3, 3, 4), "Pt")):
        atoms = fcc111(metal, size=size, vacuum=8.0)
        add_adsorbate(atoms, "O", 1.5, position=site)
        atoms.positions[-1, :2] += rng.uniform(-0.2, 0.2, 2)
        atoms.positions[:-1] += rng.normal(0.0, 0.05, (len(atoms) - 1, 3))
        assert o_site(atoms) == site


def test_site_counts_per_cell_and_fcc_hcp_differ_by_the_second_layer():
    atoms = with_o("fcc111", "fcc")
    names = [s.name for s in surface_sites(atoms, atoms.numbers != 8)]
    assert {n: names.count(n) for n in set(names)} == {"ontop": 9, "bridge": 27, "fcc": 9,
                                                       "hcp": 9}
    names = [s.name for s in surface_sites(with_o("fcc110", "hollow"),
                                           np.r_[np.ones(36, bool), False])]
    assert sorted(set(names)) == ["hollow", "longbridge", "ontop", "shortbridge"]
    # without the second layer the third, under the fcc hollows, becomes the second
    without = atoms[atoms.get_tags() != 2]
    assert o_site(without) == "hcp"


def test_layers_of_the_start_keep_a_distorted_surface_readable():
    start = with_o("fcc111", "fcc")
    mask = start.numbers != 8
    bent = start.copy()
    top = np.flatnonzero(bent.get_tags() == 1)
    near = top[np.argsort(lateral_distances(bent.positions[-1, :2], bent.positions[top, :2],
                                            bent.cell.array))[:3]]
    bent.positions[near, 2] -= 0.8  # the hollow's atoms pushed into the slab
    bent.positions[-1, 2] -= 0.8
    assert metal_layers(bent, mask).max() == 4  # the top layer has split in two
    assert o_site(bent, metal_layers(start, mask)) == "fcc"


def test_molecule_far_above_is_desorbed_and_one_layer_is_refused():
    slab = fcc111("Pt", size=(3, 3, 4), vacuum=10.0)
    add_adsorbate(slab, molecule("CO"), 5.0, position="fcc")
    n = 36
    assert classify_site(slab, n, np.arange(len(slab)) < n) == ("desorbed", pytest.approx(5.0))
    single = fcc111("Pt", size=(2, 2, 1), vacuum=8.0)
    with pytest.raises(InputError, match="two metal layers"):
        surface_sites(single, np.ones(len(single), dtype=bool))


def test_site_aliases():
    assert canonical_site("top") == "ontop" and canonical_site("hollow-hcp") == "hcp"
    assert canonical_site("FCC") == "fcc"
    with pytest.raises(InputError, match="ontop"):
        canonical_site("threefold")


def test_lateral_distances_use_the_minimum_image():
    cell = np.diag([3.0, 4.0, 20.0])
    d = lateral_distances(np.array([0.1, 0.1]), np.array([[2.9, 3.9], [1.5, 0.1]]), cell)
    np.testing.assert_allclose(d, [np.hypot(0.2, 0.2), 1.4])


# ---------------------------------------------------------------- references
GAS = {"H2": -6.0, "O2": -8.0, "N2": -16.0, "CH4": -24.0, "CO": -14.0, "H2O": -14.2,
       "NH3": -19.5}


def test_molecules_o2_n2_scheme_by_hand():
    terms = reference_terms(adsorbate_template("OH"))  # default scheme: OH = 1/2 O2 + 1/2 H2
    assert terms == {"O2": 0.5, "H2": 0.5}
    assert adsorption_energy(-110.0, -100.0, GAS, terms) == pytest.approx(-10.0 + 7.0)
    assert reference_terms(adsorbate_template("CO")) == {"CO": 1.0}
    assert reference_terms(molecule("H2O")) == {"H2O": 1.0}
    assert reference_terms(adsorbate_template("CH3")) == pytest.approx({"CH4": 1.0, "H2": -0.5})
    c = reference_terms(adsorbate_template("C"), "molecules-O2-N2")
    assert adsorption_energy(-107.0, -100.0, GAS, c) == pytest.approx(-7.0 + 24.0 - 12.0)
    with pytest.raises(InputError, match="N2"):
        adsorption_energy(-1.0, 0.0, {"H2": -6.0}, {"N2": 0.5})
    with pytest.raises(InputError, match="Pt"):
        reference_terms(Atoms("Pt"))


def test_hydride_scheme_by_hand():
    # mu_H = 1/2 H2 = -3, mu_O = H2O - H2 = -8.2, mu_N = NH3 - 3/2 H2 = -10.5,
    # mu_C = CH4 - 2 H2 = -12
    def mu(formula: str) -> float:
        return adsorption_energy(0.0, 0.0, GAS, reference_terms(Atoms(formula), HYDRIDES))

    assert -mu("H") == pytest.approx(-3.0) and -mu("O") == pytest.approx(-8.2)
    assert -mu("N") == pytest.approx(-10.5) and -mu("C") == pytest.approx(-12.0)
    assert -mu("CO") == pytest.approx(-20.2)  # no molecule is its own reference here
    assert reference_terms(Atoms("CO"), HYDRIDES) == pytest.approx(
        {"CH4": 1.0, "H2O": 1.0, "H2": -3.0})
    assert reference_terms(Atoms("H2O"), HYDRIDES) == {"H2O": 1.0}
    assert get_scheme("H2-H2O-NH3-CH4") is HYDRIDES and get_scheme(MOLECULES_O2_N2).name
    with pytest.raises(InputError, match="molecules-O2-N2"):
        get_scheme("OC20")


def test_emt_adsorption_energy_of_o_on_cu_by_hand():
    from ase.calculators.emt import EMT

    def energy(atoms: Atoms) -> float:
        atoms.calc = EMT()
        return float(atoms.get_potential_energy())

    slab = fcc111("Cu", size=(2, 2, 3), vacuum=8.0)
    ads = slab.copy()
    add_adsorbate(ads, "O", 1.2, "fcc")
    gas = {"O2": energy(molecule("O2"))}
    e = adsorption_energy(energy(ads), energy(slab), gas, reference_terms(Atoms("O")))
    assert e == pytest.approx(energy(ads) - energy(slab) - 0.5 * gas["O2"])


# ---------------------------------------------------------------- landing, anomalies
def test_landing():
    same = landing(-10.02, -10.0, "fcc", "fcc")
    assert same.same_minimum and same.at_or_below and same.same_site_or_lower
    higher = landing(-9.9, -10.0, "fcc", "fcc")
    assert not higher.same_minimum and not higher.at_or_below
    lower = landing(-10.2, -10.0, "hcp", "fcc")
    assert not lower.same_minimum and lower.at_or_below and lower.same_site_or_lower
    assert not landing(-10.0, -10.0, "fcc", "fcc", bonds_kept=False).same_minimum
    assert landing(-9.96, -10.0, "fcc", "fcc", tolerance=0.01).delta == pytest.approx(0.04)


def test_anomalies():
    start = fcc111("Pt", size=(2, 2, 3), vacuum=10.0)
    add_adsorbate(start, Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.15]]), 1.9, "ontop")
    co = [len(start) - 2, len(start) - 1]
    assert anomalies(start, start, co) == []
    up = start.copy()
    up.positions[co, 2] += 4.0
    assert anomalies(start, up, co) == ["desorbed"]
    broken = start.copy()
    broken.positions[co[1], 2] += 1.5
    assert "dissociated" in anomalies(start, broken, co)
    moved = start.copy()
    moved.positions[0, 2] -= 3.0
    assert "surface_changed" in anomalies(start, moved, co)
    below = start.copy()
    below.positions[co, 2] -= 3.5
    assert "intercalated" in anomalies(start, below, co)


def test_error_stats():
    s = error_stats([0.01, -0.03, 0.2, float("nan")], 0.05)
    assert s["n"] == 3 and s["median_abs"] == pytest.approx(0.03)
    assert s["max_abs"] == pytest.approx(0.2) and s["fraction_within"] == pytest.approx(2 / 3)
    assert s["mean_signed"] == pytest.approx(0.06) and error_stats([], 0.1) == {"n": 0}
