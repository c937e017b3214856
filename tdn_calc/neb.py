"""Minimum-energy paths with the nudged elastic band (ASE's ``ase.mep.NEB``): IDPP
interpolation, optional climbing image, band relaxed with FIRE or BFGS. :func:`run_neb`
returns the path, barrier and reaction energy; :func:`plot_profile` draws the profile."""

from __future__ import annotations

import itertools
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.mep import NEB

from .errors import InputError
from .relax.result import ConvergenceWarning
from .relax.single import relax, resolve_optimizer, snapshot


@dataclass
class NEBResult:
    """A relaxed band.

    Attributes:
        images: every image (endpoints included) with a ``SinglePointCalculator``.
        energies: ``[n_images]`` image energies, eV.
        distances: ``[n_images]`` cumulative path length (mass-unweighted, Å).
        converged: the band's max NEB force fell below ``fmax``.
        n_steps: optimizer steps on the band.
        fmax: final max NEB force, eV/Å.
        climb: a climbing image was used (the highest interior image).
        wall_time: seconds.
    """

    images: list[Atoms]
    energies: np.ndarray
    distances: np.ndarray
    converged: bool
    n_steps: int
    fmax: float
    climb: bool
    wall_time: float
    endpoint_info: dict[str, Any] = field(default_factory=dict)

    @property
    def barrier(self) -> float:
        """Forward barrier ``max(E) - E(initial)``, eV."""
        return float(self.energies.max() - self.energies[0])

    @property
    def reverse_barrier(self) -> float:
        """Reverse barrier ``max(E) - E(final)``, eV."""
        return float(self.energies.max() - self.energies[-1])

    @property
    def reaction_energy(self) -> float:
        """``E(final) - E(initial)``, eV."""
        return float(self.energies[-1] - self.energies[0])

    @property
    def highest_image(self) -> int:
        return int(np.argmax(self.energies))

    def to_dict(self) -> dict[str, Any]:
        return {
            "barrier_eV": self.barrier,
            "reverse_barrier_eV": self.reverse_barrier,
            "reaction_energy_eV": self.reaction_energy,
            "highest_image": self.highest_image,
            "energies_eV": self.energies.tolist(),
            "relative_energies_eV": (self.energies - self.energies[0]).tolist(),
            "path_length_A": self.distances.tolist(),
            "converged": self.converged,
            "n_steps": self.n_steps,
            "fmax": self.fmax,
            "climb": self.climb,
            "n_images": len(self.images),
            "wall_time_s": round(self.wall_time, 3),
            **self.endpoint_info,
        }


def path_distances(images: Sequence[Atoms]) -> np.ndarray:
    """``[n_images]`` cumulative distance along the path (minimum image convention), Å."""
    from ase.geometry import find_mic

    out = [0.0]
    for a, b in itertools.pairwise(images):
        d = b.positions - a.positions
        if a.pbc.any():
            d, _ = find_mic(d, a.cell, a.pbc)
        out.append(out[-1] + float(np.linalg.norm(d)))
    return np.array(out)


