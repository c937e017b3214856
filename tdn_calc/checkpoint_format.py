"""The checkpoint file format: reading a safetensors header and the tdn-calc metadata.

The layer below :mod:`tdn_calc.checkpoint` (saving and loading models) and
:mod:`tdn_calc.registry` (which shows a model's card): it checks that a file is a complete
safetensors file and parses its config and card without torch or the model. The metadata
keys are described in :mod:`tdn_calc.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError
from .nn.config import TDNConfig

FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header, bytes
_FOREIGN_MAGIC = {
    b"PK\x03\x04": "a zip archive (a torch.save checkpoint?)",
    b"\x80": "a Python pickle (a torch.save checkpoint?)",
    b"\x89HDF": "an HDF5 file",
}


def content_sha256(config_json: str, body: bytes) -> str:
    """sha256 of the config JSON and the tensor bytes: detects changed weights or config in a
    checkpoint that has no published sha256 (a local file)."""
    return hashlib.sha256(config_json.encode() + b"\0" + body).hexdigest()


def read_header(path: Path) -> tuple[dict[str, Any], bytes]:
    """Check that ``path`` is a complete safetensors file; return its header and raw bytes."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    raw = path.read_bytes()
    # a safetensors header is JSON: byte 8 is "{" (its 8-byte length may start with 0x80)
    looks_safetensors = raw[8:9] == b"{"
    for magic, what in _FOREIGN_MAGIC.items():
        if raw.startswith(magic) and not looks_safetensors:
            raise CheckpointError(
                f"{str(path)!r} is {what}, not a safetensors file; tdn-calc never unpickles "
                "checkpoints. Convert it with tdn_calc.checkpoint.save_model in a trusted session"
            )
    if len(raw) < 8:
        raise CheckpointError(
            f"{str(path)!r} is truncated ({len(raw)} bytes): not a safetensors file"
        )
    (n_header,) = struct.unpack("<Q", raw[:8])
    if n_header > _MAX_HEADER:
        raise CheckpointError(
            f"{str(path)!r} is not a safetensors file (header length {n_header} is implausible)"
        )
    if 8 + n_header > len(raw):
        raise CheckpointError(
            f"{str(path)!r} is truncated: header needs {8 + n_header} bytes, file has {len(raw)}"
        )
    try:
        header = json.loads(raw[8 : 8 + n_header])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{str(path)!r} is not a safetensors file (header is not a map)")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is a corrupt safetensors file (bad tensor entry in the header: "
            f"{type(exc).__name__}: {exc})"
        ) from exc
    expected = 8 + n_header + max(ends, default=0)
    if len(raw) < expected:
        raise CheckpointError(
            f"{str(path)!r} is truncated: expected {expected} bytes, file has {len(raw)}"
        )
    return header, raw


def read_metadata(path: str | os.PathLike) -> tuple[TDNConfig, dict[str, Any]]:
    """The config and model card of a checkpoint, without building the model."""
    header, _ = read_header(Path(path))
    return parse_metadata(Path(path), header.get("__metadata__") or {})


def parse_metadata(path: Path, meta: dict[str, str]) -> tuple[TDNConfig, dict[str, Any]]:
    version = meta.get("tdn_format_version")
    if version is None or "tdn_config" not in meta:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file but not a tdn-calc checkpoint "
            "(no tdn_format_version / tdn_config metadata)"
        )
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format version {version}; this tdn-calc reads "
            f"version {FORMAT_VERSION}. Upgrade tdn-calc"
        )
    try:
        config = TDNConfig.from_json(meta["tdn_config"])
        card = json.loads(meta.get("tdn_card", "{}"))
    except (ConfigError, json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{str(path)!r} has an invalid config or model card: {exc}") from exc
    return config, card
