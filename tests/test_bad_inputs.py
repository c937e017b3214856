"""Bad-input catalogue (docs/errors.md): every case raises the documented error type (or the
CLI exits with the documented code) with a message naming the problem, or, where the input is
valid but unusual, gives correct finite numbers. Tiny random models only; no network."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read, write
from click.testing import CliRunner
from tdn_calc.cli.relax import main as relax_main

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import load_checkpoint_file, load_model, save_model
from tdn_calc.device import resolve_device, resolve_dtype
from tdn_calc.errors import (
    CheckpointError,
    InputError,
    ModelNotFoundError,
    TDNError,
    UnsupportedElementError,
)
from tdn_calc.fileio import sha256_file
from tdn_calc.registry import resolve_model
from tdn_calc.validation import validate_structure


@pytest.fixture
def model(tiny_model):
    return tiny_model()


@pytest.fixture
def calc(model):
    return TDNCalculator(model, device="cpu")


def _water() -> Atoms:
    return molecule("H2O")


def _energy(calc: TDNCalculator, atoms: Atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


# --------------------------------------------------------------------------- structures


def test_unknown_element_names_atom_and_allowed(calc):
    atoms = _water()
    atoms.numbers[1] = 78  # Pt
    with pytest.raises(UnsupportedElementError, match=r"Pt \(atom 1\).*supported: H C O"):
        _energy(calc, atoms)


def test_dummy_element_x_is_unsupported(calc):
    atoms = Atoms(numbers=[0, 8], positions=[[0, 0, 0], [1.2, 0, 0]])
    with pytest.raises(UnsupportedElementError, match=r"Z=0 \(atom 0\)"):
        _energy(calc, atoms)


def test_overlapping_atoms(calc):
    atoms = _water()
    atoms.positions[2] = atoms.positions[0] + [0.2, 0, 0]
    with pytest.raises(InputError, match=r"atom 0 \(O\) is 0.200 Å from atom 2 \(H\).*0.3 Å"):
        _energy(calc, atoms)


def test_atoms_on_top_of_each_other(calc):
    atoms = _water()
    atoms.positions[1] = atoms.positions[2]
    with pytest.raises(InputError, match=r"is 0.000 Å from atom"):
        _energy(calc, atoms)


def test_atom_too_close_to_its_own_periodic_image(calc):
    short = Atoms("C", positions=[[0, 0, 0]], cell=[0.25, 5, 5], pbc=True)
    with pytest.raises(InputError, match=r"lattice vector a is 0.25 Å long"):
        _energy(calc, short)
    skewed = Atoms("C", positions=[[0, 0, 0]], cell=[[5, 0, 0], [5, 0.2, 0], [0, 0, 5]], pbc=True)
    with pytest.raises(InputError, match=r"0.200 Å from a periodic image of itself"):
        _energy(calc, skewed)  # a - b is 0.2 Å long


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions(calc, bad):
    atoms = _water()
    atoms.positions[1, 2] = bad
    with pytest.raises(InputError, match=r"atom 1 \(H\) has a non-finite position"):
        _energy(calc, atoms)


def test_non_finite_cell(calc):
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], cell=np.eye(3) * 6, pbc=True)
    atoms.cell[1, 1] = np.nan
    with pytest.raises(InputError, match="cell has non-finite entries"):
        _energy(calc, atoms)


def test_empty_atoms(calc):
    with pytest.raises(InputError, match="no atoms"):
        _energy(calc, Atoms())


@pytest.mark.parametrize("pbc", [False, True])
def test_single_atom_works(calc, pbc):
    """One atom (alone or in a cell wider than the cutoff): finite energy, zero forces, and
    the same energy either way (no neighbours in both)."""
    atoms = Atoms("O", positions=[[0.3, 0.2, 0.1]], cell=np.eye(3) * 9.0, pbc=pbc)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert np.isfinite(energy)
    np.testing.assert_array_equal(atoms.get_forces(), np.zeros((1, 3)))
    alone = Atoms("O", positions=[[5.0, -3.0, 1.0]])
    assert energy == pytest.approx(_energy(calc, alone), abs=1e-10)


def test_pbc_without_cell(calc):
    atoms = _water()
    atoms.pbc = True
    with pytest.raises(InputError, match="pbc is True along a but lattice vector a is zero"):
        _energy(calc, atoms)


def test_cell_with_zero_volume(calc):
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], pbc=True)
    atoms.cell = [[4, 0, 0], [0, 4, 0], [4, 4, 0]]
    with pytest.raises(InputError, match="linearly dependent"):
        _energy(calc, atoms)


def test_slab_with_pbc_on_the_vacuum_axis(model):
    """pbc along the vacuum axis is computed as given: with a vacuum wider than the cutoff it
    equals the slab without pbc there (no spurious image interaction); with a tiny vacuum the
    slab interacts with its image (different energy), and atoms overlapping their image are
    refused."""
    calc = TDNCalculator(model, device="cpu")
    slab = Atoms(
        "C4O2",
        positions=[[0, 0, 0], [1.4, 0, 0], [0, 1.4, 0], [1.4, 1.4, 0], [0, 0, 1.2], [0, 0, 2.4]],
        cell=[2.8, 2.8, 2.4 + 6.0],
    )  # fmt: skip
    open_slab = slab.copy()
    open_slab.pbc = [True, True, False]
    closed = slab.copy()
    closed.pbc = True
    assert _energy(calc, closed) == pytest.approx(_energy(calc, open_slab), abs=1e-9)
    tiny = closed.copy()
    tiny.cell[2, 2] = 2.4 + 1.5  # 1.5 Å vacuum < 4 Å cutoff
    e_tiny = _energy(calc, tiny)
    assert np.isfinite(e_tiny) and abs(e_tiny - _energy(calc, open_slab)) > 1e-6
    overlap = closed.copy()
    overlap.cell[2, 2] = 2.4 + 0.1  # top O 0.1 Å below the image of the bottom layer
    with pytest.raises(InputError, match=r"0.100 Å from .*minimum distance"):
        _energy(calc, overlap)


def test_atoms_flying_apart_do_not_crash_the_neighbour_list(calc):
    """Atoms 1e6 Å apart made vesin divide by zero (SIGFPE killed the process); now the
    energy equals the sum of the two isolated fragments."""
    far = Atoms("COH2", positions=[[0, 0, 0], [1e6, 0, 0], [1e6 + 0.97, 0, 0], [-0.7, 0.7, 0]])
    parts = _energy(calc, far[[0, 3]]) + _energy(calc, far[[1, 2]])
    assert _energy(calc, far) == pytest.approx(parts, abs=1e-8)


def test_atom_leaving_a_periodic_surface(calc):
    """An atom 1e6 Å above a 2D-periodic layer (ASE's neighbour list took ~40 s on this
    oblique cell and vesin crawls on such spreads; found by the property test): the layer
    and the atom are listed separately, and the energy is the sum of the two."""
    cell = [[0.0, 1.9, 8.748], [1.5, 0.0, -8.63], [0.044, 0.0, -7.28]]
    layer = Atoms("COH", positions=[[1.45, -0.67, 0.48], [0.5, -0.6, -3.86], [1.35, 0.0, 0.0]],
                  cell=cell, pbc=[False, True, True])  # fmt: skip
    away = Atoms("O", positions=[[2.77, 1e6, -0.44]], cell=cell, pbc=[False, True, True])
    assert _energy(calc, layer + away) == pytest.approx(
        _energy(calc, layer) + _energy(calc, away), abs=1e-8
    )


def test_flat_periodic_cell_does_not_crash_the_neighbour_list(calc):
    """A wide, thin periodic cell (vesin's cell list cannot shrink it and crashed): same
    energy as a narrower cell where the in-plane images are also beyond the cutoff."""
    mol = _water()
    wide = mol.copy()
    wide.cell, wide.pbc = [2000.0, 2000.0, 3.2], True
    narrow = mol.copy()
    narrow.cell, narrow.pbc = [20.0, 20.0, 3.2], True
    assert _energy(calc, wide) == pytest.approx(_energy(calc, narrow), abs=1e-9)


def test_non_periodic_lattice_vector_is_ignored(calc):
    """A lattice vector along a non-periodic direction plays no part (vesin hung when one was
    nearly parallel to the periodic vector; found by the property test)."""
    mol = _water()
    wire = mol.copy()
    wire.cell, wire.pbc = [[4.0, 0, 0], [4.0, 1e-9, 0], [0, 0, 4.0]], [False, True, False]
    plain = mol.copy()
    plain.cell, plain.pbc = [[0.0, 0, 0], [4.0, 1e-9, 0], [0, 0, 0]], [False, True, False]
    assert _energy(calc, wire) == pytest.approx(_energy(calc, plain), abs=1e-10)


def test_far_from_origin_float32_keeps_precision(model):
    """float32 with positions ~1e5 Å used to round interatomic vectors to ~0.01 Å; positions
    are centred (and wrapped) in float64 first, so the energy matches the centred molecule."""
    calc = TDNCalculator(model, device="cpu", dtype="float32")
    mol = molecule("CH3OH")
    moved = mol.copy()
    moved.positions += [1e5, -3e5, 2e5]
    assert _energy(calc, moved) == pytest.approx(_energy(calc, mol), abs=2e-5)
    bulk = Atoms("CO", positions=[[0, 0, 0], [1.2, 0.1, 0]], cell=np.eye(3) * 5.0, pbc=True)
    shifted = bulk.copy()
    shifted.positions[1] += 1e5 * bulk.cell[0]  # unwrapped by 1e5 cells
    assert _energy(calc, shifted) == pytest.approx(_energy(calc, bulk), abs=2e-5)


def test_structure_too_large_for_memory(model):
    """Simulated cheaply with a small memory limit: refused before the model runs, naming
    the atoms, edges and memory."""
    calc = TDNCalculator(model, device="cpu", max_memory=1_000_000)
    big = Atoms("C", positions=[[0, 0, 0]], cell=np.eye(3) * 1.6, pbc=True).repeat(4)
    with pytest.raises(InputError, match=r"structure too large: 64 atoms with \d+ edges"):
        _energy(calc, big)
    assert np.isfinite(_energy(TDNCalculator(model, device="cpu"), big))  # default limit


def test_out_of_memory_in_the_model_is_a_clear_error(model, monkeypatch):
    calc = TDNCalculator(model, device="cpu")

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")

    monkeypatch.setattr(calc.model, "forward", oom)
    with pytest.raises(InputError, match=r"ran out of memory on cpu for 3 atoms"):
        _energy(calc, _water())


def test_non_finite_model_output_is_an_error(tiny_model):
    """A model whose numbers overflow never hands NaN/inf to the user."""
    broken = tiny_model()
    with torch.no_grad():
        broken.shift.fill_(float("inf"))
    with pytest.raises(TDNError, match=r"non-finite energy \(inf\) .*H2O"):
        _energy(TDNCalculator(broken, device="cpu"), _water())


def test_stress_of_a_non_3d_cell(calc):
    atoms = _water()
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
        atoms.get_stress()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"positions": np.zeros((3, 2))}, r"shape \[n_atoms, 3\]"),
        ({"pbc": [True, False]}, "pbc must be a bool or three bools"),
    ],
)
def test_malformed_arrays(kwargs, pattern):
    args = {"numbers": np.array([8, 1, 1]), "positions": np.eye(3), "cell": np.eye(3) * 5,
            "pbc": False} | kwargs  # fmt: skip
    with pytest.raises(InputError, match=pattern):
        validate_structure(args["numbers"], args["positions"], args["cell"], args["pbc"])


# --------------------------------------------------------------------------- devices, dtypes


def test_cuda_requested_without_cuda(model):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(InputError, match="CUDA is not available"):
        TDNCalculator(model, device="cuda")


def test_unknown_device():
    with pytest.raises(InputError, match=r"unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.parametrize("dtype", ["float16", torch.float16, "bfloat16"])
def test_half_precision_refused(model, dtype):
    with pytest.raises(InputError, match=r"unsupported dtype .*use 'float32' or 'float64'"):
        resolve_dtype(dtype)
    with pytest.raises(InputError, match="float32"):
        TDNCalculator(model, device="cpu", dtype=dtype)


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture
def ckpt(tmp_path, model):
    return save_model(model, tmp_path / "tiny.safetensors")


def test_truncated_checkpoint(tmp_path, ckpt):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(ckpt.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"cut.safetensors.* is truncated"):
        TDNCalculator(str(bad), device="cpu")


def test_empty_checkpoint(tmp_path):
    bad = tmp_path / "empty.safetensors"
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"truncated \(0 bytes\)"):
        load_model(bad, device="cpu")


def test_checkpoint_sha256_mismatch(tmp_path, ckpt):
    data = bytearray(ckpt.read_bytes())
    data[-5] ^= 0xFF  # one weight changed: still a valid file, but not the published one
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"sha256 mismatch .*download again"):
        load_checkpoint_file(bad, device="cpu", expected_sha256=sha256_file(ckpt))


def test_local_checkpoint_with_changed_weights(tmp_path, ckpt):
    """No published sha256 for a local file, but the content checksum saved in it catches a
    changed weight."""
    data = bytearray(ckpt.read_bytes())
    data[-5] ^= 0x01
    bad = tmp_path / "edited.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"changed after it was saved"):
        TDNCalculator(str(bad), device="cpu")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickle_payload_refused_without_running_it(tmp_path, how):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.pt"
    if how == "pickle":
        evil.write_bytes(pickle.dumps({"w": _Payload(marker)}))
    else:
        torch.save({"w": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="never unpickles"):
        TDNCalculator(str(evil), device="cpu")
    assert not marker.exists()


def test_checkpoint_with_overflowing_weights(tmp_path, tiny_model):
    model = tiny_model()
    with torch.no_grad():
        model.shift.fill_(1e39)  # finite in float64, inf in the float32 model that loads it
    path = save_model(model, tmp_path / "huge.safetensors")
    with pytest.raises(CheckpointError, match=r"corrupt: weights \['shift'\] hold NaN, inf"):
        load_model(path, device="cpu")


def test_config_weights_mismatch(tmp_path, ckpt):
    raw = ckpt.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    config = json.loads(header["__metadata__"]["tdn_config"])
    config["channels"] = 16
    header["__metadata__"]["tdn_config"] = json.dumps(config)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    bad = tmp_path / "mismatch.safetensors"
    bad.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    with pytest.raises(CheckpointError, match=r"do not match its config: .*shape mismatch"):
        load_model(bad, device="cpu")


def test_directory_as_checkpoint(tmp_path):
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="does not exist or is not a file"):
        load_checkpoint_file(folder, device="cpu")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing.safetensors' does not exist"):
        TDNCalculator(str(tmp_path / "missing.safetensors"), device="cpu")


@pytest.fixture
def manifest(tmp_path, ckpt):
    path = tmp_path / "manifest.json"
    entry = {
        "file": "tdn-tiny-hco.safetensors",
        "sha256": sha256_file(ckpt),
        "elements": ["H", "C", "O"],
        "url": "http://127.0.0.1:9/tdn-tiny-hco.safetensors",  # never contacted
    }
    path.write_text(json.dumps({"format_version": 1, "models": {"tdn-tiny-hco": entry}}))
    return path


def test_unknown_model_name_suggests_close_names(manifest):
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'tdn-tiny-hc'.*Did you mean"):
        TDNCalculator("tdn-tiny-hc", device="cpu", manifest=manifest)


def test_offline_and_not_cached(manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("TDN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TDN_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"not in the cache .*TDN_OFFLINE is set"):
        resolve_model("tdn-tiny-hco", manifest=manifest)


def test_every_catalogue_error_is_a_tdn_error():
    for cls in (InputError, UnsupportedElementError, CheckpointError, ModelNotFoundError):
        assert issubclass(cls, TDNError)


# --------------------------------------------------------------------------- relaxation


def test_diverging_relaxation_is_stopped_and_reported():
    """A potential whose energy falls without bound as atoms fly apart: the relaxation stops
    with ``diverged`` and is not reported as converged."""
    from ase.calculators.calculator import Calculator, all_changes

    from tdn_calc.relax import relax

    class Exploding(Calculator):
        implemented_properties = ("energy", "forces")

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            r = self.atoms.positions - self.atoms.positions.mean(axis=0)
            self.results = {"energy": -10.0 * float((r**2).sum()), "forces": 20.0 * r}

    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]])
    result = relax(atoms, Exploding(), fmax=0.05, steps=500, warn=False)
    assert not result.converged and result.diverged
    assert result.reason.startswith("diverged:")
    assert np.isfinite(result.atoms.positions).all()


# --------------------------------------------------------------------------- tdn-relax CLI


@pytest.fixture
def cli(tmp_path, monkeypatch, model, ckpt):
    """Run ``tdn-relax`` in ``tmp_path`` (holding ``mols.xyz`` and the tiny checkpoint) with
    click's runner; returns ``run(*args, model="tiny.safetensors") -> Result``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TDN_CACHE_DIR", str(tmp_path / "cache"))
    write(tmp_path / "mols.xyz", [molecule("H2O"), molecule("CH4")])

    def run(*args: str, model: str | None = "tiny.safetensors"):
        extra = ["-m", model] if model else []
        return CliRunner().invoke(relax_main, [*args, *extra, "--steps", "5", "-q"])

    return run


def _clean_exit(result, code: int, *fragments: str) -> None:
    """The CLI exited with ``code`` through click (no traceback) naming every fragment."""
    assert isinstance(result.exception, SystemExit | None), result.exception
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


MALFORMED = {
    "bad.xyz": "3\nbroken frame\nO 0 0\nH 1 0 0\n",
    "bad.extxyz": '2\nProperties=species:S:1:pos:R:3 pbc="F F F"\nO 0 0 0\nH 1 0 x\n',
    "bad.cif": "data_x\n_cell_length_a 5\n_cell_length_b\nloop_\n_atom_site_label\nC1 0.1\n",
    "POSCAR": "title\n1.0\n5 0 0\n0 5\n0 0 5\nC\n2\nDirect\n0 0 0\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_cli_malformed_structure_files(cli, tmp_path, name):
    (tmp_path / name).write_text(MALFORMED[name])
    _clean_exit(cli(name), 1, f"cannot read '{name}'")


def test_cli_missing_input_file(cli):
    _clean_exit(cli("nothere.xyz"), 1, "input file 'nothere.xyz' does not exist")


def test_cli_directory_as_input_or_output(cli, tmp_path):
    (tmp_path / "folder").mkdir()
    _clean_exit(cli("folder"), 2, "'folder' is a directory")
    _clean_exit(cli("mols.xyz", "-o", "folder"), 2, "'folder' is a directory")


def test_cli_output_in_a_missing_directory_is_created(cli, tmp_path):
    _clean_exit(cli("mols.xyz", "-o", "new/sub/out.extxyz", "--optimizer", "FIRE"), 3)  # 5 steps
    assert len(read(tmp_path / "new/sub/out.extxyz", ":")) == 2


def test_cli_output_in_an_unwritable_directory(cli, tmp_path):
    """Tests run as root, so a chmod-read-only directory would not block the write; a path
    whose parent is a regular file cannot be created by anyone."""
    (tmp_path / "plain").write_text("a file, not a directory")
    _clean_exit(cli("mols.xyz", "-o", "plain/out.extxyz"), 1, "plain/out.extxyz")


def test_cli_output_equal_to_input(cli, tmp_path):
    before = (tmp_path / "mols.xyz").read_bytes()
    _clean_exit(cli("mols.xyz", "-o", "mols.xyz"), 1, "is also an input")
    assert (tmp_path / "mols.xyz").read_bytes() == before


def test_cli_unknown_model_name_suggests(cli, manifest, monkeypatch):
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))
    _clean_exit(cli("mols.xyz", model="tdn-tiny-hc"), 2, "unknown model", "Did you mean")