def run_neb(
    initial: Atoms,
    final: Atoms,
    calculator_factory: Callable[[], Calculator],
    *,
    n_images: int = 7,
    climb: bool = False,
    fmax: float = 0.05,
    steps: int = 500,
    optimizer: str = "FIRE",
    spring: float = 0.1,
    relax_endpoints: bool = True,
    interpolation: str = "idpp",
) -> NEBResult:
    """Relax a nudged elastic band between ``initial`` and ``final`` (not modified).

    Args:
        initial, final: the end points: same atoms in the same order (constraints of
            ``initial``, e.g. ``FixAtoms``, apply to every image).
        calculator_factory: makes one calculator per image.
        n_images: images in the band, end points included (>= 3).
        climb: climbing image NEB (the highest image climbs to the saddle point).
        fmax: convergence threshold on the NEB forces (and on end-point relaxation), eV/Å.
        steps: maximum optimizer steps for the band (and for each end point).
        optimizer: ``"FIRE"`` or ``"BFGS"`` (any name :func:`resolve_optimizer` knows).
        spring: spring constant, eV/Å^2.
        relax_endpoints: relax the end points first (recommended).
        interpolation: ``"idpp"`` or ``"linear"``.
    """
    if n_images < 3:
        raise InputError(f"need at least 3 images (end points included), got {n_images}")
    if len(initial) != len(final) or (initial.numbers != final.numbers).any():
        raise InputError(
            f"initial ({initial.get_chemical_formula()}, {len(initial)} atoms) and final "
            f"({final.get_chemical_formula()}, {len(final)} atoms) must have the same atoms "
            "in the same order"
        )
    if interpolation not in ("idpp", "linear"):
        raise InputError(f"interpolation must be 'idpp' or 'linear', got {interpolation!r}")
    opt_class = resolve_optimizer(optimizer)
    start = time.perf_counter()
    ends = [initial.copy(), final.copy()]
    for end in ends:
        end.set_constraint(initial.constraints)
    info: dict[str, Any] = {}
    if relax_endpoints:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            done = [relax(e, calculator_factory(), fmax=fmax, steps=steps) for e in ends]
        ends = [r.atoms for r in done]
        info = {"endpoints_converged": [r.converged for r in done]}
    images = [ends[0].copy()]
    images += [ends[0].copy() for _ in range(n_images - 2)]
    images.append(ends[1].copy())
    for image in images:
        image.calc = calculator_factory()
    band = NEB(images, k=spring, climb=climb, method="improvedtangent")
    band.interpolate(method=interpolation, mic=bool(initial.pbc.any()),
                     apply_constraint=True)  # fmt: skip
    opt = opt_class(band, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = band.get_forces()
    band_fmax = float(np.sqrt((forces**2).sum(axis=1).max())) if len(forces) else 0.0
    frames = [snapshot(image) for image in images]
    energies = np.array([f.get_potential_energy() for f in frames])
    for k, frame in enumerate(frames):
        frame.info.update(neb_image=k, neb_energy=float(energies[k]))
    return NEBResult(
        images=frames,
        energies=energies,
        distances=path_distances(frames),
        converged=converged,
        n_steps=int(opt.nsteps),
        fmax=band_fmax,
        climb=climb,
        wall_time=time.perf_counter() - start,
        endpoint_info=info,
    )


def plot_profile(result: NEBResult, path: str | os.PathLike, title: str = "") -> None:
    """Energy (relative to the initial image, eV) against path length (Å) as a PNG,
    written atomically; the barrier and reaction energy are annotated."""
    import matplotlib

    from .plotting import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = result.energies - result.energies[0]
    x = result.distances
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(x, rel, "-", color="tab:blue", lw=1.2)
    ax.plot(x, rel, "o", color="tab:blue", ms=5)
    top = result.highest_image
    ax.plot([x[top]], [rel[top]], "o", color="tab:red", ms=8,
            label=f"{'climbing ' if result.climb else ''}image {top}")  # fmt: skip
    ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("path length / Å")
    ax.set_ylabel("E - E(initial) / eV")
    ax.set_title(title or f"barrier {result.barrier:.3f} eV, ΔE {result.reaction_energy:.3f} eV")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def calculator_factory(
    model: str, structures: Sequence[Atoms], device: str = "auto", dtype: str = "float32"
) -> tuple[Callable[[], Calculator], dict[str, Any]]:
    """``(factory, model_info)``: ``factory()`` makes a calculator per NEB image, all sharing
    one TDN model (checkpoint path, registered name or ``"auto"``, loaded with
    :func:`tdn_calc.relax.inputs.load_job_model`), or ASE's EMT for ``model="emt"`` (as in
    ``tdn adsorb``: demonstrations and tests)."""
    if model.lower() == "emt":
        from ase.calculators.emt import EMT

        return EMT, {"name": "EMT (ASE effective medium theory)"}
    from .calculator import TDNCalculator
    from .device import resolve_device
    from .relax.inputs import load_job_model

    tdn, info = load_job_model(model, structures, str(resolve_device(device)), dtype)
    return (lambda: TDNCalculator(tdn)), info
