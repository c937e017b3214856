"""Reliability: property-based tests over random structures and random checkpoint corruptions,
flat memory over many calculator calls, smooth dissociation curves through the cutoff, and
``tdn-relax`` killed with SIGKILL then resumed. Tiny random models only."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule
from ase.io import read, write
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import load_checkpoint_file, save_model
from tdn_calc.errors import CheckpointError, TDNError

MODEL_ELEMENTS = (1, 6, 8)
_HYPOTHESIS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _tiny(elements=MODEL_ELEMENTS, dtype=torch.float64, seed=0, **overrides):
    """The conftest tiny model, for module-scoped fixtures (hypothesis reuses them)."""
    from tdn_calc.nn.config import TDNConfig
    from tdn_calc.nn.model import TDNModel

    torch.manual_seed(seed)
    config = TDNConfig(
        elements=list(elements), lmax=1, channels=8, num_layers=1, num_heads=2, cutoff=4.0,
        num_radial=4, radial_hidden=8, avg_num_neighbors=8.0, **overrides,
    )  # fmt: skip
    return TDNModel(config).to(dtype).eval()


@pytest.fixture(scope="module")
def calc():
    return TDNCalculator(_tiny(), device="cpu")


# --------------------------------------------------------------------------- random structures

_cells = st.one_of(
    st.just(np.zeros((3, 3))),  # no cell
    st.floats(0.0, 9.0).map(lambda a: np.eye(3) * a),  # cubic, possibly tiny or zero
    st.lists(st.floats(-9.0, 9.0, allow_nan=False), min_size=9, max_size=9).map(
        lambda v: np.reshape(v, (3, 3))
    ),  # arbitrary, possibly degenerate
    st.sampled_from([np.array([[4.0, 0, 0], [4.0, 1e-9, 0], [0, 0, 4.0]])]),  # near-degenerate
)
_DEFECTS = ["none", "none", "none", "element", "nan", "inf", "overlap", "far", "shifted"]


@st.composite
def structures(draw) -> Atoms:
    """1-6 atoms of the model's elements at random positions in an 8 Å box, random cell and
    pbc, with (half the time) one defect: an element outside the model, a NaN or inf
    coordinate, two overlapping atoms, an atom 1e6 Å away, or everything shifted by 1e5 Å."""
    n = draw(st.integers(1, 6))
    numbers = draw(st.lists(st.sampled_from(MODEL_ELEMENTS), min_size=n, max_size=n))
    coordinates = st.floats(-4.0, 4.0, allow_nan=False)
    positions = np.reshape(draw(st.lists(coordinates, min_size=3 * n, max_size=3 * n)), (n, 3))
    k, axis = draw(st.integers(0, n - 1)), draw(st.integers(0, 2))
    defect = draw(st.sampled_from(_DEFECTS))
    if defect == "element":
        numbers[k] = draw(st.integers(0, 118).filter(lambda z: z not in MODEL_ELEMENTS))
    elif defect in ("nan", "inf"):
        positions[k, axis] = np.nan if defect == "nan" else draw(st.sampled_from([-1, 1])) * np.inf
    elif defect == "overlap" and n > 1:
        positions[(k + 1) % n] = positions[k] + draw(st.floats(0.0, 0.35))
    elif defect == "far":
        positions[k, axis] += 1e6
    elif defect == "shifted":
        positions += 1e5
    pbc = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    return Atoms(numbers=numbers, positions=positions, cell=draw(_cells), pbc=pbc)


@_HYPOTHESIS
@given(atoms=structures())
def test_random_structures_give_documented_errors_or_finite_results(calc, atoms):
    """Either a TDNError subclass, or finite energy/forces (and stress for 3D cells) with
    forces summing to zero and per-atom energies summing to the energy."""
    atoms.calc = calc
    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress() if atoms.pbc.all() else np.zeros(6)
    except TDNError as exc:
        assert str(exc)  # a message
        event(type(exc).__name__)
        return
    event("finite results")
    assert np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()
    assert forces.shape == (len(atoms), 3)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-8)
    assert calc.results["energies"].sum() == pytest.approx(energy, abs=1e-8)


# --------------------------------------------------------------------------- corrupt checkpoints


class _Checkpoint(tuple):
    """``(raw bytes, offset of the tensor data, sha256)``, shown briefly in hypothesis
    reports."""

    def __repr__(self) -> str:
        return f"<checkpoint of {len(self[0])} bytes, data from byte {self[1]}>"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = save_model(_tiny(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    raw = path.read_bytes()
    n_header = int.from_bytes(raw[:8], "little")
    return _Checkpoint((raw, 8 + n_header, hashlib.sha256(raw).hexdigest()))


@st.composite
def corruptions(draw, size: int, data_start: int) -> tuple[str, int, int]:
    kind = draw(st.sampled_from(["truncate", "flip_header", "flip_data"]))
    lo, hi = {"truncate": (0, size - 1), "flip_header": (0, data_start - 1),
              "flip_data": (data_start, size - 1)}[kind]  # fmt: skip
    return kind, draw(st.integers(lo, hi)), draw(st.integers(1, 255))


def _corrupt(raw: bytes, kind: str, offset: int, xor: int) -> bytes:
    if kind == "truncate":
        return raw[:offset]
    data = bytearray(raw)
    data[offset] ^= xor
    return bytes(data)


@_HYPOTHESIS
@given(data=st.data())
def test_corrupt_checkpoints_are_refused(tmp_path, checkpoint, data):
    """With the published sha256 every corruption is a CheckpointError; without it too
    (truncation, broken header, or the content checksum stored in the file), except a change
    confined to the informational model card or the header padding. Never another exception,
    never non-finite weights."""
    raw, data_start, sha = checkpoint
    kind, offset, xor = data.draw(corruptions(len(raw), data_start))
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(_corrupt(raw, kind, offset, xor))
    with pytest.raises(CheckpointError, match=r"corrupt\.safetensors"):
        load_checkpoint_file(path, device="cpu", dtype="float64", expected_sha256=sha)
    try:
        model = load_checkpoint_file(path, device="cpu", dtype="float64")
    except CheckpointError as exc:
        assert "corrupt.safetensors" in str(exc)
        return
    assert kind == "flip_header"  # header flips may keep valid JSON (model card text, spaces)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_safetensors_header_with_a_code_payload_is_not_executed(tmp_path, checkpoint):
    """A header entry crafted to look like a pickle/eval payload is plain JSON to us."""
    raw, data_start, _ = checkpoint
    marker = tmp_path / "ran"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    import json

    header = json.loads(raw[8:data_start])
    header["__metadata__"]["tdn_card"] = json.dumps({"name": payload, "__reduce__": payload})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "payload.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[data_start:])
    model = load_checkpoint_file(path, device="cpu")
    assert model.card["name"] == payload and not marker.exists()


# --------------------------------------------------------------------------- memory


def _rss_mb() -> float:
    """Resident set size of this process, MB (from /proc/self/statm)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_run(calc: TDNCalculator, n_calls: int) -> tuple[float, float, float]:
    """``n_calls`` energy+force calls on a rattled methanol; returns RSS (MB) after the first
    10% of calls (warm-up), at the end, and the largest value seen."""
    atoms = molecule("CH3OH")
    atoms.calc = calc
    base = atoms.positions.copy()
    rng = np.random.default_rng(0)
    start = peak = 0.0
    for k in range(n_calls):
        atoms.positions = base + rng.normal(scale=0.02, size=base.shape)
        forces = atoms.get_forces()
        if k == n_calls // 10:
            start = _rss_mb()
        if k % 100 == 0:
            peak = max(peak, _rss_mb())
    assert np.isfinite(forces).all()
    return start, _rss_mb(), peak