def test_cli_missing_checkpoint_path(cli):
    _clean_exit(cli("mols.xyz", model="gone.safetensors"), 2, "No checkpoint file")


def test_cli_offline_model_not_cached(cli, manifest, monkeypatch):
    monkeypatch.setenv("TDN_MANIFEST", str(manifest))
    monkeypatch.setenv("TDN_OFFLINE", "1")
    _clean_exit(cli("mols.xyz", model="tdn-tiny-hco"), 1, "TDN_OFFLINE is set")


def test_cli_truncated_and_pickled_checkpoints(cli, tmp_path, ckpt):
    (tmp_path / "cut.safetensors").write_bytes(ckpt.read_bytes()[:1000])
    _clean_exit(cli("mols.xyz", model="cut.safetensors"), 1, "truncated")
    marker = tmp_path / "payload-ran"
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    _clean_exit(cli("mols.xyz", model="evil.safetensors"), 1, "never unpickles")
    assert not marker.exists()


def test_cli_cuda_without_cuda_and_half_precision(cli):
    if not torch.cuda.is_available():
        _clean_exit(cli("mols.xyz", "-d", "cuda"), 1, "CUDA is not available")
    _clean_exit(cli("mols.xyz", "--dtype", "float16"), 2, "'float16' is not one of")


def test_cli_diverging_relaxation_is_reported_not_converged(cli, tmp_path, tiny_model,
                                                           monkeypatch):
    """A model whose energy falls without bound as the atoms fly apart (relax_testing's
    ``Runaway``, behind the real checkpoint loading: a random model with a huge energy scale
    diverged only most of the time): exit 3, and the output frames say why."""
    from relax_testing import Runaway

    from tdn_calc import checkpoint

    real = checkpoint.load_checkpoint_file

    def load(path, **kwargs):
        real(path, **kwargs)  # the file is read and checked as usual
        return Runaway(strength=1e4)  # gone within the 5 steps the fixture allows

    monkeypatch.setattr(checkpoint, "load_checkpoint_file", load)
    save_model(tiny_model(), tmp_path / "wild.safetensors")
    result = cli("mols.xyz", "-o", "wild.extxyz", "--fmax", "0.01", model="wild.safetensors")
    _clean_exit(result, 3)
    frames = read(tmp_path / "wild.extxyz", ":")
    assert [f.info["converged"] for f in frames] == [False, False]
    assert all(f.info["relax_reason"].startswith("diverged:") for f in frames)
