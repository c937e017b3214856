"""The tdn-calc HDF5 frame format: layout, attribute checks and the appending writer.

Layout (flat, chunked, resizable, gzip+shuffle; full description in docs/data_format.md):

* per atom ``[n_atoms_total]``: ``atomic_numbers`` int8, ``positions`` [.,3] float64 Å,
  ``forces`` [.,3] float32 eV/Å;
* per frame ``[n_frames]``: ``frame_atom_ptr`` int64 (first atom), ``n_atoms`` int32,
  ``energy`` float64 eV, ``cell`` [.,3,3] float64 Å, ``pbc`` [.,3] bool, ``stress`` [.,3,3]
  float64 eV/Å^3 with ``has_stress`` bool, ``frame_kind`` int8, ``step`` int32,
  ``traj_id`` int32 (row of the per-trajectory arrays in this file);
* per trajectory ``[n_trajs]``: ``identifiers`` (UTF-8 str), ``charge`` int8, ``spin`` int8
  (unpaired electrons), ``traj_frame_ptr`` int64, ``traj_n_frames`` int32.

The file attributes ``n_complete_trajs/frames/atoms`` are updated *last* on every append; a
writer killed in the middle leaves longer datasets that the next writer truncates back.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from ._h5repair import clear_write_flag, is_stale_write_flag
from .frames import Frame

log = logging.getLogger(__name__)

FORMAT_NAME = "tdn-calc-frames"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}
_COUNT_ATTRS = ("n_complete_trajs", "n_complete_frames", "n_complete_atoms")

# name -> (level, trailing shape, dtype)
_SCHEMA: dict[str, tuple[str, tuple[int, ...], object]] = {
    "atomic_numbers": ("atom", (), np.int8),
    "positions": ("atom", (3,), np.float64),
    "forces": ("atom", (3,), np.float32),
    "frame_atom_ptr": ("frame", (), np.int64),
    "n_atoms": ("frame", (), np.int32),
    "energy": ("frame", (), np.float64),
    "cell": ("frame", (3, 3), np.float64),
    "pbc": ("frame", (3,), np.bool_),
    "stress": ("frame", (3, 3), np.float64),
    "has_stress": ("frame", (), np.bool_),
    "frame_kind": ("frame", (), np.int8),
    "step": ("frame", (), np.int32),
    "traj_id": ("frame", (), np.int32),
    "identifiers": ("traj", (), h5py.string_dtype("utf-8")),
    "charge": ("traj", (), np.int8),
    "spin": ("traj", (), np.int8),
    "traj_frame_ptr": ("traj", (), np.int64),
    "traj_n_frames": ("traj", (), np.int32),
}
_CHUNK = {"atom": 4096, "frame": 1024, "traj": 256}
_LEVEL_ATTR = {"traj": "n_complete_trajs", "frame": "n_complete_frames", "atom": "n_complete_atoms"}


def check_format(f: h5py.File, path: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless ``f`` is a tdn-calc frame file in the expected units."""
    if f.attrs.get("format") != FORMAT_NAME:
        raise InputError(
            f"{path} is not a tdn-calc frame file (attribute format={f.attrs.get('format')!r}, "
            f"expected {FORMAT_NAME!r})"
        )
    version = int(f.attrs.get("format_version", -1))
    if version < 1 or version > FORMAT_VERSION:
        raise InputError(
            f"{path} has format_version {version}; this tdn-calc reads 1..{FORMAT_VERSION}"
        )
    for key, unit in UNITS.items():
        found = f.attrs.get(f"units.{key}")
        if found != unit:
            raise InputError(
                f"{path}: {key} unit is {found!r}, expected {unit!r} (convert the data first)"
            )
    missing = [k for k in (*_COUNT_ATTRS, "reference_method") if k not in f.attrs]
    missing += [name for name in _SCHEMA if name not in f]
    if missing:
        raise InputError(f"{path} lacks {missing}: truncated or written by another tool")


def open_for_append(path: Path) -> h5py.File:
    """Open ``path`` read-write; a write flag left by a killed writer is cleared first."""
    try:
        return h5py.File(path, "r+")
    except OSError as exc:
        if is_stale_write_flag(exc) and clear_write_flag(path):
            log.warning("%s: cleared the write flag left by a killed writer", path)
            return h5py.File(path, "r+")
        raise InputError(f"{path} cannot be opened for appending; is it open in another "
                         f"writer or reader? ({exc})") from exc


def committed_counts(f: h5py.File) -> dict[str, int]:
    """Number of complete trajectories/frames/atoms, keyed by level ("traj", "frame", "atom")."""
    return {level: int(f.attrs[attr]) for level, attr in _LEVEL_ATTR.items()}


