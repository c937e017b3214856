"""The coverage2 catalysis recipe: facet builders, adsorbate placement, interleaved
enumeration and a tiny EMT build that resumes."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
from ase.calculators.emt import EMT

from tdn_calc.data.split import system_of
from tdn_calc.datagen.catalysis.adsorbates import (
    ADSORBATES,
    GAS_SPECIES,
    get_adsorbate,
    min_metal_distance,
)
from tdn_calc.datagen.catalysis.build import _check_recipe, build_catalysis, read_metadata
from tdn_calc.datagen.catalysis.coverage import (
    STRAINED_ADSORBATES,
    CoverageConfig,
    CoverageSpec,
    build_coverage_system,
    coverage_counts,
    enumerate_coverage,
    stratum,
)
from tdn_calc.datagen.catalysis.surfaces import (
    ALL_FACETS,
    LAYERS,
    SITES,
    SURFACE_CELL,
    build_surface,
    fit_hcp_lattice,
)
from tdn_calc.datagen.catalysis.systems import CatalysisConfig, enumerate_systems
from tdn_calc.errors import ConfigError, InputError
from tdn_calc.slab import fixed_mask

LATTICE = {"Pt": (3.92,), "Cu": (3.59,), "Ru": (2.71, 4.28), "Ni": (3.52,)}


def _metal(facet: str) -> str:
    return "Ru" if facet == "0001" else "Pt"


@pytest.mark.parametrize("facet", ALL_FACETS)
def test_facet_layers_fixed_mask_and_sites(facet):
    metal = _metal(facet)
    nx, ny = SURFACE_CELL[facet]
    for nz in (LAYERS[facet][0], LAYERS[facet][-1]):
        for fixed in (0, nz // 2):
            surf = build_surface(metal, facet, (nx, ny, nz), LATTICE[metal], fixed_layers=fixed)
            atoms = surf.atoms
            per_layer = len(atoms) // nz
            assert np.bincount(surf.layer).tolist() == [per_layer] * nz
            mask = fixed_mask(atoms)
            assert mask.tolist() == (surf.layer >= nz - fixed).tolist()
            assert mask.sum() == fixed * per_layer
            # layers are ordered top (0) to bottom by height
            z = atoms.positions[:, 2]
            for k in range(nz - 1):
                assert z[surf.layer == k].min() > z[surf.layer == k + 1].min()
            assert atoms.pbc.tolist() == [True, True, False] and len(atoms) <= 100
    assert set(surf.sites) == set(SITES[facet])
    with pytest.raises(InputError):
        build_surface("Ru", "111", (3, 3, 4), LATTICE["Ru"], fixed_layers=2)


@pytest.mark.parametrize("facet", ALL_FACETS)
def test_every_adsorbate_binds_through_its_anchor(facet):
    metal = _metal(facet)
    config = CoverageConfig(perturb=0.0)  # HCOO's two O start at one height
    for k, name in enumerate(ADSORBATES):
        site = SITES[facet][k % len(SITES[facet])]
        spec = CoverageSpec(f"{metal}{facet}-t/{name}/{site}/r0", "slab", metal, facet,
                            (*SURFACE_CELL[facet], 4), 2, adsorbate=name, site=site)
        atoms = build_coverage_system(spec, LATTICE, config)
        n_metal = len(atoms) - len(get_adsorbate(name).template())
        ads = atoms[n_metal:]
        assert ads.get_chemical_symbols()[0] == get_adsorbate(name).binding_element
        assert ads.positions[0, 2] <= ads.positions[1:, 2].min(initial=np.inf) + 1e-6, name
        d = min_metal_distance(atoms, n_metal)
        # the anchor starts near its bond length; no other atom is that close to the metal
        assert -0.05 < d[0] - get_adsorbate(name).bond < 0.7, (name, site, d[0])
        assert (d[1:] >= 1.3).all(), (name, site, d)
        assert not fixed_mask(atoms)[n_metal:].any()


def test_coadsorbed_pair_and_alloys_are_apart_and_substituted():
    config = CoverageConfig(metals=("Pt", "Ni", "Ru"))
    specs = enumerate_coverage(config)
    pair = next(s for s in specs if "+" in s.adsorbate and s.facet == "111")
    atoms = build_coverage_system(pair, LATTICE, config)
    a, b = pair.adsorbate.split("+")
    n_metal = len(atoms) - len(get_adsorbate(a).template()) - len(get_adsorbate(b).template())
    second = n_metal + len(get_adsorbate(a).template())
    gap = atoms.get_distances(n_metal, list(range(second, len(atoms))), mic=True)
    assert gap.min() > 2.0
    alloys = [s for s in specs if s.alloy and s.replica == 0]
    assert {s.alloy for s in alloys} == {"A3B", "AB", "SA"}
    for s in alloys:
        atoms = build_coverage_system(s, LATTICE, config)
        n_dopant = atoms.get_chemical_symbols().count(s.dopant)
        expect = {"A3B": 1, "AB": 2, "SA": 1}[s.alloy]
        assert n_dopant == expect, (s.label, n_dopant)


def test_enumeration_is_deterministic_interleaved_and_unique():
    config = CoverageConfig(replicas=2)
    specs = config.enumerate()
    assert [s.label for s in specs] == [s.label for s in CoverageConfig(replicas=2).enumerate()]
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels)
    assert sorted(labels) == sorted(s.label for s in enumerate_coverage(config))
    old = {s.label for s in enumerate_systems(CatalysisConfig())}
    old |= {s.label for s in enumerate_systems(CatalysisConfig(slab_size=(3, 3, 6),
                                                               slab_tag="-3x3x6"))}
    assert not old & set(labels)
    # a prefix as long as the number of strata holds every stratum once
    strata = {stratum(s) for s in specs}
    head = specs[:len(strata)]
    assert {stratum(s) for s in head} == strata
    metals = {s.metal for s in head if s.metal}
    assert metals == set(config.metals)
    families = {stratum(s)[2].split("-")[0] for s in specs[:60]}
    assert {"H", "O", "C", "CO", "CO2", "N", "NO", "clean", "coads", "bulk", "gas",
            "alloy"} <= families
    adsorbates = {s.adsorbate for s in specs[:len(strata)] if s.kind == "slab"}
    assert set(ADSORBATES) <= adsorbates  # the first pass holds every adsorbate
    facets = [stratum(s)[1] for s in specs[:60]]
    assert {f.split("-")[0] for f in facets} == {*ALL_FACETS, "alloy", "bulk", "gas"}
    assert {f for f in facets if "-" in f} == {f"{facet}-s{x}" for facet in ("111", "0001")
                                               for x in ("-3", "-1.5", "+2")}
    # round 0 of every stratum comes before any round 1 of it
    first_r1 = {}
    for i, s in enumerate(specs):
        if s.replica == 1:
            first_r1.setdefault(stratum(s), i)
    for i, s in enumerate(specs):
        if s.replica == 0:
            assert i < first_r1.get(stratum(s), len(specs))
    assert len({system_of(x) for x in labels if x.endswith("/r0")}) == len(specs) // 2
    assert all(x.rsplit("/", 1)[1] in ("r0", "r1") for x in labels)
    assert set(GAS_SPECIES) == {s.adsorbate for s in specs if s.kind == "gas"}
    with pytest.raises(ConfigError):
        CoverageConfig(metals=("Fe",))


def test_strained_slabs_scale_the_cell_and_have_their_clean_slab():
    config = CoverageConfig(metals=("Pt", "Ru"), replicas=2)
    specs = enumerate_coverage(config)
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels)
    strained = [s for s in specs if s.family == "strained"]
    n_per = 1 + config.strained_adsorbates
    assert len(strained) == 2 * 2 * len(config.slab_strains) * n_per
    assert {(s.metal, s.facet) for s in strained} == {("Pt", "111"), ("Ru", "0001")}
    assert {s.strain for s in strained} == set(config.slab_strains)
    assert {s.adsorbate for s in strained} - {""} <= set(STRAINED_ADSORBATES)
    assert coverage_counts(specs)["slab_strain"] == {"s-3": 16, "s-1.5": 16, "s+2": 16}
    tag = re.compile(r"^[A-Z][a-z]?(111|0001)-\d+x\d+x\d+f\d+-s[+-]\d+(\.\d+)?/")
    for s in strained:
        assert tag.match(s.label) and re.search(r"/r[01]$", s.label), s.label
        assert system_of(s.label) == s.label.rsplit("/", 1)[0]
        assert re.search("^[A-Z][a-z]?(111|100|110|211|0001)-", s.label)  # configs' pattern
        assert ("/clean/" in s.label) == (not s.adsorbate)
        if s.adsorbate:  # the clean slab of the same surface, strain and round
            clean = [c for c in strained if not c.adsorbate and c.replica == s.replica
                     and (c.metal, c.facet, c.size, c.fixed_layers, c.strain)
                     == (s.metal, s.facet, s.size, s.fixed_layers, s.strain)]
            assert len(clean) == 1, s.label
    assert all(f"-s{round(s.strain * 100, 4):+g}/" in s.label for s in strained)
    unstrained = {s.label for s in specs if s.family != "strained"}
    assert unstrained == {s.label for s in enumerate_coverage(replace(config, slab_strains=()))}
    for spec in [s for s in strained if s.replica == 0 and not s.adsorbate]:
        atoms = build_coverage_system(spec, LATTICE, config)
        flat = build_coverage_system(replace(spec, strain=0.0), LATTICE, config)
        assert len(atoms) == len(flat)
        np.testing.assert_allclose(atoms.cell.array[:2, :2],
                                   (1 + spec.strain) * flat.cell.array[:2, :2], atol=1e-9)
        if spec.fixed_layers >= 2:  # fixed atoms are not perturbed: layer spacing scales too
            fixed = fixed_mask(atoms)
            z, z0 = (np.unique(a.positions[fixed, 2].round(6)) for a in (atoms, flat))
            np.testing.assert_allclose(np.diff(z), (1 + spec.strain) * np.diff(z0), atol=1e-6)
    pt = next(s for s in strained if s.adsorbate and s.metal == "Pt")
    atoms = build_coverage_system(pt, LATTICE, config)
    assert atoms.get_chemical_symbols()[-len(get_adsorbate(pt.adsorbate).template()):] == \
        get_adsorbate(pt.adsorbate).template().get_chemical_symbols()
    with pytest.raises(ConfigError):
        CoverageConfig(slab_strains=(0.02, 0.020000001))
    with pytest.raises(ConfigError):
        CoverageConfig(slab_strains=(0.5,))


def test_quarter_recipe_is_p2x2_cells_each_with_its_clean_slab():
    config = CoverageConfig(recipe="quarter", metals=("Pt", "Ru"), replicas=2)
    specs = config.enumerate()
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels) and "p(2x2)" in config.source
    # Pt: (111) and (100); Ru: (0001); clean plus every adsorbate alone, per round
    assert {(s.metal, s.facet) for s in specs} == {("Pt", "111"), ("Pt", "100"), ("Ru", "0001")}
    assert len(specs) == 2 * 3 * (1 + len(config.adsorbates))
    assert all(s.kind == "slab" and s.size[:2] == (2, 2) and "+" not in s.adsorbate
               and not s.alloy and s.strain == 0.0 for s in specs)
    assert all(re.match(r"^[A-Z][a-z]?(111|100|0001)-2x2x\d+f\d+/", s.label) for s in specs)
    # none of coverage2's labels: the two sets can be trained on together
    assert not set(labels) & {s.label for s in enumerate_coverage(replace(config,
                                                                          recipe="coverage2"))}
    for s in specs:
        if s.adsorbate:  # the clean slab of the same surface and round
            clean = [c for c in specs if not c.adsorbate and c.replica == s.replica
                     and (c.metal, c.facet, c.size, c.fixed_layers)
                     == (s.metal, s.facet, s.size, s.fixed_layers)]
            assert len(clean) == 1, s.label
    spec = next(s for s in specs if s.adsorbate == "O" and s.metal == "Pt" and s.facet == "111")
    atoms = build_coverage_system(spec, LATTICE, config)
    assert len(atoms) == 4 * spec.size[2] + 1 and atoms.get_chemical_symbols()[-1] == "O"


def test_strained_slabs_only_add_systems_and_keep_the_old_order(tmp_path):
    """A data set built before the strained slabs resumes: its labels are all still planned,
    in the same order among themselves, and its stored settings still match."""
    config = CoverageConfig()
    old = [s.label for s in replace(config, slab_strains=()).enumerate()]
    new = [s.label for s in config.enumerate()]
    assert len(set(new)) == len(new) and set(old) <= set(new)
    assert [x for x in new if x in set(old)] == old
    added = [s for s in config.enumerate() if s.label not in set(old)]
    assert added and all(s.family == "strained" for s in added)
    assert len(added) == config.replicas * len(config.metals) * len(config.slab_strains) * (
        1 + config.strained_adsorbates)
    # every stratum, the strained ones too, once before any twice
    strata = {stratum(s) for s in config.enumerate()}
    assert {stratum(s) for s in config.enumerate()[:len(strata)]} == strata
    path = tmp_path / "build_config.json"
    _check_recipe(path, "emt", replace(config, slab_strains=()))
    assert "slab_strains" not in json.loads(path.read_text())  # scope, not recipe
    _check_recipe(path, "emt", config)
    _check_recipe(path, "emt", replace(config, slab_strains=(0.01,), strained_adsorbates=1))


def test_hcp_lattice_fit_finds_the_minimum():
    a, c = fit_hcp_lattice("Cu", EMT())
    assert 2.45 < a < 2.65 and 1.5 < c / a < 1.75


def test_tiny_build_runs_and_resumes(tmp_path):
    config = CoverageConfig(metals=("Cu", "Pt"), adsorbates=("H", "CO", "OOH"),
                            gas_molecules=("H2", "CO"), replicas=1, max_steps=4, n_rattle=1,
                            bulk_strains=(0.02,), slab_strains=(-0.02,), strained_adsorbates=1)
    n = len(config.enumerate())
    first = build_catalysis(tmp_path, teacher="emt", config=config, limit=5, progress=False)
    assert first.written == 5 and not first.failures
    second = build_catalysis(tmp_path, teacher="emt", config=config, progress=False)
    assert second.already_done == 5 and second.written == n - 5 and not second.failures
    meta = read_metadata(tmp_path)
    assert len(meta) == n
    assert json.loads((tmp_path / "build_config.json").read_text())["recipe"] == "coverage2"
    strained = [m for m in meta.values() if m["family"] == "strained"]
    assert len(strained) == 2 * 2 and {m["strain"] for m in strained} == {-0.02}
    gas = next(m for m in meta.values() if m["kind"] == "gas" and m["adsorbate"] == "H2")
    assert gas["spin"] == 0 and gas["n_atoms"] == 2
    with pytest.raises(InputError):  # another recipe into the same directory
        build_catalysis(tmp_path, teacher="emt", progress=False,
                        config=CoverageConfig(**{**config.__dict__, "max_steps": 9}))
    with pytest.raises(InputError):  # the quarter recipe neither
        build_catalysis(tmp_path, teacher="emt", progress=False,
                        config=CoverageConfig(**{**config.__dict__, "recipe": "quarter"}))
    quarter = CoverageConfig(recipe="quarter", metals=("Pt",), adsorbates=("O",), replicas=1,
                             max_steps=4, n_rattle=1)
    done = build_catalysis(tmp_path / "quarter", teacher="emt", config=quarter, progress=False)
    assert done.written == 4 and not done.failures  # (111) and (100), clean and with O
    meta = read_metadata(tmp_path / "quarter")
    assert {m["n_atoms"] % 4 for m in meta.values()} == {0, 1}  # 2x2 layers (+ O)
