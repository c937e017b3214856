"""Convert labelled structures from other formats into tdn-calc frame files.

* :func:`import_ase`: anything ``ase.io.read`` understands with energies and forces
  (extxyz, ``.traj``, ASE ``.db``, ...).
* :func:`import_pubchemqcr`: the PubChemQCR LMDB (gzip-compressed pickles). Unpickling can
  run arbitrary code: only import files from a source you trust.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers as _Z
from ase.units import Bohr, Hartree

from ..errors import InputError
from .frames import Frame, FrameKind
from .shards import ShardedWriter

PUBCHEMQCR_STAGES = {"pm3": FrameKind.PM3, "hf": FrameKind.HF,
                     "DFT_1st": FrameKind.DFT_1ST, "DFT_2nd": FrameKind.DFT_2ND}
HARTREE_PER_BOHR_TO_EV_PER_ANG = Hartree / Bohr


def import_ase(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    reference_method: str,
    group: str = "file",
    index: str = ":",
    shard_size: int = 250,
) -> dict[str, int]:
    """Write the frames of ASE-readable ``paths`` into the shard directory ``out``.

    Args:
        reference_method: the method that produced the labels (stored, e.g. "PBE (VASP)").
        group: how frames form trajectories: ``"file"`` (all frames of a file, e.g. one
            relaxation), ``"frame"`` (every frame its own structure) or ``"info:<key>"``
            (frames sharing ``atoms.info[key]``). Identifiers are ``<file name>``,
            ``<file name>#<frame>`` or ``<file name>:<value>``.

    Energies, forces (and stress for 3D-periodic cells) come from each frame's calculator.
    Trajectories already in ``out`` are skipped. Returns counts of trajectories and frames.
    """
    from ase.io import read

    if group not in ("file", "frame") and not group.startswith("info:"):
        raise InputError(f"group must be 'file', 'frame' or 'info:<key>'; got {group!r}")
    attrs = {"reference_method": reference_method,
             "source": "imported with tdn_calc.data.importers.import_ase from "
             + ", ".join(Path(p).name for p in paths)}
    n_trajs = n_frames = 0
    with ShardedWriter(out, attrs, shard_size=shard_size) as writer:
        for path in paths:
            name = Path(path).name
            try:
                images = read(path, index=index)
            except Exception as exc:
                raise InputError(f"cannot read {path} with ASE: {exc}") from exc
            images = images if isinstance(images, list) else [images]
            trajs: dict[str, list[Frame]] = {}
            for k, atoms in enumerate(images):
                try:
                    frame = Frame.from_atoms(atoms, kind=FrameKind.IMPORTED, step=k)
                except InputError as exc:
                    raise InputError(f"{path}, frame {k}: {exc}") from exc
                if group == "file":
                    key = name
                elif group == "frame":
                    key = f"{name}#{k}"
                else:
                    info_key = group.split(":", 1)[1]
                    if info_key not in atoms.info:
                        raise InputError(f"{path}, frame {k}: atoms.info has no {info_key!r}")
                    key = f"{name}:{atoms.info[info_key]}"
                trajs.setdefault(key, []).append(frame)
            for key, frames in trajs.items():
                if key in writer.done:
                    continue
                writer.append_trajectory(key, frames)
                n_trajs += 1
                n_frames += len(frames)
    return {"trajectories": n_trajs, "frames": n_frames}


def pubchemqcr_frames(record: dict, stages: Iterable[str]) -> list[Frame]:
    """Frames of one PubChemQCR record (the unpickled dict of one CID).

    Each step has ``coordinates`` (list of ``{atom, charge, x, y, z}``, Å), ``energy``
    (Hartree) and ``gradient`` (list of ``{atom, dx, dy, dz}``, Hartree/Bohr). Frames get
    energy in eV and forces = -gradient in eV/Å; ``frame_kind`` names the stage, ``step``
    the optimisation step.
    """
    frames = []
    for stage in stages:
        if stage not in PUBCHEMQCR_STAGES:
            raise InputError(f"unknown stage {stage!r}; known: {list(PUBCHEMQCR_STAGES)}")
        for k, step in enumerate(record.get(stage) or []):
            coords = step["coordinates"]
            grad = step["gradient"]
            if len(grad) != len(coords):
                raise InputError(f"stage {stage} step {k}: {len(coords)} atoms but "
                                 f"{len(grad)} gradient rows")
            numbers = [_element(c["atom"]) for c in coords]
            positions = [[c["x"], c["y"], c["z"]] for c in coords]
            gradient = np.array([[g["dx"], g["dy"], g["dz"]] for g in grad], dtype=np.float64)
            frames.append(Frame(
                atomic_numbers=numbers, positions=positions,
                energy=float(step["energy"]) * Hartree,
                forces=-gradient * HARTREE_PER_BOHR_TO_EV_PER_ANG,
                kind=PUBCHEMQCR_STAGES[stage], step=k,
            ))
    return frames


def _element(atom) -> int:
    if isinstance(atom, (int, np.integer)):
        return int(atom)
    symbol = str(atom).strip()
    symbol = symbol[:1].upper() + symbol[1:].lower()
    if symbol not in _Z:
        raise InputError(f"unknown element {atom!r} in a PubChemQCR record")
    return _Z[symbol]


def import_pubchemqcr(
    lmdb_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    stages: Sequence[str] = ("DFT_1st", "DFT_2nd"),
    limit: int | None = None,
    shard_size: int = 250,
    reference_method: str = "B3LYP/6-31G* (PubChemQCR)",
) -> dict[str, int]:
    """Convert a PubChemQCR LMDB (directory or single file) into shards in ``out``.

    One trajectory per CID (identifier ``"CID<cid>"``) holding the chosen ``stages`` in
    order. The molecular charge is not in the record: 0 is stored. The pickles are
    executed on load: TRUSTED SOURCES ONLY. CIDs already in ``out`` are skipped.
    """
    import lmdb

    for stage in stages:
        if stage not in PUBCHEMQCR_STAGES:
            raise InputError(f"unknown stage {stage!r}; known: {list(PUBCHEMQCR_STAGES)}")
    p = Path(lmdb_path)
    if not p.exists():
        raise InputError(f"LMDB {p} does not exist")
    attrs = {"reference_method": reference_method,
             "source": f"PubChemQCR LMDB {p.name}, stages {','.join(stages)}"}
    n_trajs = n_frames = n_empty = 0
    env = lmdb.open(str(p), readonly=True, lock=False, subdir=p.is_dir(), readahead=False)
    try:
        with env.begin() as txn, ShardedWriter(out, attrs, shard_size=shard_size) as writer:
            for key, value in txn.cursor():
                if limit is not None and n_trajs >= limit:
                    break
                ident = f"CID{int(key.decode())}"
                if ident in writer.done:
                    continue
                try:
                    record = pickle.loads(gzip.decompress(value))  # trusted sources only
                except Exception as exc:
                    raise InputError(f"{p}: value of key {key!r} is not a gzip pickle: {exc}") \
                        from exc
                frames = pubchemqcr_frames(record, stages)
                if not frames:
                    n_empty += 1
                    continue
                writer.append_trajectory(ident, frames)
                n_trajs += 1
                n_frames += len(frames)
    finally:
        env.close()
    return {"trajectories": n_trajs, "frames": n_frames, "empty_records": n_empty}
