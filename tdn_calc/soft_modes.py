"""Soft-mode check at a relaxed minimum: is the adsorbate's resting place a true minimum?

The chemistry-novelty score and the committee partner (:mod:`tdn_calc.uncertainty`,
:mod:`tdn_calc.committee`) see atoms the model has not learned; neither sees a model that
stops on a high-symmetry site it has learned *too flat*: H on top of Ag(111), H2O on a Pt
bridge. There the model's forces vanish by symmetry, the optimizer converges, and the
teacher (or DFT) would roll the adsorbate on to a hollow 0.2-1 eV lower. Catalysis practice
checks a minimum by its vibrations (no imaginary mode); this module does the same on the
model's own surface, cheaply: the force-constant block of the adsorbate's free atoms
(central differences, ``6 * n_adsorbate`` model calls, once per relaxation, not per step)
and its lowest eigenvalue, the **curvature** (eV/Å²) of the softest adsorbate mode. A
curvature below the model card's ``uncertainty.curvature_threshold`` marks the adsorbate's
atoms uncertain, like a novelty score above its threshold
(:func:`~tdn_calc.uncertainty.uncertain_atoms`); the threshold is calibrated on validation
relaxations together with the other two (:func:`tdn_calc.evaluation.flagging.calibrate_rule`).

The adsorbate: the free atoms of non-metal elements of a structure that also has metal atoms
(a slab or a bulk with adsorbates); no check in a metal-free structure (a molecule) or with
more than :data:`MAX_ADSORBATE_ATOMS` of them. Meant for metal surfaces (the coverage of the
catalysis models): on an oxide or carbide the lattice's own anions would count as adsorbate.

Per structure the relaxed frame gets ``arrays["adsorbate_curvature"]`` (``[n_atoms]``, eV/Å²:
the softest curvature on the adsorbate's atoms, NaN on the others) and
``info["adsorbate_curvature"]``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .slab import fixed_mask

#: per-atom key in ``frame.arrays`` / the scores of :func:`~tdn_calc.uncertainty.uncertain_atoms`
#: and the per-structure key in ``frame.info`` (the same value)
ARRAY_KEY = INFO_KEY = "adsorbate_curvature"
#: finite-difference displacement, Å
DELTA = 0.01
#: most adsorbate atoms checked (6 model calls each); above it, no check
MAX_ADSORBATE_ATOMS = 12
#: elements that are not metals (an adsorbate's), by atomic number
NON_METALS = frozenset({1, 2, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 33, 34, 35, 36, 52, 53,
                        54, 85, 86})


def adsorbate_indices(atoms: Atoms) -> np.ndarray | None:
    """Indices of the adsorbate's free atoms (non-metal elements, :data:`NON_METALS`) of a
    structure that has metal atoms; ``None`` (nothing to check) without metal atoms, without
    free non-metal atoms or with more than :data:`MAX_ADSORBATE_ATOMS` of them."""
    nonmetal = np.isin(atoms.numbers, sorted(NON_METALS))
    if nonmetal.all():
        return None
    found = np.flatnonzero(nonmetal & ~fixed_mask(atoms))  # other constraints: atoms free
    if not len(found) or len(found) > MAX_ADSORBATE_ATOMS:
        return None
    return found


def force_constants(atoms: Atoms, calculator: Calculator, indices: np.ndarray,
                    delta: float = DELTA) -> np.ndarray:
    """``[3 k, 3 k]`` force-constant block (eV/Å²) of atoms ``indices`` (``k`` of them) at
    ``atoms``: central differences of ``calculator``'s forces (``6 k`` calls, displacements of
    ``delta`` Å, the other atoms held where they are), symmetrised. ``atoms`` is untouched."""
    work = atoms.copy()
    work.set_constraint()
    work.calc = calculator
    start = work.positions.copy()
    coords = (3 * np.asarray(indices)[:, None] + np.arange(3)).ravel()
    columns = np.empty((len(coords), len(coords)))
    for k, c in enumerate(coords):
        forces = []
        for sign in (1.0, -1.0):
            moved = start.copy()
            moved[c // 3, c % 3] += sign * delta
            work.positions = moved
            forces.append(work.get_forces().ravel()[coords])
        columns[:, k] = -(forces[0] - forces[1]) / (2 * delta)
    return (columns + columns.T) / 2


def softest_curvature(atoms: Atoms, calculator: Calculator,
                      indices: np.ndarray | None = None) -> float | None:
    """Lowest eigenvalue (eV/Å²) of the force-constant block of atoms ``indices`` (default:
    the adsorbate's, :func:`adsorbate_indices`) at ``atoms`` (a minimum of ``calculator``):
    negative at a saddle, near zero on a flat spot; ``None`` when there is nothing to check."""
    indices = adsorbate_indices(atoms) if indices is None else indices
    if indices is None:
        return None
    block = force_constants(atoms, calculator, indices)
    if not np.isfinite(block).all():  # non-finite forces: no minimum to trust
        return -np.inf
    return float(np.linalg.eigvalsh(block)[0])


def add_curvature_scores(scores: dict[str, Any], atoms: Atoms, calculator: Calculator,
                         threshold: float | None) -> float | None:
    """Put the adsorbate's softest curvature at ``atoms`` into ``scores`` (a calculator's
    ``results`` or a frame's ``arrays``, under :data:`ARRAY_KEY`: the value on the adsorbate's
    atoms, NaN elsewhere) and return ``threshold`` for
    :func:`~tdn_calc.uncertainty.uncertain_atoms`; ``None`` and nothing computed without a
    threshold or an adsorbate. ``calculator``: a plain one (no scores) of the same model."""
    if threshold is None:
        return None
    indices = adsorbate_indices(atoms)
    if indices is None:
        return None
    per_atom = np.full(len(atoms), np.nan)
    per_atom[indices] = softest_curvature(atoms, calculator, indices)
    scores[ARRAY_KEY] = per_atom
    return threshold


def annotate_curvature(frame: Atoms, calculator: Calculator, threshold: float | None
                       ) -> float | None:
    """:func:`add_curvature_scores` on ``frame.arrays``, with ``info[INFO_KEY]``; returns the
    threshold to apply, or ``None``."""
    found = add_curvature_scores(frame.arrays, frame, calculator, threshold)
    if found is not None:
        frame.info[INFO_KEY] = float(np.nanmin(frame.arrays[ARRAY_KEY]))
    return found


def curvature_threshold(name: str, manifest: str | os.PathLike | None = None) -> float | None:
    """Registered model ``name``'s ``uncertainty.curvature_threshold`` (eV/Å²), or None."""
    from .errors import CheckpointError
    from .registry import model_entry

    value = (model_entry(name, manifest).get("uncertainty") or {}).get("curvature_threshold")
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise CheckpointError(f"model {name!r}: the manifest's uncertainty.curvature_threshold "
                              f"must be a number (eV/Å²), got {value!r}")
    return float(value)


def threshold_for_loaded_model(model: Any, manifest: str | os.PathLike | None = None
                               ) -> float | None:
    """:func:`curvature_threshold` of the registered model ``model`` was loaded from (found
    by its file's sha256), or ``None``; looked up once per model."""
    from .registry import per_registered_model

    return per_registered_model(model, "_tdn_curvature_threshold", manifest,
                                lambda name: curvature_threshold(name, manifest))
