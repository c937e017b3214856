"""Importers: ASE-readable files and PubChemQCR LMDB files (written here in that format)."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.units import Bohr, Hartree

from tdn_calc.data.dataset import H5Dataset
from tdn_calc.data.frames import FrameKind
from tdn_calc.data.importers import import_ase, import_pubchemqcr
from tdn_calc.errors import InputError


def _labelled(rng, n: int = 4, periodic: bool = False) -> Atoms:
    atoms = Atoms("Cu" * n, positions=rng.uniform(0, 3, (n, 3)), cell=np.eye(3) * 6,
                  pbc=periodic)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    return atoms


def test_import_extxyz_and_traj(tmp_path, rng):
    images = [_labelled(rng, periodic=True) for _ in range(3)]
    expected = [(a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False))
                for a in images]
    write(tmp_path / "a.extxyz", images)
    write(tmp_path / "b.traj", images[:2])
    counts = import_ase([tmp_path / "a.extxyz", tmp_path / "b.traj"], tmp_path / "out",
                        reference_method="EMT (ASE)", group="file")
    assert counts == {"trajectories": 2, "frames": 5}
    ds = H5Dataset(tmp_path / "out")
    assert ds.identifiers == ["a.extxyz", "b.traj"] and ds.reference_method == "EMT (ASE)"
    for i, (energy, forces, stress) in enumerate(expected):
        s = ds[i]
        assert s["energy"] == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(s["forces"], forces, atol=1e-6)
        assert s["has_stress"]
        np.testing.assert_allclose(s["stress"], stress, atol=1e-8)
    ds.close()  # HDF5 refuses to open a file for writing that this process reads
    # importing again adds nothing; per-frame grouping makes one trajectory per frame
    assert import_ase([tmp_path / "a.extxyz"], tmp_path / "out",
                      reference_method="EMT (ASE)")["trajectories"] == 0
    counts = import_ase([tmp_path / "a.extxyz"], tmp_path / "out2",
                        reference_method="EMT (ASE)", group="frame")
    assert counts["trajectories"] == 3


def test_import_ase_db_and_missing_labels(tmp_path, rng):
    from ase.db import connect

    with connect(tmp_path / "x.db") as db:
        for _ in range(2):
            db.write(_labelled(rng))
    counts = import_ase([tmp_path / "x.db"], tmp_path / "out", reference_method="EMT (ASE)",
                        group="frame")
    assert counts == {"trajectories": 2, "frames": 2}
    assert not H5Dataset(tmp_path / "out")[0]["has_stress"]  # not periodic: no stress

    bare = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])
    write(tmp_path / "bare.xyz", bare)
    with pytest.raises(InputError, match=r"bare\.xyz, frame 0"):
        import_ase([tmp_path / "bare.xyz"], tmp_path / "out3", reference_method="x")
    sp = bare.copy()
    sp.calc = SinglePointCalculator(sp, energy=-1.0)
    write(tmp_path / "noforces.extxyz", sp)
    with pytest.raises(InputError, match="forces"):
        import_ase([tmp_path / "noforces.extxyz"], tmp_path / "out4", reference_method="x")


def _pubchemqcr_step(rng, symbols):
    xyz = rng.normal(size=(len(symbols), 3))
    grad = rng.normal(size=(len(symbols), 3)) * 0.01
    return {
        "coordinates": [{"atom": s, "charge": 0, "x": x, "y": y, "z": z}
                        for s, (x, y, z) in zip(symbols, xyz, strict=True)],
        "energy": -76.4 + rng.normal() * 1e-3,
        "gradient": [{"atom": s, "dx": a, "dy": b, "dz": c}
                     for s, (a, b, c) in zip(symbols, grad, strict=True)],
    }


def _write_lmdb(path, records: dict[int, dict], subdir: bool) -> None:
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 24, subdir=subdir)
    with env.begin(write=True) as txn:
        for cid, record in records.items():
            txn.put(f"{cid:09d}".encode(), gzip.compress(pickle.dumps(record)))
    env.close()


@pytest.mark.parametrize("subdir", [True, False])
def test_import_pubchemqcr_lmdb(tmp_path, rng, subdir):
    water, methanol = ["O", "H", "H"], ["C", "O", "H", "H", "H", "H"]
    records = {
        962: {"pm3": [_pubchemqcr_step(rng, water)],
              "DFT_1st": [_pubchemqcr_step(rng, water) for _ in range(3)],
              "DFT_2nd": [_pubchemqcr_step(rng, water)]},
        887: {"DFT_1st": [_pubchemqcr_step(rng, methanol) for _ in range(2)], "DFT_2nd": []},
    }
    src = tmp_path / ("db" if subdir else "db.lmdb")
    _write_lmdb(src, records, subdir)
    counts = import_pubchemqcr(src, tmp_path / "out", stages=("DFT_1st", "DFT_2nd"))
    assert counts == {"trajectories": 2, "frames": 6, "empty_records": 0}
    ds = H5Dataset(tmp_path / "out")
    assert ds.identifiers == ["CID887", "CID962"]  # LMDB keys are sorted
    assert ds.reference_method.startswith("B3LYP/6-31G*")
    flat = [(887, "DFT_1st", k) for k in range(2)]
    flat += [(962, "DFT_1st", k) for k in range(3)] + [(962, "DFT_2nd", 0)]
    for i, (cid, stage, k) in enumerate(flat):
        step = records[cid][stage][k]
        s = ds[i]
        assert s["energy"] == pytest.approx(step["energy"] * Hartree, rel=1e-12)
        grad = np.array([[g["dx"], g["dy"], g["dz"]] for g in step["gradient"]])
        np.testing.assert_allclose(s["forces"], -grad * Hartree / Bohr, rtol=1e-6)
        xyz = np.array([[c["x"], c["y"], c["z"]] for c in step["coordinates"]])
        np.testing.assert_array_equal(s["positions"], xyz)
        assert s["kind"] == (FrameKind.DFT_1ST if stage == "DFT_1st" else FrameKind.DFT_2ND)
    np.testing.assert_array_equal(ds[0]["atomic_numbers"], [6, 8, 1, 1, 1, 1])
    # a 1 Hartree/Bohr gradient is 51.42 eV/Å
    assert Hartree / Bohr == pytest.approx(51.422, abs=1e-3)
    with pytest.raises(InputError, match="unknown stage"):
        import_pubchemqcr(src, tmp_path / "o2", stages=("DFT_3rd",))
    counts = import_pubchemqcr(src, tmp_path / "o3", stages=("pm3",))
    assert counts == {"trajectories": 1, "frames": 1, "empty_records": 1}


def test_cli_import_info_split(tmp_path, rng):
    import json

    from click.testing import CliRunner
    from tdn_calc.cli.main import main

    write(tmp_path / "a.extxyz", [_labelled(rng) for _ in range(6)])
    out = tmp_path / "set"
    runner = CliRunner()
    res = runner.invoke(main, ["data", "import-ase", str(tmp_path / "a.extxyz"), "--out",
                               str(out), "--reference-method", "EMT (ASE)", "--group", "frame"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"trajectories": 6, "frames": 6}
    res = runner.invoke(main, ["data", "info", str(out)])
    info = json.loads(res.output)
    assert info["frames"] == 6 and info["elements"] == {"Cu": 24}
    assert info["reference_method"] == ["EMT (ASE)"]
    res = runner.invoke(main, ["data", "split", str(out), "--fractions", "0.5,0.5,0"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["trajectories"] == {"train": 3, "val": 3, "test": 0}
    assert (out / "split-seed42.json").exists()

    _write_lmdb(tmp_path / "db", {1: {"DFT_1st": [_pubchemqcr_step(rng, ["H", "H"])]}}, True)
    res = runner.invoke(main, ["data", "import-pubchemqcr", str(tmp_path / "db"), "--out",
                               str(tmp_path / "p")])
    assert res.exit_code == 2 and "--trusted" in res.output  # pickles need consent
    res = runner.invoke(main, ["data", "import-pubchemqcr", str(tmp_path / "db"), "--out",
                               str(tmp_path / "p"), "--trusted"])
    assert res.exit_code == 0 and json.loads(res.output)["frames"] == 1
