"""benchmarks/uncertainty_study.py: its two start sets, the per-model cache folders and the
candidates that cannot apply to a model (pure parts; no model is run)."""

from __future__ import annotations

import numpy as np
import pytest
from uncertainty_study import (
    CACHE,
    NEW_FRAGMENTS,
    NEW_MOLECULES,
    NOVEL_GROUPS,
    OUT,
    STACKED,
    START_SETS,
    cache_dir,
    cache_path,
    candidates,
    check_starts,
    default_out,
    new_adsorbate,
)

from tdn_calc.datagen.catalysis.adsorbates import ADSORBATE_NAMES
from tdn_calc.datagen.catalysis.surfaces import ALL_FACETS, METALS
from tdn_calc.errors import InputError


def test_old_starts_keep_their_cached_labels():
    starts = START_SETS["old"]()
    assert check_starts(starts, NOVEL_GROUPS["old"]) == {
        "in_domain": 20, "new_adsorbate": 10, "facet": 8, "six_layer": 4, "strained": 4}
    assert all(cache_path(s["label"], cache_dir("tdn-catalysis-20261206-2", "old")).exists()
               for s in starts)
    assert default_out("tdn-catalysis-20261206-2", "old") == OUT


def test_coverage2_starts_cover_the_recipe_and_leave_it_where_meant():
    starts = START_SETS["coverage2"]()
    counts = check_starts(starts, NOVEL_GROUPS["coverage2"])
    assert counts == {"in_domain": 24, "new_adsorbate": 12, "thick": 6, "strained": 6,
                      "subsurface": 6, "other_facet": 4}
    inside = [s for s in starts if s["group"] == "in_domain"]
    heads = [s["label"].split("/")[0] for s in inside]
    assert {m for m in METALS if any(h.startswith(m) for h in heads)} == set(METALS)
    assert {f for f in ALL_FACETS if any(f"{f}x" in h for h in heads)} == set(ALL_FACETS)
    assert {int(h.split("x")[1].split("-")[0]) for h in heads} == {3, 4, 5, 6, 7}
    for s in starts:
        if s["group"] == "new_adsorbate":
            n_metal = sum(z > 10 for z in s["atoms"].numbers)
            assert set(s["atoms"].get_chemical_symbols()[n_metal:]) <= set("HCNO")
        if s["group"] == "subsurface":
            top = max(s["atoms"].positions[:-1, 2])
            assert s["atoms"].positions[-1, 2] < top - 0.5, s["label"]
    assert cache_dir("x", "coverage2") == CACHE / "x" / "coverage2"


@pytest.mark.parametrize("name", [*NEW_MOLECULES, *NEW_FRAGMENTS, *STACKED])
def test_new_adsorbates_lie_outside_the_library_anchor_lowest(name):
    mol = new_adsorbate(name)
    assert name not in ADSORBATE_NAMES
    assert np.allclose(mol.positions[0], 0.0) and mol.positions[1:, 2].min() > -1e-6


def test_check_starts_rejects_close_atoms_and_library_names_in_novel_groups():
    start = next(s for s in START_SETS["coverage2"]() if s["group"] == "in_domain")
    with pytest.raises(InputError, match="library"):
        check_starts([{**start, "group": "new_adsorbate"}])
    close = start["atoms"].copy()
    close.positions[-1] = close.positions[0] + [0.3, 0, 0]
    with pytest.raises(InputError, match="apart"):
        check_starts([{**start, "atoms": close}])


def test_candidates_that_cannot_apply_are_skipped_with_their_reason():
    made, skipped = candidates(None, None, "no training data")
    assert made == [] and len(skipped) == 7
    reasons = {c["name"]: c["skipped"] for c in skipped}
    assert "Mahalanobis summary" in reasons["(a) Mahalanobis, last-layer invariants (current)"]
    assert reasons["(c) LLPR per structure"] == "no training data"
