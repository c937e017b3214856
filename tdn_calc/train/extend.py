"""Fine-tuning a trained model on data with elements it does not know yet.

:func:`extend_elements` returns a copy of a :class:`~tdn_calc.nn.model.TDNModel` that also
supports new elements: every weight is kept, and each new element starts as its nearest
known neighbour in the periodic table (:func:`nearest_known`: same row first, then the
column), i.e. it gets that element's embedding row. Its reference energy ``E0`` follows
from a least-squares fit ``E ≈ sum_Z n_Z e_Z`` over the training frames: the donor's
learned per-atom part ``e_donor - E0_donor`` is assumed for the newcomer too, so
``E0_new = e_new - (e_donor - E0_donor)`` and the first energies it predicts are already
close to the data (``atomic_energies`` is a fixed buffer, not trained).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from ase.data import chemical_symbols

from ..data.dataset import H5Dataset
from ..nn.model import TDNModel
from .stats import composition_of, fit_atomic_energies

log = logging.getLogger(__name__)


def _position(z: int) -> tuple[int, int]:
    """``(period, group)`` of element ``z`` (pymatgen's periodic table; lanthanides and
    actinides in group 3)."""
    from pymatgen.core.periodic_table import Element  # only when a model gains elements

    element = Element.from_Z(z)
    return element.row, element.group


def nearest_known(z: int, known: Sequence[int]) -> int:
    """The element of ``known`` closest to ``z`` in the periodic table: fewest columns
    apart, then fewest rows, then the lighter one (Co -> Ni, Rh -> Pd, Ir -> Pt)."""
    period, group = _position(z)

    def distance(other: int) -> tuple[int, int, int]:
        p, g = _position(other)
        return abs(g - group) + abs(p - period), abs(p - period), other

    return min(known, key=distance)


def extend_elements(
    model: TDNModel, elements: Sequence[int], fitted_energies: Mapping[int, float]
) -> TDNModel:
    """A copy of ``model`` that supports ``elements`` (a superset of its own).

    Args:
        model: the trained model.
        elements: atomic numbers the new model supports (must include the model's own).
        fitted_energies: ``{Z: e_Z}`` eV, a least-squares per-element energy fit over the
            training frames (:func:`~tdn_calc.train.stats.fit_atomic_energies`); needed for
            each new element and its donor.

    Returns the new model (same dtype and device, weights copied; the new elements'
    embedding rows and reference energies as the module docstring says).
    """
    old = list(model.config.elements)
    new = sorted({int(z) for z in elements})
    missing = sorted(set(old) - set(new))
    if missing:
        raise ValueError(f"extend_elements keeps every element; {missing} would be dropped")
    old_e0 = model.atomic_energies.tolist()
    e0_by_z = dict(zip(old, old_e0, strict=True))
    donors = {}
    for z in sorted(set(new) - set(old)):
        donor = nearest_known(z, old)
        if z not in fitted_energies or donor not in fitted_energies:
            raise ValueError(
                f"no fitted energy for {chemical_symbols[z]} or its donor "
                f"{chemical_symbols[donor]}: both must occur in the training frames"
            )
        donors[z] = donor
        e0_by_z[z] = fitted_energies[z] - (fitted_energies[donor] - e0_by_z[donor])
        log.info("new element %s starts as %s (E0 %.4f eV)", chemical_symbols[z],
                 chemical_symbols[donor], e0_by_z[z])  # fmt: skip
    config = copy.deepcopy(model.config)
    config.elements = new
    config.atomic_energies = [float(e0_by_z[z]) for z in new]
    config.extra = {**config.extra, "extended_from": {
        "elements": old, "donors": {chemical_symbols[z]: chemical_symbols[d]
                                    for z, d in donors.items()}}}  # fmt: skip
    weight = model.embedding.weight
    extended = TDNModel(config).to(dtype=weight.dtype, device=weight.device)
    state = dict(model.state_dict())
    rows = [old.index(donors.get(z, z)) for z in new]
    state["embedding.weight"] = weight.detach()[rows].clone()
    state["atomic_energies"] = torch.tensor(config.atomic_energies, dtype=torch.float64,
                                            device=weight.device)  # fmt: skip
    extended.load_state_dict(state)
    return extended


def extended_for(
    model: TDNModel, dataset: H5Dataset, train: np.ndarray, elements: Sequence[int]
) -> TDNModel:
    """``model`` extended to ``elements`` with reference energies fitted on the frames
    ``train`` of ``dataset`` (see :func:`extend_elements`)."""
    known = sorted(set(model.config.elements) | {int(z) for z in elements})
    composition = composition_of(dataset, known)[train]
    fitted = fit_atomic_energies(composition, dataset.energy[train])
    present = composition.sum(axis=0) > 0
    energies = {z: float(e) for z, e, ok in zip(known, fitted, present, strict=True) if ok}
    return extend_elements(model, known, energies)
