"""Adsorbate displacement frames (tdn data build displaced), with ASE's EMT as the teacher."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111, molecule
from ase.calculators.emt import EMT
from test_data_catalysis import TINY

from tdn_calc.data.dataset import H5Dataset
from tdn_calc.data.frames import FrameKind
from tdn_calc.data.split import extend_split, make_split, system_of
from tdn_calc.datagen.catalysis.build import build_catalysis, read_metadata
from tdn_calc.datagen.catalysis.displaced import (
    DISPLACED_SUFFIX,
    DisplaceSettings,
    build_displaced,
    contact_ratio,
    displace_adsorbate,
    displaced_suffix,
)
from tdn_calc.datagen.catalysis.systems import CatalysisConfig
from tdn_calc.errors import InputError


def _co_on_pt() -> tuple:
    slab = fcc111("Pt", size=(3, 3, 3), vacuum=8.0)
    add_adsorbate(slab, molecule("CO")[::-1], 1.9, "fcc")  # C down
    return slab, np.array([s != "Pt" for s in slab.get_chemical_symbols()])


def test_displacement_is_rigid_and_keeps_its_distance_from_the_slab():
    slab, ads = _co_on_pt()
    rng = np.random.default_rng(0)
    settings = DisplaceSettings(height=(-2.0, 0.5))  # pushes hard: the floor must hold
    moved = [displace_adsorbate(slab, ads, rng, settings) for _ in range(40)]
    for atoms in moved:
        assert np.allclose(atoms.positions[~ads], slab.positions[~ads])  # slab untouched
        d = np.linalg.norm(atoms.positions[-1] - atoms.positions[-2])
        assert d == pytest.approx(slab.get_distance(-1, -2))  # CO stays a rigid body
        assert contact_ratio(atoms, ads) >= settings.min_contact - 1e-9
    lateral = [np.linalg.norm(a.positions[-2, :2] - slab.positions[-2, :2]) for a in moved]
    assert max(lateral) > 1.0 and min(lateral) < 1.0  # across sites, not only near the start
    bond = slab.get_distance(-1, -2)
    tilts = [np.degrees(np.arccos(min(1.0, abs(a.positions[-1, 2] - a.positions[-2, 2]) / bond)))
             for a in moved]
    assert 5.0 < max(tilts) <= settings.max_tilt + 1.0
    with pytest.raises(InputError, match="adsorbate and substrate"):
        displace_adsorbate(slab, np.zeros(len(slab), bool), rng, settings)
    with pytest.raises(InputError, match="min_contact"):
        DisplaceSettings(min_contact=0.0)


def test_system_of_maps_a_displaced_trajectory_to_its_source_system():
    assert system_of("Pt111/CO/fcc/r3" + DISPLACED_SUFFIX) == "Pt111/CO/fcc"
    old = make_split(["Pt111/CO/fcc/r0", "Cu111/H/top/r0", "Ni111/O/hcp/r0", "gas/CO/r0"],
                     (0.5, 0.25, 0.25), seed=1, grouping="system")
    ext = extend_split(old, [*old.train, *old.val, *old.test,
                             *(i + DISPLACED_SUFFIX for i in old.test)])
    assert set(ext.test) == set(old.test) | {i + DISPLACED_SUFFIX for i in old.test}


def test_build_displaced_labels_resumes_and_is_deterministic(tmp_path):
    config = CatalysisConfig(**TINY)
    for name in ("a", "b"):
        build_catalysis(tmp_path / name, teacher="emt", config=config, progress=False)
    meta = read_metadata(tmp_path / "a")
    sources = sorted(k for k, r in meta.items() if r["kind"] == "slab" and r["adsorbate"])
    settings = DisplaceSettings(per_trajectory=2)
    first = build_displaced(tmp_path / "a", teacher="emt", settings=settings, limit=2,
                            progress=False)
    assert (first.sources, first.written, first.frames) == (2, 2, 4)
    rest = build_displaced(tmp_path / "a", teacher="emt", settings=settings, progress=False)
    assert (rest.already_done, rest.written) == (2, len(sources) - 2)
    again = build_displaced(tmp_path / "b", teacher="emt", settings=settings, progress=False)
    assert again.written == len(sources)

    ds_a, ds_b = H5Dataset(tmp_path / "a"), H5Dataset(tmp_path / "b")
    assert {i for i in ds_a.identifiers if i.endswith(DISPLACED_SUFFIX)} == {
        s + DISPLACED_SUFFIX for s in sources}
    assert set(read_metadata(tmp_path / "a")) == set(meta)  # the adsorption benchmark's list
    calc = EMT()
    for ident in sources:
        frames_a = ds_a.frames_of([ident + DISPLACED_SUFFIX])
        frames_b = ds_b.frames_of([ident + DISPLACED_SUFFIX])
        assert len(frames_a) == 2
        final = ds_a[ds_a.frames_of([ident])[-1 - config.n_rattle]]
        for i, j in zip(frames_a, frames_b, strict=True):
            item = ds_a[int(i)]
            assert item["kind"] == FrameKind.DISPLACED
            assert np.array_equal(item["positions"], ds_b[int(j)]["positions"])  # seeded
            metal = ~np.isin(item["atomic_numbers"], [1, 6, 7, 8])
            assert np.allclose(item["positions"][metal], final["positions"][metal])
            atoms = _atoms(item)
            atoms.calc = calc
            assert atoms.get_potential_energy() == pytest.approx(item["energy"], abs=1e-6)
            assert np.allclose(atoms.get_forces(), item["forces"], atol=1e-6)


def _atoms(item):
    from ase import Atoms

    return Atoms(numbers=item["atomic_numbers"], positions=item["positions"],
                 cell=item["cell"], pbc=item["pbc"])


def test_cli_build_displaced_needs_a_catalysis_data_set(tmp_path):
    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["data", "build", "displaced", str(tmp_path / "empty"),
                                    "--teacher", "emt", "--no-progress"])
    assert res.exit_code == 1 and "adsorbate" in res.output


def test_a_named_variant_is_a_further_pass_over_the_same_sources(tmp_path):
    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    build_catalysis(tmp_path, teacher="emt", config=CatalysisConfig(**TINY), progress=False)
    build_displaced(tmp_path, teacher="emt", settings=DisplaceSettings(), limit=2,
                    progress=False)
    args = ["data", "build", "displaced", str(tmp_path), "--teacher", "emt", "--no-progress",
            "--limit", "2", "--variant", "b", "--height", "-0.1", "0.1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and '"written": 0' in again.output  # resumes: nothing new

    ds = H5Dataset(tmp_path)
    first = sorted(i for i in ds.identifiers if i.endswith(DISPLACED_SUFFIX))
    second = sorted(i for i in ds.identifiers if i.endswith(displaced_suffix("b")))
    assert len(first) == len(second) == 2 and displaced_suffix("b") == ":displaced_b"
    assert [system_of(i) for i in first] == [system_of(i) for i in second]
    for a, b in zip(first, second, strict=True):  # same source, other poses
        pa, pb = (ds[int(ds.frames_of([i])[0])]["positions"] for i in (a, b))
        assert not np.allclose(pa, pb)
    with pytest.raises(InputError, match="variant"):
        displaced_suffix("B2")
    with pytest.raises(InputError, match="variant"):
        displaced_suffix("")
    for height in [(0.5, -0.5), (float("nan"), 0.1)]:
        with pytest.raises(InputError, match="height"):
            DisplaceSettings(height=height)
    bad = CliRunner().invoke(main, [*args[:-5], "--variant", "2nd"])
    assert bad.exit_code == 1 and "variant" in bad.output
