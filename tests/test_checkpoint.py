"""Checkpoints: round trip, model card, and refusal of unsafe or broken files."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct

import pytest
import torch
from ase.build import molecule

from tdn_calc.checkpoint import load_checkpoint_file, load_model, read_metadata, save_model
from tdn_calc.device import resolve_device, resolve_dtype
from tdn_calc.errors import CheckpointError, InputError, ModelNotFoundError
from tdn_calc.graph import atoms_to_graph


def _energy_forces(model, dtype=torch.float64):
    graph = atoms_to_graph(molecule("CH3CH2OH"), model.cutoff, dtype=dtype)
    out = model(graph)
    return out["energy"], out["forces"]


def test_round_trip_gives_identical_predictions(tmp_path, tiny_model):
    model = tiny_model(atomic_energies=[-13.6, -1030.0, -2040.0])
    path = save_model(model, tmp_path / "m.safetensors", card={"name": "tiny", "metrics": {"x": 1}})
    loaded = load_model(path, device="cpu", dtype="float64")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    e0, f0 = _energy_forces(model)
    e1, f1 = _energy_forces(loaded)
    assert torch.equal(e0, e1) and torch.equal(f0, f1)
    assert loaded.card["name"] == "tiny" and loaded.card["metrics"] == {"x": 1}


def test_card_holds_config_derived_fields(tmp_path, tiny_model):
    model = tiny_model(atomic_energies=[-1.0, -2.0, -3.0])
    card = {
        "name": "t",
        "elements": ["Xx"],  # overridden by the config
        "trained_on": {"reference_method": "GFN2-xTB", "dataset": "d", "dataset_sha256": "ab"},
        "equivariance_error": 1e-7,
    }
    path = save_model(model, tmp_path / "m.safetensors", card=card)
    config, stored = read_metadata(path)
    assert config == model.config
    assert stored["elements"] == ["H", "C", "O"]
    assert stored["atomic_energies"] == {"H": -1.0, "C": -2.0, "O": -3.0}
    assert stored["cutoff"] == model.config.cutoff
    assert stored["units"]["energy"] == "eV" and stored["units"]["stress"] == "eV/Å^3"
    assert stored["trained_on"]["reference_method"] == "GFN2-xTB"
    assert stored["equivariance_error"] == 1e-7
    assert stored["tdn_calc_version"] and stored["created"].endswith("+00:00")


def test_float32_load_and_dtype_device_options(tmp_path, tiny_model):
    path = save_model(tiny_model(), tmp_path / "m.safetensors")
    loaded = load_model(path, device="cpu")  # float32 by default
    assert next(loaded.parameters()).dtype == torch.float32
    e32, _ = _energy_forces(loaded, torch.float32)
    e64, _ = _energy_forces(tiny_model())
    assert abs(float(e32) - float(e64)) < 1e-4
    for bad in ("float16", "bfloat16", torch.float16, "int8"):
        with pytest.raises(InputError, match="float32"):
            load_model(path, device="cpu", dtype=bad)


def test_device_resolution():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert (
        resolve_dtype("float64") is torch.float64 and resolve_dtype(torch.float32) is torch.float32
    )
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, tiny_model, monkeypatch):
    path = save_model(tiny_model(), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    import tdn_calc.fileio as fileio

    monkeypatch.setattr(fileio.os, "fsync", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_model(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["pickle", "pickle_protocol0", "torch_save"])
def test_pickles_are_refused_without_being_executed(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"w": _Exploit(marker)}))
    elif kind == "pickle_protocol0":  # no magic byte: refused as "not a safetensors file"
        path.write_bytes(pickle.dumps({"w": _Exploit(marker)}, protocol=0))
    else:
        torch.save({"w": _Exploit(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"never unpickles|not a safetensors file"):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_truncated_file(tmp_path, tiny_model):
    path = save_model(tiny_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    for cut in (len(data) - 10, 200, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            load_model(bad, device="cpu")


def test_wrong_file_types(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello world, this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(text, device="cpu")
    # a valid safetensors file that is not a tdn-calc checkpoint
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a tdn-calc checkpoint"):
        load_model(other, device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors", device="cpu")
    with pytest.raises(ModelNotFoundError):
        load_model("no-such-model-name", device="cpu")


def test_sha256_mismatch(tmp_path, tiny_model):
    path = save_model(tiny_model(), tmp_path / "m.safetensors")
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    load_checkpoint_file(path, device="cpu", expected_sha256=good)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint_file(path, device="cpu", expected_sha256="0" * 64)


def _rewrite_metadata(path, out, edit):
    """Copy a checkpoint with its header changed by ``edit(header)``."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    out.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    return out


def test_config_weights_mismatch_names_the_keys(tmp_path, tiny_model):
    path = save_model(tiny_model(), tmp_path / "m.safetensors")

    def wider(header):
        config = json.loads(header["__metadata__"]["tdn_config"])
        config["channels"] = 16
        header["__metadata__"]["tdn_config"] = json.dumps(config)

    bad = _rewrite_metadata(path, tmp_path / "wide.safetensors", wider)
    with pytest.raises(CheckpointError, match=r"shape mismatch .*embedding\.weight"):
        load_model(bad, device="cpu")

    def deeper(header):
        config = json.loads(header["__metadata__"]["tdn_config"])
        config["num_layers"] = 2
        header["__metadata__"]["tdn_config"] = json.dumps(config)

    bad = _rewrite_metadata(path, tmp_path / "deep.safetensors", deeper)
    with pytest.raises(CheckpointError, match=r"missing weights \['blocks\.1\."):
        load_model(bad, device="cpu")

    def renamed(header):
        header["extra.weight"] = header.pop("head.0.weight")

    bad = _rewrite_metadata(path, tmp_path / "renamed.safetensors", renamed)
    with pytest.raises(CheckpointError, match=r"missing weights \['head\.0\.weight'\].*extra"):
        load_model(bad, device="cpu")

    def broken_config(header):
        header["__metadata__"]["tdn_config"] = '{"lmax": 1}'

    bad = _rewrite_metadata(path, tmp_path / "noelem.safetensors", broken_config)
    with pytest.raises(CheckpointError, match="invalid config"):
        load_model(bad, device="cpu")

    def future(header):
        header["__metadata__"]["tdn_format_version"] = "99"

    bad = _rewrite_metadata(path, tmp_path / "future.safetensors", future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_model(bad, device="cpu")


def test_load_on_cuda(tmp_path, tiny_model, cuda):
    path = save_model(tiny_model(), tmp_path / "m.safetensors")
    model = load_model(path, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    graph = atoms_to_graph(molecule("H2O"), model.cutoff, device=cuda)
    assert model(graph)["forces"].device.type == "cuda"
