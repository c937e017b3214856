"""Adsorbate displacement frames: a teacher-relaxed adsorbate moved rigidly to other sites,
heights and tilts over the same slab, then labelled by the teacher.

Relaxation trajectories only sample the path from a start near one site down to its minimum,
so a model trained on them has rarely seen an adsorbate over the "wrong" site or pressed
into the surface; the first tdn-catalysis let C on Au(111) and N on Ag(111) sink below the
top layer. These frames sample that part of the surface's energy landscape.

A displaced trajectory is stored beside its source as ``<label>:displaced`` (e.g.
``Pt111/CO/fcc/r0:displaced``); :func:`tdn_calc.data.split.system_of` maps it to its source's
system, so a system-grouped split keeps it in the same part.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.data import covalent_radii
from ase.geometry import get_distances

from ...data.dataset import H5Dataset, sample_atoms
from ...data.frames import Frame, FrameKind
from ...data.shards import ShardedWriter, list_shards
from ...errors import InputError
from ...interrupts import raise_if_interrupted
from ...teachers import get_teacher
from .build import label_frame, read_metadata
from .systems import system_rng

log = logging.getLogger(__name__)

DISPLACED_SUFFIX = ":displaced"
_VARIANT = re.compile(r"[a-z_]+")


def displaced_suffix(variant: str | None = None) -> str:
    """The identifier suffix of a displacement pass: ``":displaced"``, or
    ``":displaced_<variant>"`` for a further pass (lower-case letters and ``_``, so that
    :func:`tdn_calc.data.split.system_of` still maps it to its source system)."""
    if variant is None:
        return DISPLACED_SUFFIX
    if not _VARIANT.fullmatch(variant):
        raise InputError(f"a displacement variant is lower-case letters and '_'; got {variant!r}")
    return f"{DISPLACED_SUFFIX}_{variant}"


@dataclass(frozen=True)
class DisplaceSettings:
    """How far an adsorbate is moved from its relaxed pose.

    Attributes:
        per_trajectory: displaced frames per source trajectory.
        lateral: largest lateral shift, in units of the slab's nearest-neighbour distance
            (uniform over the disc: covers every site of a (111) surface).
        height: range of the vertical shift of the adsorbate, Å (negative: towards the slab).
        max_tilt: largest tilt of the adsorbate about its binding atom, degrees (plus a
            uniformly random turn about the surface normal).
        min_contact: closest allowed adsorbate-metal distance as a fraction of the sum of
            covalent radii; a pose closer than that is lifted until it is not.
    """

    per_trajectory: int = 2
    lateral: float = 1.0
    height: tuple[float, float] = (-0.6, 0.8)
    max_tilt: float = 25.0
    min_contact: float = 0.75

    def __post_init__(self) -> None:
        if self.per_trajectory < 1:
            raise InputError(f"per_trajectory must be >= 1; got {self.per_trajectory}")
        if not all(np.isfinite(self.height)) or self.height[0] > self.height[1]:
            raise InputError(f"height is a range (min, max); got {self.height}")
        if not 0.0 < self.min_contact < 1.5:
            raise InputError(f"min_contact must be in (0, 1.5); got {self.min_contact}")


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """``[3, 3]`` rotation by ``angle`` (radians) about the unit vector ``axis``."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def contact_ratio(atoms: Atoms, adsorbate: np.ndarray) -> float:
    """Smallest adsorbate-substrate distance over the sum of the two covalent radii
    (minimum image under the cell's periodicity)."""
    ads, sub = np.flatnonzero(adsorbate), np.flatnonzero(~adsorbate)
    _, dist = get_distances(atoms.positions[ads], atoms.positions[sub], cell=atoms.cell,
                            pbc=atoms.pbc)
    radii = covalent_radii[atoms.numbers]
    return float((dist / (radii[ads][:, None] + radii[sub][None, :])).min())


def displace_adsorbate(atoms: Atoms, adsorbate: np.ndarray, rng: np.random.Generator,
                       settings: DisplaceSettings) -> Atoms:
    """A copy of ``atoms`` with the atoms of ``adsorbate`` ([n_atoms] bool) turned, tilted
    about their lowest atom, shifted laterally and vertically; never closer to the substrate
    than ``settings.min_contact`` (lifted in 0.05 Å steps when it would be)."""
    if not adsorbate.any() or adsorbate.all():
        raise InputError("displace_adsorbate needs both adsorbate and substrate atoms")
    out = atoms.copy()
    pos = out.positions
    idx = np.flatnonzero(adsorbate)
    anchor = pos[idx[np.argmin(pos[idx, 2])]].copy()
    phi = rng.uniform(0.0, 2.0 * np.pi)
    tilt_axis = np.array([np.cos(phi), np.sin(phi), 0.0])
    turn = _rotation(np.array([0.0, 0.0, 1.0]), rng.uniform(0.0, 2.0 * np.pi))
    tilt = _rotation(tilt_axis, np.radians(rng.uniform(0.0, settings.max_tilt)))
    pos[idx] = (pos[idx] - anchor) @ (tilt @ turn).T + anchor
    substrate = pos[~adsorbate]
    d_nn = _nearest_neighbour(out[~adsorbate])
    r = settings.lateral * d_nn * np.sqrt(rng.uniform())
    theta = rng.uniform(0.0, 2.0 * np.pi)
    pos[idx] += [r * np.cos(theta), r * np.sin(theta), rng.uniform(*settings.height)]
    pos[idx, 2] += max(0.0, substrate[:, 2].max() - 1.0 - pos[idx, 2].min())  # not under it
    out.positions = pos
    for _ in range(200):
        if contact_ratio(out, adsorbate) >= settings.min_contact:
            break
        out.positions[idx, 2] += 0.05
    return out


