"""Alloy surfaces of a screening campaign (``surfaces[k].alloy``): the spec, the slab (the
catalysis data generator's top-layer substitution) and a tiny EMT screen on Pt(111)-Ni25."""

from __future__ import annotations

import csv

import ase.db
import numpy as np
import pytest
from campaign_helpers import tiny_spec

from tdn_calc.campaigns import (
    SpecError,
    parse_spec,
    run_campaign,
    summarize,
    table,
    write_placements_csv,
    write_summary_csv,
)
from tdn_calc.campaigns.placements import build_slab, distinct_sites, enumerate_placements
from tdn_calc.datagen.catalysis.surfaces import build_surface


def _alloy_spec(alloy, **surface):
    spec = tiny_spec()
    spec["surfaces"][0].update(alloy=alloy, **surface)
    return spec


@pytest.mark.parametrize(
    ("alloy", "surface", "message"),
    [
        ({"element": "Xx", "kind": "A3B"}, {}, "surfaces[0].alloy.element: 'Xx'"),
        ({"element": "Pt", "kind": "A3B"}, {}, "surfaces[0].alloy.element: 'Pt' is the host"),
        ({"element": "Ni", "kind": "AB3"}, {}, "surfaces[0].alloy.kind: 'AB3'"),
        ({"element": "Ni"}, {}, "surfaces[0].alloy.kind: None"),
        ({"element": "Ni", "kind": "SA", "share": 5}, {}, "surfaces[0].alloy.share: unknown"),
        ("Ni", {}, "surfaces[0].alloy: must be a mapping"),
        ({"element": "Ni", "kind": "A3B"}, {"size": "3x3"}, "surfaces[0].alloy.kind: A3B"),
        ({"element": "Ni", "kind": "AB"}, {"size": "2x3"}, "surfaces[0].alloy.kind: AB"),
        ({"element": "Ni", "kind": "AB"}, {"facet": "211", "size": "3x2"}, "use SA"),
    ],
)
def test_alloy_spec_errors_name_the_key(alloy, surface, message):
    with pytest.raises(SpecError) as err:
        parse_spec(_alloy_spec(alloy, **surface))
    assert message in str(err.value)


def test_alloy_spec_label_and_hash():
    plain = parse_spec(tiny_spec())
    a3b = parse_spec(_alloy_spec({"element": "Ni", "kind": "A3B"}))
    sa = parse_spec(_alloy_spec({"element": "Ni", "kind": "SA"}))
    assert plain.surfaces[0].alloy is None and a3b.surfaces[0].alloy == ("Ni", "A3B")
    assert [s.surfaces[0].label for s in (plain, a3b, sa)] == [
        "Pt(111)", "Pt(111)-Ni25", "Pt(111)-Ni1"]
    assert a3b.surfaces[0].elements == {"Pt", "Ni"}
    assert len({plain.hash(), a3b.hash(), sa.hash()}) == 3
    assert plain.hash() == "c0ce2a5715367a21"  # specs without alloys keep their hash
    both = tiny_spec(surfaces=[tiny_spec()["surfaces"][0],
                               {**tiny_spec()["surfaces"][0], "alloy": {"element": "Cu",
                                                                        "kind": "AB"}}])
    assert [s.label for s in parse_spec(both).surfaces] == ["Pt(111)", "Pt(111)-Cu50"]


@pytest.mark.parametrize(
    ("kind", "size", "facet", "lattice", "n"),
    [("A3B", "2x2", "111", 3.92, 1), ("A3B", "4x4", "111", 3.92, 4), ("AB", "2x2", "111", 3.92, 2),
     ("AB", "4x2", "100", 3.92, 4), ("SA", "3x3", "111", 3.92, 1), ("SA", "3x3", "211", 3.92, 1),
     ("A3B", "2x2", "0001", [2.71, 4.28], 1)],
)
def test_alloy_slab_substitutes_the_top_layer(kind, size, facet, lattice, n):
    host = "Ru" if facet == "0001" else "Pt"
    surface = {"element": host, "facet": facet, "size": size, "lattice_constant": lattice}
    spec = parse_spec(_alloy_spec({"element": "Ni", "kind": kind}, **surface))
    s = spec.surfaces[0]
    lat = tuple(lattice) if isinstance(lattice, list) else (lattice,)
    slab = build_slab(s, lat)
    plain = build_surface(host, facet, (*s.size, s.layers), lat, fixed_layers=s.fixed_layers,
                          vacuum=s.vacuum)
    symbols = np.array(slab.get_chemical_symbols())
    assert np.array_equal(slab.positions, plain.atoms.positions)  # the host's lattice
    assert np.count_nonzero(symbols == "Ni") == n
    assert set(np.flatnonzero(symbols == "Ni")) <= set(np.flatnonzero(plain.layer == 0))
    assert slab.constraints[0].get_indices().tolist() == \
        plain.atoms.constraints[0].get_indices().tolist()


def test_sites_and_placements_on_an_alloy_slab():
    spec = parse_spec({**_alloy_spec({"element": "Ni", "kind": "A3B"}), "adsorbates": ["H"]})
    slab = build_slab(spec.surfaces[0], (3.92,))
    sites = distinct_sites(slab)  # lower symmetry than Pt(111): more distinct sites
    assert len(sites) > 4 and {s.name.split("_")[0] for s in sites} == {
        "ontop", "bridge", "fcc", "hcp"}
    placements = enumerate_placements(spec, spec.surfaces[0], slab, sites)
    assert len(placements) == len(sites) + 1
    assert all(p.surface == "Pt(111)-Ni25" and p.key.startswith("Pt(111)-Ni25|H|")
               for p in placements)


def test_screen_on_an_alloy_slab_names_the_rows(tmp_path):
    data = _alloy_spec({"element": "Ni", "kind": "SA"})
    data.update(adsorbates=["H"], placement={"sites": False, "random": 2, "seed": 0})
    spec = parse_spec(data)
    db_path = tmp_path / "c.db"
    run_campaign(spec, db_path, progress=False)
    db = ase.db.connect(str(db_path))
    slab = next(db.select(kind="slab"))
    assert slab.key == "slab|Pt(111)-Ni1" and slab.surface == "Pt(111)-Ni1"
    assert slab.lattice_a == 3.92 and slab.toatoms().get_chemical_formula() == "NiPt11"
    rows = list(db.select(kind="placement"))
    assert len(rows) == 2 and all(r.surface == "Pt(111)-Ni1" for r in rows)
    assert all(r.key.startswith("Pt(111)-Ni1|H|random-") for r in rows)
    summaries = summarize(db)
    assert [(s.surface, s.adsorbate) for s in summaries] == [("Pt(111)-Ni1", "H")]
    assert "Pt(111)-Ni1" in table(summaries)
    write_summary_csv(summaries, tmp_path / "s.csv")
    write_placements_csv(db, tmp_path / "p.csv")
    for name, count in (("s.csv", 1), ("p.csv", 2)):
        with open(tmp_path / name) as fh:
            lines = list(csv.DictReader(fh))
        assert len(lines) == count and {x["surface"] for x in lines} == {"Pt(111)-Ni1"}
