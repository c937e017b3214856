"""What a relaxation job checks and loads before relaxing: fixed atoms and pbc warnings, the
structures against the model, the model's stated limits, and the model of each structure
(``--model auto``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ..errors import InputError, UnsupportedElementError
from ..slab import fix_below, fix_bottom_layers, pbc_messages
from ..structure_io import StructureRecord
from .options import resolve_cell_filter

if TYPE_CHECKING:
    from .settings import RelaxSettings


def prepare(records: Sequence[StructureRecord], settings: RelaxSettings) -> list[str]:
    """Apply ``fix_bottom_layers``/``fix_below`` in place and collect pbc/vacuum warnings.

    Raises:
        InputError: a broken cell (naming the structure).
    """
    messages = []
    cell_relax = resolve_cell_filter(settings.cell_filter) != "none"
    for r in records:
        try:
            if settings.fix_bottom_layers:
                fix_bottom_layers(r.atoms, settings.fix_bottom_layers)
            if settings.fix_below is not None:
                fix_below(r.atoms, settings.fix_below)
            messages += [f"{r.label}: {m}" for m in pbc_messages(r.atoms, cell_relax)]
        except InputError as exc:
            raise InputError(f"{r.label} ({r.source}): {exc}") from exc
    return messages


def check_structures(records: Sequence[StructureRecord], elements: Sequence[int]) -> None:
    """Validate every structure (finite positions, cell, no atoms closer than 0.3 Å,
    elements the model supports) before relaxing anything.

    Raises:
        InputError: naming the structure (label and file) and the problem.
    """
    from ..validation import validate_structure

    for r in records:
        a = r.atoms
        try:
            validate_structure(a.numbers, a.positions, a.cell.array, a.pbc,
                               supported_elements=elements)  # fmt: skip
        except InputError as exc:
            raise type(exc)(f"{r.label} ({r.source}): {exc}") from exc


def model_limits(info: dict[str, Any]) -> dict[str, Any]:
    """The ``limits`` of the registered model whose file has ``info["sha256"]`` (``{}`` for
    unregistered checkpoints), e.g. ``{"max_slab_layers": 5, "note": ...}``."""
    from ..registry import list_models

    for entry in list_models():
        if entry.get("sha256") == info.get("sha256"):
            return dict(entry.get("limits") or {})
    return {}


def limit_messages(records: Sequence[StructureRecord], limits: dict[str, Any]) -> list[str]:
    """Warnings for structures outside a model's stated ``limits``: slabs (exactly two
    periodic directions) with more metal layers than ``max_slab_layers`` (layers of the
    atoms that are not H, C, N or O, 0.5 Å apart along the surface normal), and structures
    where an element the model's teacher is measured wrong for binds to that metal
    (``teacher_errors``, :func:`teacher_error_messages`)."""
    from ..slab import layer_indices, surface_heights

    messages = []
    most = limits.get("max_slab_layers")
    for r in records if most else ():
        a = r.atoms
        metal = ~np.isin(a.numbers, [1, 6, 7, 8])
        if int(a.pbc.sum()) != 2 or not metal.any():
            continue
        n_layers = int(layer_indices(surface_heights(a)[metal]).max()) + 1
        if n_layers > most:
            messages.append(f"{r.label}: {n_layers} metal layers, more than this model's "
                            f"{most} ({limits.get('note', 'see its model card')})")
    for r in records:
        messages += teacher_error_messages(r, limits.get("teacher_errors") or [])
    return messages


#: an element binds to a metal atom closer than the sum of their covalent radii plus this (Å)
BOND_SLACK = 0.4


def teacher_error_messages(record: StructureRecord, errors: Sequence[dict[str, Any]]
                           ) -> list[str]:
    """One warning per measured teacher error (``{"metal", "element", "adsorbate",
    "error_eV", "teacher"}``, written by ``tools/record_teacher_errors.py`` from
    ``benchmarks/teacher_vs_pbe.py``) whose ``element`` binds to its ``metal`` in
    ``record``: the model learned the teacher's energies there, not DFT's."""
    from ase.data import atomic_numbers, covalent_radii
    from ase.geometry import get_distances

    a = record.atoms
    out = []
    for e in errors:
        zm, zx = atomic_numbers[e["metal"]], atomic_numbers[e["element"]]
        metal, other = a.positions[a.numbers == zm], a.positions[a.numbers == zx]
        if not len(metal) or not len(other):
            continue
        _, d = get_distances(other, metal, cell=a.cell, pbc=a.pbc)
        if d.min() > covalent_radii[zm] + covalent_radii[zx] + BOND_SLACK:
            continue
        if e.get("desorbs"):
            what = (f"does not bind {e['adsorbate']} on {e['metal']} at all (its relaxation "
                    "pushes it off the surface), unlike PBE")
        else:
            how = "strongly" if e["error_eV"] < 0 else "weakly"
            what = (f"binds {e['adsorbate']} on {e['metal']} {abs(e['error_eV']):.2f} eV too "
                    f"{how} against PBE")
        out.append(f"{record.label}: {e['element']} bound to {e['metal']}; this model's "
                   f"teacher ({e['teacher']}) {what} (docs/benchmarks.md, teacher against "
                   "PBE): energies here follow the teacher, not DFT")
    return out


def model_groups(spec: str, records: Sequence[StructureRecord]
                 ) -> list[tuple[str, list[StructureRecord]]]:
    """``(model spec, records)`` pairs, in order of first appearance: ``spec`` for all of them,
    or with ``"auto"`` each structure's own registered model (the default one covering its
    elements), so a molecule and a metal slab given together each get the model made for them.

    Raises:
        UnsupportedElementError: with ``"auto"``, no registered model covers a structure
            (named in the message).
    """
    if spec.lower() != "auto":
        return [(spec, list(records))]
    groups: dict[str, list[StructureRecord]] = {}
    for record in records:
        groups.setdefault(auto_model_name([record.atoms], f"{record.label}: "), []).append(record)
    return list(groups.items())


def uncovered_records(spec: str, records: Sequence[StructureRecord],
                      elements: Sequence[int] | None = None) -> list[StructureRecord]:
    """The records no TDN model covers (``tdn-relax --finish`` relaxes them with the teacher
    alone): with ``spec`` ``"auto"`` those no registered model covers, else those with an
    element outside ``elements`` (the atomic numbers of the model; ``None``: not known yet,
    none)."""
    if spec.lower() == "auto":
        out = []
        for r in records:
            try:
                auto_model_name([r.atoms])
            except UnsupportedElementError:
                out.append(r)
        return out
    if elements is None:
        return []
    known = {int(z) for z in elements}
    return [r for r in records if not {int(z) for z in r.atoms.numbers} <= known]


def auto_model_name(structures: Sequence[Atoms], what: str = "") -> str:
    """``--model auto``: the registered model covering every element of ``structures``.

    Raises:
        UnsupportedElementError: none does; the message starts with ``what`` and says how to
            give a checkpoint instead.
    """
    from ..registry import select_model_for

    try:
        return select_model_for(sorted({int(z) for a in structures for z in a.numbers}))
    except UnsupportedElementError as exc:
        raise UnsupportedElementError(
            f"--model auto: {what}{exc}. Give a checkpoint with -m path/to/model.safetensors "
            "(`tdn models list` shows the registered models)"
        ) from exc


def load_job_model(spec: str, structures: Sequence[Atoms], device: str, dtype: str):
    """Load the model named by ``spec`` (checkpoint path, registered name, or ``"auto"``: the
    first registered model covering every element of ``structures``).

    Returns:
        ``(model, info)`` with ``info = {"name", "path", "sha256", "device", "dtype"}``.
    """
    from ..checkpoint import load_model
    from ..fileio import sha256_file
    from ..registry import model_path

    name = auto_model_name(structures) if spec.lower() == "auto" else spec
    path = model_path(name)
    model = load_model(path, device=device, dtype=dtype)
    param = next(model.parameters())
    info = {
        "name": name if spec.lower() != "auto" else f"{name} (auto)",
        "path": str(path),
        "sha256": sha256_file(path),
        "device": str(param.device),
        "dtype": str(param.dtype).removeprefix("torch."),
        "elements": list(model.elements),
    }
    return model, info
