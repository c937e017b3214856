"""The HDF5 frame format: round trip, resume, crash recovery, unit checks, shards."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tdn_calc.data.dataset import H5Dataset
from tdn_calc.data.frames import Frame, FrameKind
from tdn_calc.data.h5format import UNITS, H5Writer
from tdn_calc.data.shards import ShardedWriter, list_shards, read_identifiers
from tdn_calc.errors import InputError

ATTRS = {"reference_method": "toy", "source": "unit test"}


def random_frames(rng, n_frames: int, n_atoms: int, *, periodic: bool = False) -> list[Frame]:
    frames = []
    for k in range(n_frames):
        cell = np.diag(rng.uniform(5, 8, 3)) if periodic else np.zeros((3, 3))
        frames.append(Frame(
            atomic_numbers=rng.choice([1, 6, 8], n_atoms),
            positions=rng.normal(size=(n_atoms, 3)) * 2,
            energy=rng.normal() * 100,
            forces=rng.normal(size=(n_atoms, 3)),
            cell=cell,
            pbc=[periodic] * 3,
            stress=rng.normal(size=(3, 3)) * 0.01 if periodic else None,
            kind=FrameKind.RATTLED if k % 2 else FrameKind.RELAX,
            step=k,
        ))
    return frames


def test_round_trip(tmp_path, rng):
    path = tmp_path / "d.h5"
    trajs = {"a": random_frames(rng, 3, 5), "b": random_frames(rng, 2, 7, periodic=True)}
    with H5Writer(path, ATTRS) as w:
        for name, frames in trajs.items():
            w.append_trajectory(name, frames, charge=0, spin=0)
    ds = H5Dataset(path)
    assert len(ds) == 5 and ds.identifiers == ["a", "b"]
    assert ds.reference_method == "toy"
    flat = [(name, fr) for name, frames in trajs.items() for fr in frames]
    for i, (name, fr) in enumerate(flat):
        s = ds[i]
        assert ds.identifiers[s["traj"]] == name
        np.testing.assert_array_equal(s["atomic_numbers"], fr.atomic_numbers)
        np.testing.assert_array_equal(s["positions"], fr.positions)  # float64 storage
        np.testing.assert_allclose(s["forces"], fr.forces, rtol=1e-6, atol=1e-6)  # float32
        assert s["energy"] == fr.energy
        np.testing.assert_array_equal(s["cell"], fr.cell)
        assert s["has_stress"] == (fr.stress is not None)
        if fr.stress is not None:
            np.testing.assert_array_equal(s["stress"], fr.stress)
        assert s["kind"] == int(fr.kind)
    with h5py.File(path) as f:
        for key, unit in UNITS.items():
            assert f.attrs[f"units.{key}"] == unit
        assert f.attrs["format_version"] == 1 and "created" in f.attrs
        np.testing.assert_array_equal(f["traj_n_frames"][:], [3, 2])


def test_append_and_resume(tmp_path, rng):
    path = tmp_path / "d.h5"
    with H5Writer(path, ATTRS) as w:
        w.append_trajectory("a", random_frames(rng, 2, 4))
    with H5Writer(path) as w:
        assert w.identifiers == {"a"}
        with pytest.raises(InputError, match="already"):
            w.append_trajectory("a", random_frames(rng, 1, 4))
        w.append_trajectory("b", random_frames(rng, 3, 6))
    ds = H5Dataset(path)
    assert len(ds) == 5 and ds.identifiers == ["a", "b"]
    np.testing.assert_array_equal(ds.traj, [0, 0, 1, 1, 1])
    with pytest.raises(InputError, match="toy"):
        H5Writer(path, {"reference_method": "DFT", "source": "x"})


def test_truncated_tail_is_recovered(tmp_path, rng):
    """A writer killed after resizing/writing but before updating the counters."""
    path = tmp_path / "d.h5"
    with H5Writer(path, ATTRS) as w:
        w.append_trajectory("good", random_frames(rng, 2, 3))
    with h5py.File(path, "r+") as f:  # simulate the first half of a killed append
        for name in ("atomic_numbers", "positions", "forces", "energy", "frame_atom_ptr"):
            ds = f[name]
            ds.resize(ds.shape[0] + 4, axis=0)
    ds = H5Dataset(path)  # readers ignore the uncommitted tail
    assert len(ds) == 2 and ds.identifiers == ["good"]
    with H5Writer(path) as w:  # the next writer truncates it and continues
        assert w.identifiers == {"good"}
        w.append_trajectory("next", random_frames(rng, 1, 3))
    with h5py.File(path) as f:
        assert f["energy"].shape == (3,) and f["positions"].shape == (9, 3)
    assert H5Dataset(path).identifiers == ["good", "next"]


def test_units_and_format_are_checked(tmp_path, rng):
    path = tmp_path / "d.h5"
    with H5Writer(path, ATTRS) as w:
        w.append_trajectory("a", random_frames(rng, 1, 2))
    with h5py.File(path, "r+") as f:
        f.attrs["units.energy"] = "Hartree"
    with pytest.raises(InputError, match="Hartree"):
        H5Dataset(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1]
    with pytest.raises(InputError, match="not a tdn-calc frame file"):
        H5Dataset(other)
    with pytest.raises(InputError, match="reference_method"):
        H5Writer(tmp_path / "new.h5", {"source": "x"})


def test_frame_validation():
    with pytest.raises(InputError, match="forces"):
        Frame([1, 1], np.zeros((2, 3)), 0.0, np.zeros((3, 3)))
    with pytest.raises(InputError, match="non-finite"):
        Frame([1], [[0, 0, np.nan]], 0.0, np.zeros((1, 3)))
    voigt = Frame([1], np.zeros((1, 3)), 0.0, np.zeros((1, 3)), stress=[1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(voigt.stress, [[1, 6, 5], [6, 2, 4], [5, 4, 3]])


def test_shards_roll_over_and_resume(tmp_path, rng):
    out = tmp_path / "set"
    with ShardedWriter(out, ATTRS, shard_size=2) as w:
        for name in "abc":
            w.append_trajectory(name, random_frames(rng, 2, 3))
    shards = list_shards(out)
    assert [p.name for p in shards] == ["part-00000.h5", "part-00001.h5"]
    with h5py.File(shards[0]) as f:
        assert f.attrs["shard_complete"]
    mtime = shards[0].stat().st_mtime_ns
    with ShardedWriter(out, ATTRS, shard_size=2) as w:  # resume: fills part-00001 first
        assert w.done == {"a", "b", "c"}
        w.append_trajectory("d", random_frames(rng, 1, 3))
        w.append_trajectory("e", random_frames(rng, 1, 3))
    assert [p.name for p in list_shards(out)] == ["part-00000.h5", "part-00001.h5",
                                                  "part-00002.h5"]
    assert shards[0].stat().st_mtime_ns == mtime  # a complete shard is never touched again
    assert read_identifiers(out) == set("abcde")
    assert H5Dataset(out).identifiers == list("abcde")


def test_unreadable_shard_is_moved_aside(tmp_path, rng):
    out = tmp_path / "set"
    with ShardedWriter(out, ATTRS, shard_size=5) as w:
        w.append_trajectory("a", random_frames(rng, 1, 3))
    (out / "part-00000.h5").write_bytes(b"garbage, not HDF5")
    with ShardedWriter(out, ATTRS, shard_size=5) as w:
        assert w.done == set()
        w.append_trajectory("a", random_frames(rng, 1, 3))
    assert any(p.name.startswith("part-00000.h5.corrupt-") for p in out.iterdir())
    assert read_identifiers(out) == {"a"}


def test_shard_held_by_a_reader_is_not_moved_aside(tmp_path, rng):
    out = tmp_path / "set"
    with ShardedWriter(out, ATTRS, shard_size=5) as w:
        w.append_trajectory("a", random_frames(rng, 1, 3))
    with h5py.File(out / "part-00000.h5", "r"), pytest.raises(InputError, match="another writer"):
        ShardedWriter(out, ATTRS, shard_size=5)
    assert read_identifiers(out) == {"a"}


def test_frame_from_atoms_keeps_forces_of_fixed_atoms(rng):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]])
    forces = rng.normal(size=(2, 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=forces)
    atoms.set_constraint(FixAtoms([0]))
    np.testing.assert_array_equal(Frame.from_atoms(atoms).forces, forces)


@pytest.mark.timeout(300)  # a writer subprocess
def test_sigkill_during_appends_leaves_a_usable_directory(tmp_path):
    """Kill a writer at a random moment; the directory must reopen and read cleanly."""
    import subprocess
    import sys
    import textwrap
    import time

    out = tmp_path / "set"
    script = textwrap.dedent(f"""
        import numpy as np
        from tdn_calc.data.frames import Frame
        from tdn_calc.data.shards import ShardedWriter
        rng = np.random.default_rng(0)
        with ShardedWriter({str(out)!r}, {ATTRS!r}, shard_size=7) as w:
            print("ready", flush=True)
            for t in range(100000):
                n = 3 + t % 5
                frames = [Frame([1] * n, rng.normal(size=(n, 3)), -1.0 * t,
                                rng.normal(size=(n, 3)), step=k) for k in range(4)]
                w.append_trajectory(f"t{{t}}", frames)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    with ShardedWriter(out, ATTRS, shard_size=7) as w:
        done = w.done
        w.append_trajectory("after", random_frames(np.random.default_rng(1), 2, 3))
    assert len(done) > 0
    ds = H5Dataset(out)
    assert set(ds.identifiers) == done | {"after"}
    for i in range(0, len(ds), 7):
        s = ds[i]
        assert np.isfinite(s["positions"]).all() and len(s["positions"]) == ds.n_atoms[i]
    counts = np.bincount(ds.traj)
    assert (counts[:-1] == 4).all()  # every trajectory is whole


