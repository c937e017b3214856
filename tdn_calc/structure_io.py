"""Reading and (atomically) writing structures in any format ASE knows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms
from ase.io import read, write
from ase.io.formats import filetype, ioformats

from .errors import InputError
from .fileio import atomic_path

#: ``atoms.info`` keys that identify the input structure of an output frame (used by resume).
SOURCE_KEY = "tdn_source"
INDEX_KEY = "tdn_index"


@dataclass
class StructureRecord:
    """One input structure.

    Attributes:
        atoms: the structure as read (``info`` keeps e.g. ``charge`` and ``spin``).
        source: the input path as given.
        index: position of the structure in its file (0-based).
        label: short name for tables: the file stem, plus ``[index]`` for multi-structure files,
            plus ``info["name"]`` (or ``info["label"]``) when the file gives one.
    """

    atoms: Atoms
    source: str
    index: int
    label: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.index)


def read_structures(
    paths: Sequence[str | os.PathLike], format: str | None = None
) -> list[StructureRecord]:
    """Every structure in every file of ``paths`` (all frames of multi-structure files).

    Raises:
        InputError: a missing, unreadable or empty file, naming it.
    """
    records: list[StructureRecord] = []
    for path in paths:
        path = str(path)
        if not Path(path).is_file():
            raise InputError(f"input file {path!r} does not exist")
        try:
            images = read(path, index=":", format=format)
        except Exception as exc:  # ASE raises many types for unreadable files
            raise InputError(
                f"cannot read {path!r} as a structure file ({type(exc).__name__}: {exc}); "
                "give a format ASE reads (xyz, extxyz, cif, POSCAR, traj, pdb, ...)"
            ) from exc
        if isinstance(images, Atoms):
            images = [images]
        if not images:
            raise InputError(f"input file {path!r} contains no structures")
        stem = Path(path).stem or Path(path).name
        for k, atoms in enumerate(images):
            label = stem if len(images) == 1 else f"{stem}[{k}]"
            name = atoms.info.get("name") or atoms.info.get("label")
            if isinstance(name, str) and name.strip():
                label = f"{label} {name.strip()}"
            records.append(StructureRecord(atoms, path, k, label))
    return records


def default_output(path: str | os.PathLike) -> Path:
    """``<dir>/<stem>_relaxed.extxyz`` beside the input ``path``. The stem is lower-cased
    when ASE would otherwise take the name for another format (``POSCAR`` ->
    ``poscar_relaxed.extxyz``, since ASE reads any name containing ``POSCAR`` as VASP)."""
    path = Path(path)
    stem = path.stem if path.suffix else path.name
    out = path.with_name(f"{stem}_relaxed.extxyz")
    try:
        guessed = filetype(out.name, read=False)
    except Exception:
        guessed = None
    return out if guessed == "extxyz" else path.with_name(f"{stem.lower()}_relaxed.extxyz")


def output_format(path: str | os.PathLike, format: str | None = None) -> str:
    """ASE's format name for writing ``path`` (explicit ``format`` or guessed from the name)."""
    if format:
        name = format
    else:
        try:
            name = filetype(str(path), read=False)
        except Exception as exc:
            raise InputError(
                f"cannot tell the output format of {str(path)!r} from its name; "
                "use a known suffix such as .extxyz, .xyz, .traj, .cif, .vasp"
            ) from exc
    if name not in ioformats or not ioformats[name].can_write:
        raise InputError(f"ASE cannot write the format {name!r} (output {str(path)!r})")
    return name


def check_output_path(
    path: str | os.PathLike, inputs: Sequence[str | os.PathLike], what: str = "output"
) -> None:
    """Raise before any work is done if ``path`` is one of ``inputs`` (inputs are never
    overwritten) or cannot be written: an existing directory, a parent that is a file, or a
    parent directory without write permission."""
    target = Path(path).resolve()
    for inp in inputs:
        if Path(inp).resolve() == target:
            raise InputError(
                f"{what} {str(path)!r} is also an input; tdn-relax never overwrites an input, "
                "choose another file name"
            )
    if target.is_dir():
        raise InputError(f"{what} {str(path)!r} is a directory; give a file name")
    parent = target.parent
    while not parent.exists():  # the first existing ancestor must be a writable directory
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is not writable")


def check_output(
    output: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    n_structures: int,
    format: str | None = None,
) -> str:
    """Refuse an output that is one of the inputs, or a single-structure format for several
    structures. Returns the output's ASE format name (``format`` or guessed from the name)."""
    check_output_path(output, inputs, "output (-o)")
    fmt = output_format(output, format)
    if ioformats[fmt].single and n_structures > 1:
        raise InputError(
            f"output format {fmt!r} ({str(output)!r}) holds one structure, but there are "
            f"{n_structures}; use .extxyz or .traj, or relax one structure at a time"
        )
    return fmt


def write_structures(
    path: str | os.PathLike, images: Sequence[Atoms], format: str | None = None
) -> None:
    """Write ``images`` to ``path`` atomically (temporary file in the same directory with the
    same suffix, fsync, ``os.replace``): a crash never leaves a half-written file."""
    path = Path(path)
    fmt = output_format(path, format)
    many = not ioformats[fmt].single
    if fmt == "extxyz":
        images = [_without_empty_strings(atoms) for atoms in images]
    with atomic_path(path, suffix=path.suffix) as tmp:
        write(tmp, list(images) if many else images[-1], format=fmt)


def _without_empty_strings(atoms: Atoms) -> Atoms:
    """``atoms``, or a copy without its empty or blank string ``info`` values: ASE's extxyz
    writer leaves some unquoted (``key= energy=...``), and the reader then takes the next
    entry as their value, losing the energy."""
    empty = [k for k, v in atoms.info.items() if isinstance(v, str) and not v.strip()]
    if not empty:
        return atoms
    out = atoms.copy()
    out.calc = atoms.calc
    for key in empty:
        del out.info[key]
    return out


def read_existing(path: str | os.PathLike, format: str | None = None) -> list[Atoms]:
    """Frames of an existing output file (for ``--resume``); ``[]`` if there is none."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    try:
        return list(read(str(path), index=":", format=format))
    except Exception as exc:
        raise InputError(
            f"cannot read the existing output {str(path)!r} to resume ({exc}); move it away "
            "or run without --resume"
        ) from exc