def _nearest_neighbour(substrate: Atoms) -> float:
    """Nearest-neighbour distance of the substrate atoms, Å (minimum image)."""
    _, dist = get_distances(substrate.positions, cell=substrate.cell, pbc=substrate.pbc)
    dist[np.diag_indices_from(dist)] = np.inf
    return float(dist.min())


@dataclass
class DisplaceSummary:
    """What :func:`build_displaced` did."""

    sources: int = 0
    already_done: int = 0
    written: int = 0
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    settings: dict = field(default_factory=dict)
    suffix: str = DISPLACED_SUFFIX

    def to_dict(self) -> dict:
        return asdict(self)


def _final_relax_frames(ds: H5Dataset) -> dict[str, int]:
    """identifier -> index of its last relaxation frame (the teacher's minimum)."""
    relax = np.flatnonzero(ds.frame_kind == FrameKind.RELAX)
    last: dict[str, int] = {}
    for i in relax:  # frames are stored in trajectory order
        last[ds.identifiers[int(ds.traj[i])]] = int(i)
    return last


def _source_atoms(ds: H5Dataset, index: int, fixed: list[int]) -> Atoms:
    atoms = sample_atoms(ds[index])
    atoms.set_constraint(FixAtoms(indices=fixed))
    return atoms


def _shard_attrs(data: Path) -> dict:
    with h5py.File(list_shards(data)[0], "r") as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()
                 if k in ("reference_method", "teacher", "seed")}
    return {**attrs, "source": "tdn-calc adsorbate displacement: relaxed adsorbates moved "
            "rigidly over their slab and relabelled by the teacher"}


def build_displaced(data: str | os.PathLike, *, teacher: str, settings: DisplaceSettings,
                    seed: int = 0, limit: int | None = None, device: str = "cpu",
                    variant: str | None = None, shard_size: int = 250,
                    progress: bool = True) -> DisplaceSummary:
    """Append displaced-adsorbate trajectories to the catalysis data set ``data``.

    Sources are the slab trajectories with an adsorbate listed in ``data/trajectories.jsonl``,
    taken in a seeded order (so a partial build covers all metals and adsorbates evenly);
    ``limit`` caps their number. Resumable (done identifiers are skipped) and deterministic:
    a trajectory's frames depend only on ``seed``, its label, ``variant`` and ``settings``.
    A further pass over the same sources needs its own ``variant`` (identifiers
    ``<label>:displaced_<variant>``); the same variant again adds nothing.
    """
    from tqdm import tqdm

    suffix = displaced_suffix(variant)
    data = Path(data)
    t0 = time.perf_counter()
    meta = read_metadata(data)
    labels = sorted(lab for lab, rec in meta.items() if rec.get("kind") == "slab"
                    and rec.get("adsorbate"))
    if not labels:
        raise InputError(f"{data} lists no slab trajectories with an adsorbate "
                         "(trajectories.jsonl of the catalysis builder)")
    order = [labels[i] for i in np.random.default_rng(seed).permutation(len(labels))][:limit]
    summary = DisplaceSummary(sources=len(order), settings=asdict(settings), suffix=suffix)
    ds = H5Dataset(data)
    final = _final_relax_frames(ds)
    with ShardedWriter(data, _shard_attrs(data), shard_size=shard_size) as writer:
        todo = [lab for lab in order if lab + suffix not in writer.done
                and lab in final]
        summary.already_done = len(order) - len(todo)
        calc = get_teacher(teacher, device) if todo else None
        bar = tqdm(total=len(todo), desc="displaced", unit="traj", disable=not progress)
        try:
            for label in todo:
                raise_if_interrupted()
                frames = displaced_frames(_source_atoms(ds, final[label],
                                                        meta[label]["fixed_atoms"]),
                                          meta[label]["metal"], calc,
                                          system_rng(seed, label + suffix), settings)
                writer.append_trajectory(label + suffix, frames,
                                         spin=int(meta[label].get("spin", 0)))
                summary.written += 1
                summary.frames += len(frames)
                bar.update(1)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            bar.close()
            ds.close()
    summary.seconds = time.perf_counter() - t0
    log.info("displaced: %s", json.dumps(summary.to_dict()))
    return summary


def displaced_frames(relaxed: Atoms, metal: str, calc, rng: np.random.Generator,
                     settings: DisplaceSettings) -> list[Frame]:
    """``settings.per_trajectory`` teacher-labelled displacements of the adsorbate (the atoms
    that are not ``metal``) of the relaxed slab ``relaxed``; forces are raw (fixed atoms too)."""
    adsorbate = np.array([s != metal for s in relaxed.get_chemical_symbols()])
    frames = []
    for k in range(settings.per_trajectory):
        atoms = displace_adsorbate(relaxed, adsorbate, rng, settings)
        atoms.calc = calc
        frames.append(label_frame(atoms, FrameKind.DISPLACED, k))
    return frames
