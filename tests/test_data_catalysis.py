"""Catalysis reference-data builder, with ASE's EMT as a fast stand-in teacher."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from tdn_calc.data.frames import FrameKind
from tdn_calc.data.split import system_of
from tdn_calc.datagen.catalysis.build import build_catalysis, read_metadata, relax_and_label
from tdn_calc.datagen.catalysis.systems import (
    ADSORBATES,
    SITES,
    CatalysisConfig,
    SystemSpec,
    build_system,
    enumerate_systems,
    fit_lattice_constant,
    load_lattice_constants,
)
from tdn_calc.errors import ConfigError, InputError
from tdn_calc.slab import fixed_mask
from tdn_calc.teachers import canonical_teacher_name, get_teacher, teacher_reference_method

LATTICE = {"Pt": 3.92, "Cu": 3.59}  # close to EMT's own minima; geometry tests only

TINY = dict(metals=("Cu",), adsorbates=("H", "CO"), sites=("top", "fcc"), bulk_strains=(0.02,),
            gas_molecules=("H2",), replicas=1, slab_size=(2, 2, 3), fixed_layers=1,
            bulk_repeat=1, max_steps=12, n_rattle=2)


def _spec(label: str, config: CatalysisConfig) -> SystemSpec:
    return next(s for s in enumerate_systems(config) if s.label == label)


# ---------------------------------------------------------------- enumeration
def test_default_enumeration_count_and_labels():
    config = CatalysisConfig()
    specs = enumerate_systems(config)
    base = 6 * (8 * 4 + 1) + 6 * 5 + 9
    assert len(specs) == config.replicas * base >= 1500
    labels = [s.label for s in specs]
    assert len(set(labels)) == len(labels)
    for label in ("Pt111/CO/fcc/r0", "Au111/clean/r6", "bulk/Cu/strain+2%/r0",
                  "bulk/Ni/strain-4%/r3", "gas/CO/r0", "Ag111/H2O/hcp/r1"):
        assert label in labels
    assert {s.label.rsplit("/", 1)[1] for s in specs[:base]} == {"r0"}  # replica 0 first
    kinds = [s.kind for s in specs[:base]]
    assert (kinds.count("slab"), kinds.count("bulk"), kinds.count("gas")) == (198, 30, 9)
    assert len(enumerate_systems(CatalysisConfig(replicas=2))) == 2 * base
    thick = [s.label for s in enumerate_systems(
        CatalysisConfig(replicas=1, slab_size=(3, 3, 6), slab_tag="-3x3x6"))]
    assert "Pt111-3x3x6/CO/fcc/r0" in thick and "Pt111-3x3x6/clean/r0" in thick
    assert system_of("Pt111-3x3x6/CO/fcc/r0") == "Pt111-3x3x6/CO/fcc"  # a system of its own
    assert "bulk/Cu/strain+2%/r0" in thick  # bulk and gas labels do not depend on the slab


def test_config_rejects_unknown_values():
    with pytest.raises(ConfigError, match="Fe"):
        CatalysisConfig(metals=("Fe",))
    with pytest.raises(ConfigError, match="hollow"):
        CatalysisConfig(sites=("hollow",))
    with pytest.raises(ConfigError, match="replicas"):
        CatalysisConfig(replicas=0)


# ---------------------------------------------------------------- geometry
def _min_image_2d(d: np.ndarray, cell2d: np.ndarray) -> float:
    frac = np.linalg.solve(cell2d.T, d)
    return float(np.linalg.norm((frac - np.round(frac)) @ cell2d))


def test_slab_sites_heights_and_fixed_layers():
    config = CatalysisConfig(metals=("Pt",))
    exact = CatalysisConfig(metals=("Pt",), perturb=0.0, lateral_jitter=0.0, max_tilt=0.0)
    anchors, ideal = {}, {}
    for ads, site in itertools.product(ADSORBATES, SITES):
        spec = _spec(f"Pt111/{ads}/{site}/r0", config)
        atoms = build_system(spec, LATTICE, config)
        n_metal = 36
        assert atoms.pbc.tolist() == [True, True, False]
        metal_z = atoms.positions[:n_metal, 2]
        fixed = fixed_mask(atoms)
        # the 18 fixed atoms are exactly the two bottom layers (lowest z)
        assert fixed.sum() == 18 and not fixed[n_metal:].any()
        assert metal_z[fixed[:n_metal]].max() < metal_z[~fixed[:n_metal]].min()
        top = np.sort(metal_z)[-9:].mean()
        ads_pos = atoms.positions[n_metal:]
        height = ads_pos[0, 2] - top
        assert 0.7 < height < 2.6, (ads, site, height)
        # binding atom first and below the rest (CO C-down, OH O-down, CH3 C-down)
        if ads != "H2O" and len(ads_pos) > 1:
            assert ads_pos[0, 2] < ads_pos[1:, 2].min()
        assert atoms.get_chemical_symbols()[n_metal] == {"CO": "C", "OH": "O", "H2O": "O",
                                                         "CH3": "C"}.get(ads, ads)
        if ads == "H2O":  # O-down and nearly flat: hydrogens within ~0.6 Å of the O height
            assert np.all(np.abs(ads_pos[1:, 2] - ads_pos[0, 2]) < 0.6)
        # ~10 Å of vacuum on each side of the slab + adsorbate
        span = atoms.positions[:, 2].max() - atoms.positions[:, 2].min()
        assert abs(atoms.cell[2, 2] - span - 20.0) < 0.5
        anchors.setdefault(ads, {})[site] = ads_pos[0, :2]
        ideal.setdefault(ads, {})[site] = build_system(spec, LATTICE, exact).positions[n_metal, :2]
    cell2d = atoms.cell.array[:2, :2]
    nn = LATTICE["Pt"] / math.sqrt(2)
    for ads in ADSORBATES:
        for a, b in itertools.combinations(SITES, 2):  # ideal sites >= a_nn / (2 sqrt 3) apart
            d = _min_image_2d(ideal[ads][a] - ideal[ads][b], cell2d)
            assert d > nn / (2 * math.sqrt(3)) - 1e-6, (ads, a, b, d)
        for site in SITES:  # the jitter stays well inside the site
            shift = _min_image_2d(anchors[ads][site] - ideal[ads][site], cell2d)
            assert shift < config.lateral_jitter * math.sqrt(2) + 4 * config.perturb


def test_bulk_and_gas_systems():
    config = CatalysisConfig(metals=("Cu",))
    strained = build_system(_spec("bulk/Cu/strain+4%/r0", config), LATTICE, config)
    assert strained.pbc.all() and len(strained) == 32
    v0 = bulk("Cu", "fcc", a=LATTICE["Cu"], cubic=True).repeat(2).get_volume()
    assert strained.get_volume() / v0 == pytest.approx(1.04**3, rel=0.02)
    gas = build_system(_spec("gas/NH3/r0", config), LATTICE, config)
    assert not gas.pbc.any() and gas.get_chemical_formula() == "H3N"
    assert np.all((gas.positions > 0) & (gas.positions < config.gas_box))


def test_start_geometry_is_seeded():
    config = CatalysisConfig(metals=("Pt",))
    spec = _spec("Pt111/CO/bridge/r0", config)
    a = build_system(spec, LATTICE, config).positions
    assert np.array_equal(a, build_system(spec, LATTICE, config).positions)
    other = build_system(_spec("Pt111/CO/bridge/r1", config), LATTICE, config).positions
    assert not np.allclose(a, other)
    reseeded = CatalysisConfig(metals=("Pt",), seed=1)
    assert not np.allclose(a, build_system(spec, LATTICE, reseeded).positions)


def test_lattice_constant_is_the_teacher_minimum(tmp_path):
    calc = EMT()
    a = fit_lattice_constant("Cu", calc)

    def energy(x):
        atoms = bulk("Cu", "fcc", a=x)
        atoms.calc = calc
        return atoms.get_potential_energy()

    assert energy(a) < energy(a * 0.99) and energy(a) < energy(a * 1.01)
    cache = tmp_path / "lattice_constants.json"
    got = load_lattice_constants(cache, "emt", ["Cu"], EMT)
    assert got["Cu"] == pytest.approx(a)

    def no_calc():
        raise AssertionError("the cache should have been used")

    assert load_lattice_constants(cache, "emt", ["Cu"], no_calc) == got


# ---------------------------------------------------------------- teacher relaxation
def test_relax_keeps_fixed_atoms_and_raw_forces():
    config = CatalysisConfig(**{**TINY, "max_steps": 200})
    spec = _spec("Cu111/H/top/r0", config)
    atoms = build_system(spec, LATTICE, config)
    start, fixed = atoms.positions.copy(), fixed_mask(atoms)
    result = relax_and_label(spec, atoms, EMT(), config)
    relax = [f for f in result.frames if f.kind == FrameKind.RELAX]
    rattled = [f for f in result.frames if f.kind == FrameKind.RATTLED]
    assert result.converged and len(rattled) == 2
    assert np.array_equal(relax[0].positions, start)
    for frame in result.frames:
        assert np.allclose(frame.positions[fixed], start[fixed])
        assert frame.stress is None
    free_f = np.linalg.norm(relax[-1].forces[~fixed], axis=1).max()
    assert free_f < config.fmax
    assert np.abs(relax[-1].forces[fixed]).max() > 1e-3  # raw teacher forces, not zeroed
    moved = [np.abs(f.positions - relax[-1].positions).max() for f in rattled]
    assert all(0.01 < m < 1.0 for m in moved)


def test_bulk_frames_carry_stress():
    config = CatalysisConfig(**TINY)
    spec = _spec("bulk/Cu/strain+2%/r0", config)
    result = relax_and_label(spec, build_system(spec, LATTICE, config), EMT(), config)
    assert all(f.stress is not None for f in result.frames)
    assert result.frames[0].stress.trace() > 0  # stretched: ASE sign (1/V) dE/dstrain > 0


# ---------------------------------------------------------------- the build
def _positions_by_label(path) -> dict[str, np.ndarray]:
    from tdn_calc.data.dataset import H5Dataset

    ds = H5Dataset(path)
    out: dict[str, list] = {}
    for i in range(len(ds)):
        item = ds[i]
        out.setdefault(ds.identifiers[item["traj"]], []).append(item["positions"])
    ds.close()
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.timeout(600)  # a pool of 2 builder processes
def test_build_is_resumable_and_deterministic(tmp_path):
    config = CatalysisConfig(**TINY)
    n = len(enumerate_systems(config))
    first = build_catalysis(tmp_path / "a", teacher="emt", config=config, limit=3,
                            progress=False)
    assert first.written == 3 and not first.failures
    second = build_catalysis(tmp_path / "a", teacher="emt", config=config, progress=False)
    assert second.already_done == 3 and second.written == n - 3
    third = build_catalysis(tmp_path / "a", teacher="emt", config=config, progress=False)
    assert third.written == 0 and third.already_done == n
    a = _positions_by_label(tmp_path / "a")
    assert sorted(a) == sorted(s.label for s in enumerate_systems(config))  # no duplicates
    meta = read_metadata(tmp_path / "a")
    assert set(meta) == set(a)
    slab = meta["Cu111/CO/fcc/r0"]
    assert (slab["kind"], slab["metal"], slab["adsorbate"], slab["site"]) == ("slab", "Cu",
                                                                              "CO", "fcc")
    assert slab["fixed_atoms"] == list(range(4))

    two_workers = build_catalysis(tmp_path / "b", teacher="emt", config=config, workers=2,
                                  progress=False)
    assert two_workers.written == n
    b = _positions_by_label(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same seed -> identical frames


def test_teacher_selection():
    assert isinstance(get_teacher("emt"), EMT)
    assert canonical_teacher_name("7net-0") == canonical_teacher_name("SevenNet-0") == "sevenn-0"
    lj = get_teacher("ase.calculators.lj:LennardJones")
    assert type(lj).__name__ == "LennardJones"
    with pytest.raises(InputError, match="emt"):
        get_teacher("nonsense")
    with pytest.raises(InputError, match="cannot import"):
        get_teacher("no_such_module_xyz:Calc")
    method = teacher_reference_method("7net-0")
    assert "SevenNet-0" in method and "not DFT" in method
    assert "not DFT" in teacher_reference_method("emt")


def test_recipe_change_is_refused(tmp_path):
    config = CatalysisConfig(**TINY)
    build_catalysis(tmp_path, teacher="emt", config=config, limit=1, progress=False)
    more = CatalysisConfig(**{**TINY, "replicas": 2})  # a wider scope is fine
    assert build_catalysis(tmp_path, teacher="emt", config=more, limit=1,
                           progress=False).already_done == 1
    with pytest.raises(InputError, match="seed"):
        build_catalysis(tmp_path, teacher="emt", config=CatalysisConfig(**{**TINY, "seed": 3}),
                        progress=False)


def test_cli_build_catalysis(tmp_path):
    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    args = ["data", "build", "catalysis", "--out", str(tmp_path / "cat"), "--teacher", "emt",
            "--metals", "Cu", "--adsorbates", "H", "--sites", "top", "--gas", "H2",
            "--replicas", "1", "--limit", "2", "--max-steps", "5", "--n-rattle", "1",
            "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "written 2" in result.output
    assert (tmp_path / "cat" / "part-00000.h5").exists()
    bad = CliRunner().invoke(main, [*args[:5], "--teacher", "nonsense"])
    assert bad.exit_code != 0 and "unknown teacher" in bad.output


@pytest.mark.slow
def test_sevennet_teacher_labels_a_slab():
    pytest.importorskip("sevenn")
    config = CatalysisConfig(metals=("Pt",))
    spec = _spec("Pt111/CO/top/r0", config)
    atoms = build_system(spec, {"Pt": 3.98}, config)
    atoms.calc = get_teacher("sevenn-0")
    forces = atoms.get_forces(apply_constraint=False)
    assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all()
    assert np.isfinite(atoms.get_potential_energy())
    assert "sevenn 0." in teacher_reference_method("sevenn-0")


@pytest.mark.timeout(600)
def test_sigterm_stops_the_build_cleanly_and_it_resumes(tmp_path):
    """kill (SIGTERM) saves finished trajectories, stops the pool without worker tracebacks,
    exits 130 and leaves a data set the same command continues."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "cat"
    cmd = [sys.executable, "-m", "tdn_calc.cli.main", "data", "build", "catalysis", "--out",
           str(out), "--teacher", "emt", "--metals", "Cu,Pt", "--replicas", "3", "--workers", "2",
           "--max-steps", "40", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    log = out / "trajectories.jsonl"
    try:  # no wall-clock deadline (a busy machine is slow): the timeout marker names a hang
        while (not log.exists() or log.read_text().count("\n") < 2) and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the build finished before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert "interrupted" in stderr and "[interrupted]" in stdout
    written = read_metadata(out)
    n_all = len(enumerate_systems(CatalysisConfig(metals=("Cu", "Pt"), replicas=3)))
    assert 2 <= len(written) < n_all
    assert set(_positions_by_label(out)) == set(written)  # every shard readable
    resumed = build_catalysis(out, teacher="emt", config=CatalysisConfig(
        metals=("Cu", "Pt"), replicas=3, max_steps=40), limit=len(written) + 1, progress=False)
    assert resumed.already_done == len(written) and resumed.written == 1


def test_recipe_of_a_set_built_before_slab_tag_still_matches(tmp_path):
    """``slab_tag`` was added later: an empty tag is no part of the recorded recipe, so the
    committed set's build command still resumes; a thick-slab tag is."""
    from dataclasses import asdict

    from tdn_calc.datagen.catalysis.build import _check_recipe

    old = {k: v for k, v in asdict(CatalysisConfig()).items()
           if k not in ("slab_tag", "replicas", "metals", "adsorbates", "sites",
                        "gas_molecules", "bulk_strains")}
    path = tmp_path / "build_config.json"
    path.write_text(json.dumps({"teacher": "emt", **old}))
    _check_recipe(path, "emt", CatalysisConfig())  # no error
    with pytest.raises(InputError, match="slab_tag"):
        _check_recipe(path, "emt", CatalysisConfig(slab_tag="-3x3x6"))
