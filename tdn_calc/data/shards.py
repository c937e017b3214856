"""A data set as a directory of HDF5 shards ``part-00000.h5``, ``part-00001.h5``, ...

A shard holds at most ``shard_size`` trajectories. Once full it is marked complete, closed,
and never opened for writing again, so finished shards can be committed to version control
while a builder keeps appending to the newest one.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py

from ..errors import InputError
from ._h5repair import clear_write_flag, is_stale_write_flag
from .h5format import H5Writer, check_format

log = logging.getLogger(__name__)

_SHARD_RE = re.compile(r"^part-(\d{5,})\.h5$")


def list_shards(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The frame files of a data set: ``[path]`` for a file, the sorted ``*.h5`` of a
    directory; for a list of such paths (several data sets trained on together), theirs in
    that order."""
    if isinstance(path, (list, tuple)):
        return [shard for one in path for shard in list_shards(one)]
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(x for x in p.iterdir() if x.suffix == ".h5" and x.is_file())
        if not files:
            raise InputError(f"{p} contains no .h5 files")
        return files
    raise InputError(f"data set {p} does not exist (expected an .h5 file or a directory of them)")


def read_identifiers(path: str | os.PathLike) -> set[str]:
    """Identifiers of all complete trajectories of a file or shard directory."""
    out: set[str] = set()
    for shard in list_shards(path):
        with h5py.File(shard, "r") as f:
            check_format(f, shard)
            n = int(f.attrs["n_complete_trajs"])
            out.update(x.decode() if isinstance(x, bytes) else str(x)
                       for x in f["identifiers"][:n])
    return out


class ShardedWriter:
    """Append trajectories to ``outdir/part-NNNNN.h5``, starting a new shard every
    ``shard_size`` trajectories.

    On open, the newest incomplete shard is reused (its partial tail recovered); a shard that
    HDF5 cannot open any more (killed mid-flush) is renamed ``*.corrupt-<time>`` and its
    trajectories are rebuilt by the caller, since they no longer count as done.
    """

    def __init__(self, outdir: str | os.PathLike, attrs: Mapping[str, object], *,
                 shard_size: int = 250):
        if shard_size < 1:
            raise InputError(f"shard_size must be >= 1; got {shard_size}")
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.attrs = dict(attrs)
        self.shard_size = shard_size
        self._writer: H5Writer | None = None
        self._done: set[str] = set()
        self._next_index = 0
        #: attributes of the first existing shard (None for a new directory)
        self.existing_attrs: dict | None = None
        for shard in self._shards():
            self._next_index = max(self._next_index, _index(shard) + 1)
            try:
                complete, attrs_found = _shard_is_complete(shard)
            except _Busy:
                raise
            except (OSError, KeyError, InputError) as exc:
                bad = shard.with_name(f"{shard.name}.corrupt-{int(time.time())}")
                log.warning("%s cannot be opened (%s); moved aside to %s", shard, exc, bad)
                os.replace(shard, bad)
                continue
            if self.existing_attrs is None:
                self.existing_attrs = attrs_found
            if complete:
                self._done |= read_identifiers(shard)
            else:
                w = H5Writer(shard, self.attrs)
                self._done |= w.identifiers
                if self._writer is None:
                    self._writer = w
                else:  # more than one open shard (should not happen): close the extra one
                    w.mark_complete()
                    w.close()

    def _shards(self) -> list[Path]:
        return sorted(p for p in self.outdir.iterdir() if _SHARD_RE.match(p.name))

    @property
    def done(self) -> set[str]:
        """Identifiers already written to any shard."""
        return set(self._done)

    def append_trajectory(self, identifier: str, frames, *, charge: int = 0,
                          spin: int = 0) -> None:
        """Append one trajectory to the current shard (see :meth:`H5Writer.append_trajectory`)."""
        if identifier in self._done:
            raise InputError(f"identifier {identifier!r} is already in {self.outdir}")
        if self._writer is None:
            path = self.outdir / f"part-{self._next_index:05d}.h5"
            self._next_index += 1
            self._writer = H5Writer(path, self.attrs)
        self._writer.append_trajectory(identifier, frames, charge=charge, spin=spin)
        self._done.add(identifier)
        if self._writer.n_trajs >= self.shard_size:
            self._writer.mark_complete()
            self._writer.close()
            log.info("shard %s complete", self._writer.path)
            self._writer = None

    def close(self) -> None:
        """Close the open shard (it stays incomplete and is resumed next time)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shard_is_complete(shard: Path) -> tuple[bool, dict]:
    """Read a shard's ``shard_complete`` flag and attributes (read-only). Raises InputError
    when another process holds the file; a write flag left by a killed writer is cleared."""
    try:
        f = h5py.File(shard, "r")
    except OSError as exc:
        if "lock" in str(exc) or "already open for read" in str(exc):
            raise _Busy(f"{shard} is open in another writer or reader ({exc}); "
                        "stop it before appending") from exc
        if not (is_stale_write_flag(exc) and clear_write_flag(shard)):
            raise
        log.warning("%s: cleared the write flag left by a killed writer", shard)
        f = h5py.File(shard, "r")
    with f:
        check_format(f, shard)
        return bool(f.attrs.get("shard_complete", False)), dict(f.attrs)


class _Busy(InputError):
    """A shard held by another process: never moved aside."""


def _index(shard: Path) -> int:
    m = _SHARD_RE.match(shard.name)
    return int(m.group(1)) if m else -1
