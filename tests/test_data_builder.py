"""The GFN2-xTB molecule builder on tiny molecules, its filters and its CLI."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite loads OpenMP: 3x faster here

import numpy as np
import pytest

from tdn_calc.data.dataset import H5Dataset
from tdn_calc.data.frames import FrameKind
from tdn_calc.datagen.molecules.systems import canonical_or_reason, load_candidates

pytest.importorskip("tblite")
pytest.importorskip("rdkit")

SMALL = dict(subsample=3, rattles_per_sigma=1, strain_scales=(0.97, 1.03), bad_start_steps=6,
             bad_start_every=3, max_steps=60)


def test_filters_and_counts():
    cands = load_candidates(smiles=[
        "CCO", "OCC",  # duplicate after canonicalisation
        "C[N+](C)(C)C.[Cl-]",  # largest fragment is a cation -> charged
        "CC(=O)[O-].[Na+]",  # largest fragment is an anion -> charged
        "O=[N+]([O-])c1ccccc1",  # nitro: charge-separated but neutral -> kept
        "C[Si](C)(C)C",  # Si not allowed
        "CCCCCCCCCCCCCCCC",  # 16 heavy atoms
        "[CH3]",  # radical
        "not a smiles",
    ], max_heavy=15)
    assert cands.smiles == ["CCO", "O=[N+]([O-])c1ccccc1"]
    assert dict(cands.removed) == {"duplicate": 1, "charged": 2, "elements": 1, "too_large": 1,
                                   "radical": 1, "unparsable": 1}
    assert cands.multi_fragment == 2
    assert canonical_or_reason("CCO.O")[0] == "CCO"  # largest fragment of a mixture


def test_build_two_molecules_labels_match_tblite(tmp_path):
    from ase import Atoms
    from tblite.ase import TBLite

    from tdn_calc.datagen.molecules.build import build_molecules
    from tdn_calc.datagen.molecules.label import BuildSettings

    settings = BuildSettings(**SMALL)
    out = tmp_path / "mols"
    summary = build_molecules(out, n_molecules=2, seed=3, smiles=["C", "O"], settings=settings,
                              progress=False)
    assert summary.molecules_done == 2 and summary.failures == {}
    ds = H5Dataset(out)
    assert sorted(ds.identifiers) == ["C", "O"] and ds.reference_method == "GFN2-xTB (tblite)"
    assert len(ds) == summary.frames
    kinds = set(ds.frame_kind.tolist())
    assert {FrameKind.RELAX, FrameKind.RATTLED, FrameKind.STRAINED, FrameKind.BAD_START} <= kinds
    calc = TBLite(method="GFN2-xTB", verbosity=0)
    limits = pytest.importorskip("threadpoolctl").threadpool_limits(limits=1)  # see builder
    for i in range(len(ds)):
        s = ds[i]
        assert np.isfinite(s["energy"]) and np.isfinite(s["forces"]).all()
        if i % 4 == 0:  # recompute a sample of the labels
            atoms = Atoms(numbers=s["atomic_numbers"], positions=s["positions"])
            atoms.calc = calc
            assert s["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
            # the builder reuses one calculator, whose SCF restarts from the previous density;
            # a fresh SCF converges to the same forces within its tolerance (~1e-5 relative)
            np.testing.assert_allclose(s["forces"], atoms.get_forces(), rtol=1e-4, atol=2e-4)
    limits.restore_original_limits()
    # the last relaxation frame is a minimum
    for t in range(ds.n_trajs):
        relax = np.flatnonzero((ds.traj == t) & (ds.frame_kind == FrameKind.RELAX))
        fmax = np.linalg.norm(ds[int(relax[-1])]["forces"], axis=1).max()
        assert fmax < settings.fmax + 1e-4
    ds.close()

    # deterministic by seed, and resumable: a second directory built in two steps is identical
    out2 = tmp_path / "mols2"
    build_molecules(out2, n_molecules=1, seed=3, smiles=["C", "O"], settings=settings,
                    progress=False)
    again = build_molecules(out2, n_molecules=2, seed=3, smiles=["C", "O"], settings=settings,
                            progress=False)
    assert again.molecules_done == 1 and again.molecules_total == 2
    ds, ds2 = H5Dataset(out), H5Dataset(out2)
    order = {ident: t for t, ident in enumerate(ds2.identifiers)}
    for ident in ds.identifiers:
        a, b = ds.frames_of([ident]), ds2.frames_of([ident])
        assert len(a) == len(b)
        # equal up to the summation order of multithreaded BLAS in tblite
        np.testing.assert_allclose(ds[int(a[-1])]["positions"], ds2[int(b[-1])]["positions"],
                                   atol=1e-8)
    assert set(order) == {"C", "O"}
    assert json.loads((out2 / "build_summary.json").read_text())["molecules_total"] == 2


def test_cli_build(tmp_path):
    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    smi = tmp_path / "in.smi"
    smi.write_text("O water\n[Si] silicon\n")
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, [
        "data", "build", "molecules", "--out", str(out), "--n-molecules", "5",
        "--smiles-file", str(smi), "--subsample", "10", "--rattles-per-sigma", "0",
        "--bad-start-steps", "0", "--no-progress",
    ])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["molecules_done"] == 1 and summary["filter_removed"] == {"elements": 1}
    assert (out / "part-00000.h5").exists()
    changed = CliRunner().invoke(main, [
        "data", "build", "molecules", "--out", str(out), "--smiles-file", str(smi),
        "--subsample", "3", "--no-progress"])
    assert changed.exit_code == 1 and "was built with build_settings" in changed.output
    bad = CliRunner().invoke(main, ["data", "build", "molecules", "--out", str(out),
                                    "--sources", "nope"])
    assert bad.exit_code != 0 and "unknown molecule source" in bad.output
