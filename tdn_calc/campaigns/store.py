"""The campaign's results database: an ASE database (``ase.db.connect``), SQLite by default
(a ``.db`` path) or PostgreSQL through a ``postgresql://user:pw@host:port/name`` URL. The
client process is its only writer; each row is written in one transaction, so a killed run
leaves only whole rows and a rerun skips them.

Rows (key-value pairs; energies eV):

* every row: ``kind`` (``slab``, ``gas``, ``placement``), ``key`` (unique), ``engine``
  (the model), ``spec_hash``, the final structure with its energy (the teacher's where it
  finished the relaxation), ``converged``, ``steps``, and who relaxed it
  (:func:`~.run.relaxation_pairs`): ``relaxed_by`` (``student``, ``student+teacher``),
  ``energy_source``, ``student_energy``, ``student_steps``, ``student_converged``,
  ``teacher_steps``, ``teacher_calls``, optional ``student_calls`` (a teacher as the model),
  ``teacher`` (name), ``teacher_energy``, ``teacher_fmax``, ``verified``,
  ``extrapolation_max`` and ``uncertain``;
* ``slab``: ``surface``, ``lattice_a`` and (hcp) ``lattice_c`` (Å);
* ``gas``: ``gas`` (ASE g2 name);
* ``placement``: ``surface``, ``adsorbate``, ``placement``, ``start_site``, ``final_site``,
  ``anomaly`` (``none`` or comma-separated :data:`tdn_calc.evaluation.ANOMALIES`),
  ``valid`` (no anomaly and converged), ``e_ads`` (the ``energy_source``'s),
  ``student_e_ads`` and optional ``teacher_e_ads``.

The database's metadata hold the campaign's ``spec_hash`` and ``name``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ase import Atoms

from .spec import SpecError


def connect(path: str | os.PathLike) -> Any:
    """The ASE database at ``path`` (file, or a ``postgresql://`` URL)."""
    import ase.db

    return ase.db.connect(str(path), append=True)


def claim(db: Any, spec_hash: str, name: str, force: bool) -> None:
    """Tie ``db`` to the spec hash: a fresh database takes it; one of another spec is
    refused (:class:`SpecError`) unless ``force``, which empties it first. With ``force``
    and the same spec every row is deleted too (recompute everything)."""
    meta = dict(db.metadata) if _has_metadata(db) else {}
    held = meta.get("spec_hash")
    if held is None and len(db) > 0:
        held = next(iter(db.select(limit=1))).get("spec_hash")
    if held is not None and held != spec_hash and not force:
        raise SpecError(
            f"database holds results of another spec (hash {held}, this spec "
            f"{spec_hash}); use a new database or --force to recompute"
        )
    if force and len(db) > 0:
        ids = [row.id for row in db.select(columns=["id"], include_data=False)]
        db.delete(ids)
    if _has_metadata(db):
        db.metadata = {**meta, "spec_hash": spec_hash, "name": name}


def _has_metadata(db: Any) -> bool:
    try:
        db.metadata  # noqa: B018 - the JSON backend and some servers have none
    except (AttributeError, NotImplementedError):
        return False
    return True


def done_rows(db: Any) -> dict[str, Any]:
    """``{key: row}`` of the rows already written."""
    return {row.key: row for row in db.select() if "key" in row}


def write(db: Any, atoms: Atoms, **pairs: Any) -> int:
    """Write ``atoms`` (with its stored energy) and the key-value ``pairs`` (None values
    left out) as one row; returns its id."""
    clean = {k: _plain(v) for k, v in pairs.items() if v is not None}
    return db.write(atoms, key_value_pairs=clean)


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def rows(db: Any, kind: str) -> Iterator[Any]:
    """The rows of ``kind`` (``slab``, ``gas``, ``placement``), in id order."""
    return db.select(kind=kind)
