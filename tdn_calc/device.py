"""Resolution of user-facing ``device`` and ``dtype`` options (shared by checkpoint loading
and the ASE calculator)."""

from __future__ import annotations

import os

import torch

from .errors import InputError

_MEMINFO = "/proc/meminfo"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a
    ``torch.device`` are checked to exist."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {device!r} asked for CUDA, but CUDA is not available "
                "(no GPU or a CPU-only torch build); use device='cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise InputError(
                f"device {device!r} does not exist: there are {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    elif resolved.type != "cpu":
        raise InputError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtypes) -> torch dtype. Half precision is
    refused: the energies and forces need at least float32."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = str(dtype).strip().lower()
    name = {"float": "float32", "double": "float64", "fp32": "float32", "fp64": "float64"}.get(
        name, name
    )
    if name not in _DTYPES:
        raise InputError(f"unsupported dtype {dtype!r}; use 'float32' or 'float64'")
    return _DTYPES[name]


def available_memory(device: torch.device) -> int:
    """Bytes of memory free for new tensors on ``device``: free GPU memory for CUDA, else the
    system's ``MemAvailable`` (Linux ``/proc/meminfo``; free physical pages elsewhere)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open(_MEMINFO, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
