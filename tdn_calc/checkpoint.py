"""Safe model checkpoints: one safetensors file per model.

The file holds the weights (``model.state_dict()``) and, in the safetensors metadata
(a str -> str map), four entries:

* ``tdn_format_version``: the checkpoint format version (``"1"``);
* ``tdn_config``: the :class:`~tdn_calc.nn.config.TDNConfig` as JSON;
* ``tdn_card``: the model card as JSON (see :func:`make_card`);
* ``tdn_content_sha256``: sha256 of the config JSON and the tensor bytes, checked on load
  (optional: older files without it still load).

Loading parses the safetensors header, checks the file is complete, and reads tensors with
``safetensors`` only: pickled PyTorch checkpoints are refused without being unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from ase.data import chemical_symbols
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .checkpoint_format import (
    FORMAT_VERSION,
    content_sha256,
    parse_metadata,
    read_header,
)
from .checkpoint_format import read_metadata as read_metadata  # public here too
from .device import resolve_device, resolve_dtype
from .errors import CheckpointError
from .fileio import atomic_write
from .nn.config import TDNConfig
from .registry import CHECKPOINT_SUFFIXES, model_path  # model_path checks the sha256

UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}


def make_card(model: torch.nn.Module, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model card stored with a checkpoint.

    Fields: ``name``, ``description``, ``elements`` (symbols), ``cutoff`` (Å),
    ``atomic_energies`` (symbol -> eV), ``units``, ``trained_on`` (``reference_method``,
    ``dataset``, ``dataset_sha256``), ``metrics``, ``equivariance_error``,
    ``tdn_calc_version``, ``created`` (UTC ISO 8601). Entries of ``card`` override the defaults,
    except elements, cutoff, atomic energies and units, which always come from the config.
    """
    from . import __version__

    config: TDNConfig = model.config
    energies = config.atomic_energies or [0.0] * len(config.elements)
    out: dict[str, Any] = {
        "name": None,
        "description": "",
        "trained_on": {"reference_method": None, "dataset": None, "dataset_sha256": None},
        "metrics": {},
        "equivariance_error": None,
        "tdn_calc_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.update(card or {})
    out.update(
        elements=[chemical_symbols[z] for z in config.elements],
        cutoff=config.cutoff,
        atomic_energies={
            chemical_symbols[z]: e for z, e in zip(config.elements, energies, strict=True)
        },
        units=dict(UNITS),
    )
    return out


def save_model(
    model: torch.nn.Module, path: str | os.PathLike, card: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (a TDNModel) with its config and model card to ``path`` atomically.

    Returns the path written. An existing file at ``path`` is replaced only once the new
    file is complete.
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "tdn_format_version": str(FORMAT_VERSION),
        "tdn_config": model.config.to_json(),
        "tdn_card": json.dumps(make_card(model, card), sort_keys=True),
    }
    # the tensor bytes do not depend on the metadata: save once to learn them, then again
    # with their checksum
    unsigned = st_save(tensors, metadata=metadata)
    body = unsigned[8 + int.from_bytes(unsigned[:8], "little") :]
    metadata["tdn_content_sha256"] = content_sha256(metadata["tdn_config"], body)
    data = st_save(tensors, metadata=metadata)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return path


def _check_state_dict(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {list(state[k].shape)} vs config {list(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing weights {missing}")
        if unexpected:
            parts.append(f"unexpected weights {unexpected}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes))
        raise CheckpointError(
            f"weights in {str(path)!r} do not match its config: " + ", ".join(parts)
        )


def load_checkpoint_file(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    expected_sha256: str | None = None,
) -> torch.nn.Module:
    """Load a TDNModel from a safetensors checkpoint file (see :func:`load_model`)."""
    from .nn.model import TDNModel

    path = Path(path)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    header, raw = read_header(path)
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual.lower() != expected_sha256.lower():
            raise CheckpointError(
                f"sha256 mismatch for {str(path)!r}: expected {expected_sha256}, got {actual}; "
                "the file is corrupt or not the published one (delete it and download again)"
            )
    config, card = parse_metadata(path, header.get("__metadata__") or {})
    try:
        state = st_load(raw)
    except SafetensorError as exc:
        raise CheckpointError(f"{str(path)!r} is a corrupt safetensors file: {exc}") from exc
    model = TDNModel(config)
    _check_state_dict(path, model, state)
    model.load_state_dict(state, strict=True)
    not_finite = [  # also values too large for the model's float32 weights
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if not_finite:
        raise CheckpointError(
            f"{str(path)!r} is corrupt: weights {not_finite[:5]} hold NaN, inf or values too "
            "large for float32"
        )
    meta = header.get("__metadata__") or {}
    if "tdn_content_sha256" in meta:  # files written before this check have none
        body = raw[8 + int.from_bytes(raw[:8], "little") :]
        if content_sha256(meta["tdn_config"], body) != meta["tdn_content_sha256"]:
            raise CheckpointError(
                f"{str(path)!r} is corrupt: its weights or config changed after it was saved "
                "(content checksum mismatch); download or copy it again"
            )
    model.card = card
    model.sha256 = hashlib.sha256(raw).hexdigest()  # finds its registry entry (thresholds)
    return model.to(device=torch_device, dtype=torch_dtype).eval()


def load_model(
    path_or_name: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    manifest: str | os.PathLike | None = None,
) -> torch.nn.Module:
    """Load a TDNModel from a checkpoint path or a registered model name.

    Args:
        path_or_name: a ``.safetensors`` file, or a model name/alias from the registry (which
            is downloaded once if needed and always checked against its sha256).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        dtype: ``"float32"`` or ``"float64"``.
        manifest: registry manifest to resolve names in (default: the shipped one, or
            ``$TDN_MANIFEST``).

    Returns:
        The model in eval mode, with its model card (a dict) as ``model.card`` and the
        sha256 of its file as ``model.sha256``.
    """
    path = Path(path_or_name)
    if not path.is_file() and (path.suffix in CHECKPOINT_SUFFIXES or os.sep in str(path_or_name)):
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    return load_checkpoint_file(model_path(path_or_name, manifest), device=device, dtype=dtype)
