"""Small utilities shared by tests (import as ``from helpers import ...``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tdn_calc import model_checks


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily change torch's default dtype (e3nn builds its buffers in it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def random_o3(seed: int, improper: bool = False) -> torch.Tensor:
    """A seeded Haar-random ``[3, 3]`` float64 rotation (the library's sampler), times -1
    when ``improper``."""
    rotation = torch.from_numpy(model_checks.random_o3(1, seed)[0])
    return -rotation if improper else rotation


def lj_teacher(sigma: float = 2.3, epsilon: float = 0.4, device: str = "cpu"):
    """A ``package.module:factory`` teacher for tests: Lennard-Jones that remembers ``device``."""
    from ase.calculators.lj import LennardJones

    calc = LennardJones(sigma=sigma, epsilon=epsilon, rc=3 * sigma)
    calc.device = device
    return calc


def catalysis_manifest(tmp_path, threshold: float,
                       committee: tuple[str, float] | None = None,
                       curvature: float | None = None) -> str:
    """A copy of the shipped registry (written into ``tmp_path``) with the uncertainty
    threshold of tdn-catalysis set to ``threshold`` and, when given, its committee partner
    ``(name, force threshold eV/Å)`` and its adsorbate-curvature threshold (eV/Å²); returns
    its path (for ``TDN_MANIFEST``)."""
    import json
    from importlib import resources
    from pathlib import Path

    shipped = Path(str(resources.files("tdn_calc.models").joinpath("manifest.json")))
    data = json.loads(shipped.read_text())
    for other in data["models"].values():  # files stay where they are shipped
        other["file"] = str(shipped.parent / other["file"])
        if other.get("uncertainty"):
            other["uncertainty"]["file"] = str(shipped.parent / other["uncertainty"]["file"])
    entry = data["models"]["tdn-catalysis"]
    entry["uncertainty"]["threshold"] = threshold
    entry["uncertainty"].pop("committee", None)
    entry["uncertainty"].pop("curvature_threshold", None)
    if curvature is not None:
        entry["uncertainty"]["curvature_threshold"] = curvature
    if committee is not None:
        entry["uncertainty"]["committee"] = {"model": committee[0],
                                             "force_threshold": committee[1]}
    tag = f"{threshold:g}" + (f"-{committee[0]}-{committee[1]:g}" if committee else "") + (
        f"-c{curvature:g}" if curvature is not None else "")
    path = tmp_path / f"manifest-{tag}.json"
    path.write_text(json.dumps(data))
    return str(path)
