"""The peers' virtual environment: ``benchmarks/.venv-peers`` (created once, then reused).

mace-torch pins e3nn 0.4.4 while tdn-calc needs e3nn 0.6, so the peers live in their own
environment. It gets the CPU build of torch 2.13.0 (the same torch as the project; pip takes
it from the local wheel) and pinned peer releases, with torch held at that version by a
constraints file so that no peer can pull a CUDA build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

TORCH = "torch==2.13.0"
PEER_PACKAGES = ("mace-torch==0.3.16", "sevenn==0.10.4", "chgnet==0.4.2")
DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".venv-peers"


def peer_env(threads: int) -> dict[str, str]:
    """Environment for a peer process: ``threads`` OpenMP/MKL threads and the huge-page
    setting tdn_calc uses (``import tdn_calc`` sets ``THP_MEM_ALLOC_ENABLE=1`` unless the user
    chose), so peers and TDN are timed on equal footing."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "1")}


def venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def _peers_installed(python: Path) -> bool:
    probe = "import torch, mace, sevenn, chgnet; assert torch.__version__.endswith('+cpu')"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_peer_venv(path: Path = DEFAULT_VENV, *, log=sys.stderr) -> Path:
    """Create ``path`` with torch (CPU) and the peers unless it already has them.

    Returns the environment's Python. Installing takes a few minutes and needs PyPI; later
    calls only check that the packages import (a few seconds).
    """
    python = venv_python(path)
    if python.exists() and _peers_installed(python):
        return python
    print(f"creating the peers' environment in {path} (a few minutes, once)", file=log)
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(path)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write(TORCH + "\n")  # keeps the CPU build: no peer may upgrade torch
    subprocess.run([*pip, "-c", pins.name, *PEER_PACKAGES], check=True)
    Path(pins.name).unlink()
    if not _peers_installed(python):
        raise RuntimeError(f"{path}: torch (CPU build), mace, sevenn or chgnet does not import")
    return python