class H5Writer:
    """Append whole trajectories to one HDF5 frame file.

    Args:
        path: file to create, or to extend when it exists (a partial tail left by a killed
            writer is truncated on open).
        attrs: file attributes for a new file; must include ``reference_method`` (e.g.
            ``"GFN2-xTB (tblite)"``) and ``source``. When the file exists, a differing
            ``reference_method`` raises :class:`InputError`.

    Use as a context manager; every :meth:`append_trajectory` is flushed before it returns.
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, object] | None = None):
        self.path = Path(path)
        attrs = dict(attrs or {})
        if self.path.exists():
            self._f = open_for_append(self.path)
            check_format(self._f, self.path)
            want = attrs.get("reference_method")
            have = self._f.attrs["reference_method"]
            if want is not None and want != have:
                self._f.close()
                raise InputError(
                    f"{self.path} holds {have!r} labels; refusing to append {want!r} labels"
                )
            try:
                self._recover()
            except (OSError, RuntimeError, ValueError, InputError) as exc:  # cut by a kill
                self._f.close()
                log.warning("%s: %s; salvaging the readable trajectories", self.path, exc)
                salvage_file(self.path)
                self._f = open_for_append(self.path)
        else:
            if "reference_method" not in attrs or "source" not in attrs:
                raise InputError(
                    "a new data file needs attrs 'reference_method' and 'source'; "
                    f"got {sorted(attrs)}"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # create under a temporary name so that a kill never leaves a half-made file
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            # default libver: no superblock "open for write" flag that a kill would leave set
            self._f = h5py.File(tmp, "w")
            self._create(attrs)
            self._f.close()
            os.replace(tmp, self.path)
            self._f = h5py.File(self.path, "r+")
        self._identifiers = {_s(x) for x in self._f["identifiers"][: self.n_trajs]}

    # --- creation and recovery ------------------------------------------------------------
    def _create(self, attrs: Mapping[str, object]) -> None:
        from .. import __version__

        f = self._f
        _create_datasets(f)
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["builder_version"] = f"tdn-calc {__version__}"
        f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        for key, unit in UNITS.items():
            f.attrs[f"units.{key}"] = unit
        for key, value in attrs.items():
            f.attrs[key] = value
        for attr in _COUNT_ATTRS:
            f.attrs[attr] = 0
        f.attrs["shard_complete"] = False
        f.flush()

    def _recover(self) -> None:
        counts = committed_counts(self._f)
        truncated = False
        for name, (level, _, _) in _SCHEMA.items():
            ds = self._f[name]
            if ds.shape[0] > counts[level]:
                ds.resize(counts[level], axis=0)
                truncated = True
            elif ds.shape[0] < counts[level]:
                raise InputError(
                    f"{self.path}: dataset {name} has {ds.shape[0]} rows but the file claims "
                    f"{counts[level]} complete; the file is corrupt"
                )
        if truncated:
            log.warning("%s: truncated a partial append left by an interrupted writer", self.path)
            self._f.flush()
        for name, (level, _, _) in _SCHEMA.items():  # the last chunks must decode
            n = counts[level]
            self._f[name][max(0, n - 2 * _CHUNK[level]):n]

    # --- state ----------------------------------------------------------------------------
    @property
    def n_trajs(self) -> int:
        return int(self._f.attrs["n_complete_trajs"])

    @property
    def n_frames(self) -> int:
        return int(self._f.attrs["n_complete_frames"])

    @property
    def identifiers(self) -> set[str]:
        """Identifiers of the complete trajectories in this file."""
        return set(self._identifiers)

    @property
    def complete(self) -> bool:
        """True once :meth:`mark_complete` was called (a closed, never-again-touched shard)."""
        return bool(self._f.attrs.get("shard_complete", False))

    def mark_complete(self) -> None:
        self._f.attrs["shard_complete"] = True
        self._f.flush()

    # --- appending ------------------------------------------------------------------------
    def append_trajectory(
        self,
        identifier: str,
        frames: Sequence[Frame] | Iterable,
        *,
        charge: int = 0,
        spin: int = 0,
    ) -> int:
        """Append all ``frames`` (``Frame`` or ASE ``Atoms`` with results) as one trajectory.

        Returns the trajectory's row in this file. ``spin`` is the number of unpaired electrons.
        Raises :class:`InputError` for an empty list or an identifier already in the file.
        """
        if self.complete:
            raise InputError(f"{self.path} is marked complete; open a new shard to append")
        frames = [fr if isinstance(fr, Frame) else Frame.from_atoms(fr) for fr in frames]
        if not frames:
            raise InputError(f"trajectory {identifier!r} has no frames")
        if identifier in self._identifiers:
            raise InputError(f"identifier {identifier!r} is already in {self.path}")
        counts = committed_counts(self._f)
        n_at = np.array([fr.n_atoms for fr in frames], dtype=np.int64)
        ptr = counts["atom"] + np.concatenate([[0], np.cumsum(n_at)[:-1]])
        t = counts["traj"]
        columns = {
            "atomic_numbers": np.concatenate([fr.atomic_numbers for fr in frames]),
            "positions": np.concatenate([fr.positions for fr in frames]),
            "forces": np.concatenate([fr.forces for fr in frames]),
            "frame_atom_ptr": ptr,
            "n_atoms": n_at,
            "energy": np.array([fr.energy for fr in frames]),
            "cell": np.stack([fr.cell for fr in frames]),
            "pbc": np.stack([fr.pbc for fr in frames]),
            "stress": np.stack([np.zeros((3, 3)) if fr.stress is None else fr.stress
                                for fr in frames]),
            "has_stress": np.array([fr.stress is not None for fr in frames]),
            "frame_kind": np.array([int(fr.kind) for fr in frames]),
            "step": np.array([fr.step for fr in frames]),
            "traj_id": np.full(len(frames), t),
            "identifiers": np.array([identifier], dtype=object),
            "charge": np.array([charge]),
            "spin": np.array([spin]),
            "traj_frame_ptr": np.array([counts["frame"]]),
            "traj_n_frames": np.array([len(frames)]),
        }
        for name, values in columns.items():
            ds = self._f[name]
            start = ds.shape[0]
            ds.resize(start + len(values), axis=0)
            ds[start:] = values
        self._f.flush()
        self._f.attrs["n_complete_atoms"] = counts["atom"] + int(n_at.sum())
        self._f.attrs["n_complete_frames"] = counts["frame"] + len(frames)
        self._f.attrs["n_complete_trajs"] = t + 1
        self._f.flush()
        self._identifiers.add(identifier)
        return t

    # --- context manager ------------------------------------------------------------------
    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> H5Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _create_datasets(f: h5py.File) -> None:
    for name, (level, trailing, dtype) in _SCHEMA.items():
        f.create_dataset(
            name, shape=(0, *trailing), maxshape=(None, *trailing), dtype=dtype,
            chunks=(_CHUNK[level], *trailing), compression="gzip", compression_opts=4,
            shuffle=True,
        )


def _readable_rows(ds: h5py.Dataset, n: int) -> int:
    """Rows ``[0, k)`` of ``ds`` that decode, reading chunk by chunk up to ``n``."""
    step = ds.chunks[0]
    for start in range(0, n, step):
        try:
            ds[start:min(n, start + step)]
        except (OSError, RuntimeError, ValueError):
            return start
    return n


def salvage_file(path: str | os.PathLike) -> int:
    """Rewrite ``path`` keeping the longest prefix of whole trajectories that decodes.

    HDF5 is not crash-safe: a writer killed while flushing can leave a damaged chunk. The
    damaged file is kept as ``<name>.corrupt-<time>``. Returns the trajectories dropped.
    """
    path = Path(path)
    with h5py.File(path, "r") as src:
        counts = committed_counts(src)
        ok = dict(counts)
        for name, (level, _, _) in _SCHEMA.items():
            n = min(counts[level], src[name].shape[0])
            ok[level] = min(ok[level], _readable_rows(src[name], n))
        ends = src["traj_frame_ptr"][: ok["traj"]] + src["traj_n_frames"][: ok["traj"]]
        atom_ends = src["frame_atom_ptr"][: ok["frame"]] + src["n_atoms"][: ok["frame"]]
        keep = 0
        while keep < len(ends) and ends[keep] <= ok["frame"] and \
                atom_ends[ends[keep] - 1] <= ok["atom"]:
            keep += 1
        n_frames = int(ends[keep - 1]) if keep else 0
        rows = {"traj": keep, "frame": n_frames,
                "atom": int(atom_ends[n_frames - 1]) if n_frames else 0}
        data = {name: src[name][: rows[level]] for name, (level, _, _) in _SCHEMA.items()}
        attrs = dict(src.attrs)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.salvage.tmp")
    with h5py.File(tmp, "w") as dst:
        _create_datasets(dst)
        for name, values in data.items():
            dst[name].resize(len(values), axis=0)
            dst[name][:] = values
        dst.attrs.update(attrs)
        for level, attr in _LEVEL_ATTR.items():
            dst.attrs[attr] = rows[level]
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(path, path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
    os.replace(tmp, path)
    lost = counts["traj"] - keep
    log.warning("%s: salvaged %d trajectories, dropped %d", path, keep, lost)
    return lost


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