def test_memory_flat_over_1000_calls(calc, record_property):
    """No Python or NumPy object survives a call (tracemalloc: exact, whatever else the
    machine does), and the process's RSS stays within a bound far above allocator noise
    (a leaked autograd graph or result tensor per call would pass it within 1000 calls).
    The tight 5 MB RSS bound is the slow 10,000-call test's."""
    import gc
    import tracemalloc

    _memory_run(calc, 50)  # warm-up: caches, lazily built buffers
    gc.collect()
    tracemalloc.start()
    try:
        _memory_run(calc, 20)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _memory_run(calc, 200)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes of Python objects kept by 200 calls"
    start, end, peak = _memory_run(calc, 1000)
    record_property("rss_mb", (start, end, peak))
    print(f"RSS over 1000 calls: {start:.1f} MB after warm-up, {end:.1f} MB at the end")
    assert end - start < 50.0


@pytest.mark.slow
def test_memory_flat_over_10000_calls(calc, record_property):
    start, end, peak = _memory_run(calc, 10_000)
    record_property("rss_mb", (start, end, peak))
    print(f"RSS over 10000 calls: {start:.1f} MB after warm-up, {end:.1f} MB at the end")
    assert end - start < 5.0


# --------------------------------------------------------------------------- smoothness


def _curve(calc, atoms: Atoms, moving: list[int], direction: np.ndarray):
    """``f(shifts) -> (energies eV, forces eV/Å)``: the energy and the force on the ``moving``
    atoms along ``direction`` when those atoms are displaced by ``shifts`` (Å)."""

    from tdn_calc.model_checks import path_scan

    def evaluate(shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scan = path_scan(calc, atoms, moving, direction, shifts)
        return scan.energies, scan.forces

    return evaluate


def _assert_smooth(evaluate, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy and force along ``x`` (even steps): finite; force = -dE/dx; the largest step of
    E and of F and the largest second difference of E shrink as expected when that interval
    is sampled 10 times finer (a jump would not shrink, a kink would make E'' grow)."""
    h = x[1] - x[0]
    energies, forces = evaluate(x)
    assert np.isfinite(energies).all() and np.isfinite(forces).all()
    scale = np.abs(forces).max() + 1e-6
    np.testing.assert_allclose(-np.gradient(energies, h)[1:-1], forces[1:-1], atol=0.05 * scale)
    for which, values in enumerate((energies, forces)):
        k = int(np.argmax(np.abs(np.diff(values))))
        fine = evaluate(np.linspace(x[k], x[k + 1], 11))[which]
        assert np.abs(np.diff(fine)).max() <= 0.3 * abs(values[k + 1] - values[k]) + 1e-12
    curvature = np.diff(energies, 2) / h**2
    k = int(np.argmax(np.abs(curvature)))
    fine_e, _ = evaluate(np.linspace(x[k], x[k + 2], 21))
    fine_curvature = np.diff(fine_e, 2) / (h / 10) ** 2
    assert np.abs(fine_curvature).max() <= 3 * np.abs(curvature[k]) + 1e-6  # bounded E''
    return energies, forces


def test_c_h_dissociation_through_the_cutoff_is_smooth():
    """One H of methane pulled from 0.8 Å to 5 Å (cutoff 4 Å): energy and force go smoothly
    to the isolated-fragment limit."""
    calc = TDNCalculator(_tiny(), device="cpu")
    ch4 = molecule("CH4")
    h = 4  # an H atom
    bond = ch4.positions[h] - ch4.positions[0]
    direction = bond / np.linalg.norm(bond)
    start = ch4.copy()
    start.positions[h] = ch4.positions[0]
    lengths = np.arange(0.8, 5.0, 0.02)
    energies, forces = _assert_smooth(_curve(calc, start, [h], direction), lengths)
    # the other H atoms sit behind C, so beyond the 4 Å cutoff nothing changes
    assert np.ptp(energies[lengths > 4.01]) < 1e-9
    np.testing.assert_allclose(forces[lengths > 4.01], 0.0, atol=1e-9)
    assert np.abs(forces[lengths < 3.9]).max() > 1e-3  # the curve is not trivially flat


def test_smoothness_check_catches_a_discontinuity():
    """Keeping only the nearest neighbour (``max_neighbors=1``) makes the energy jump when the
    nearest neighbour changes; the check above must see it."""
    calc = TDNCalculator(_tiny(max_neighbors=1), device="cpu")
    atoms = Atoms("COH", positions=[[0, 0, 0], [1.5, 0, 0], [3.0, 0.4, 0]])
    evaluate = _curve(calc, atoms, [1], np.array([1.0, 0.0, 0.0]))  # O passes between C and H
    with pytest.raises(AssertionError):
        _assert_smooth(evaluate, np.arange(-0.3, 1.2, 0.02))


def test_co_leaving_a_pt_surface_is_smooth():
    """CO on top of Pt(111) (3x3x3, periodic in-plane) lifted from 1.7 Å to 5.5 Å."""
    calc = TDNCalculator(_tiny(elements=(6, 8, 78)), device="cpu")
    slab = fcc111("Pt", (3, 3, 3), vacuum=10.0)
    slab.pbc = [True, True, False]
    add_adsorbate(slab, molecule("CO")[[1, 0]], 0.0, "ontop")  # C down
    co = [len(slab) - 2, len(slab) - 1]
    heights = np.arange(1.7, 5.5, 0.04)
    energies, forces = _assert_smooth(_curve(calc, slab, co, np.array([0.0, 0.0, 1.0])), heights)
    assert np.ptp(energies[heights > 4.05]) < 1e-9  # C beyond the 4 Å cutoff of every Pt
    assert np.abs(forces[heights < 3.9]).max() > 1e-4


# --------------------------------------------------------------------------- kill and resume


def _relax_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tdn_calc.cli.relax", *args]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_then_resume_gives_identical_results(tmp_path):
    """A resumed run killed mid-run leaves a complete output (the earlier run's structures,
    plus any saved since), never a half-written file; ``--resume`` then finishes with the
    same structures, positions and energies as one uninterrupted run."""
    model = save_model(_tiny(), tmp_path / "tiny.safetensors")
    mols = []
    for k, name in enumerate(["H2O", "CH4", "CH3OH", "C2H6", "HCOOH", "CH3CHO"]):
        atoms = molecule(name)
        atoms.rattle(0.1, seed=k)
        mols.append(atoms)
    write(tmp_path / "a.xyz", mols[:2])
    write(tmp_path / "b.xyz", mols[2:])
    common = ["-m", str(model), "--dtype", "float64", "--fmax", "1e-4", "--steps", "300"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(_relax_cmd(*args, *common), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    ref = run("a.xyz", "b.xyz", "-o", "ref.extxyz", "-q")
    assert ref.returncode in (0, 3), ref.stderr  # the random model may not converge: either
    first = run("a.xyz", "-o", "out.extxyz", "-q")  # an earlier, complete run
    assert first.returncode in (0, 3), first.stderr
    before = (tmp_path / "out.extxyz").read_bytes()

    proc = subprocess.Popen(
        _relax_cmd("a.xyz", "b.xyz", "-o", "out.extxyz", "--resume", "-v", *common),
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    steps_seen = 0
    try:  # no wall-clock deadline: on a busy machine the timeout marker names a hang
        for line in proc.stderr:  # "step N: ..." log lines: the relaxation is under way
            steps_seen += line.startswith("step ")
            if steps_seen >= 3:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and steps_seen >= 3
    # the output is a complete file: the earlier run's frames (plus, if a periodic save came
    # first, complete finished structures), never half-written
    expected = {_key(f): f for f in read(tmp_path / "ref.extxyz", ":")}
    after = read(tmp_path / "out.extxyz", ":")
    earlier = [_key(f) for f in read(io.StringIO(before.decode()), ":", format="extxyz")]
    assert [_key(f) for f in after][: len(earlier)] == earlier
    for frame in after:
        _assert_same_frame(frame, expected[_key(frame)])

    resumed = run("a.xyz", "b.xyz", "-o", "out.extxyz", "--resume")
    assert resumed.returncode == ref.returncode, resumed.stderr
    assert f"{len(after)} structure(s) already in the output" in resumed.stderr
    out = read(tmp_path / "out.extxyz", ":")
    assert sorted(_key(f) for f in out) == sorted(expected)
    for frame in out:
        _assert_same_frame(frame, expected[_key(frame)])


def _key(frame: Atoms) -> tuple[str, int]:
    return frame.info["tdn_source"], int(frame.info["tdn_index"])


def _assert_same_frame(a: Atoms, b: Atoms) -> None:
    """Same structure, positions, energy and convergence flag (float64 runs; the batched
    FIRE keeps structures independent, so only round-off may differ)."""
    assert a.get_chemical_formula() == b.get_chemical_formula()
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)
    assert a.info["converged"] == b.info["converged"]