@pytest.mark.timeout(300)  # a writer subprocess
def test_write_flag_of_a_killed_latest_format_writer_is_cleared(tmp_path):
    """Shards written with libver="latest" (superblock v3) keep an "open for write" flag after
    a SIGKILL, and HDF5 then refuses to open them; the writer clears it (like h5clear -s)."""
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "set"
    script = textwrap.dedent(f"""
        import os, signal
        import h5py
        import numpy as np
        class LatestFile(h5py.File):
            def __init__(self, name, mode="r", **kw):
                if mode == "w":
                    kw.setdefault("libver", "latest")
                super().__init__(name, mode, **kw)
        h5py.File = LatestFile
        from tdn_calc.data.frames import Frame
        from tdn_calc.data.shards import ShardedWriter
        w = ShardedWriter({str(out)!r}, {ATTRS!r}, shard_size=10)
        for t in range(2):
            w.append_trajectory(f"t{{t}}", [Frame([1, 1], np.eye(3)[:2], -1.0, np.zeros((2, 3)))])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=240)
    shard = out / "part-00000.h5"
    with pytest.raises(OSError, match="h5clear"):
        h5py.File(shard, "r")
    with ShardedWriter(out, ATTRS, shard_size=10) as w:
        assert w.done == {"t0", "t1"}
        w.append_trajectory("t2", random_frames(np.random.default_rng(0), 1, 2))
    assert H5Dataset(out).identifiers == ["t0", "t1", "t2"]
