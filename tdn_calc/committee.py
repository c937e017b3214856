"""Committee check at a relaxed minimum: does a second model agree on the forces there?

The chemistry-novelty score (:mod:`tdn_calc.uncertainty`) says whether an atom's neighbour
chemistry was in training; it cannot see a model that is wrong on chemistry it *has* seen.
A model card may therefore name a **committee partner**: a second registered model trained
on overlapping data from another start (manifest entry
``"uncertainty": {..., "committee": {"model": NAME, "force_threshold": X}}``). At a relaxed
minimum, and only there (one extra force call per structure, not per step), the partner
recomputes the forces; an atom whose force differs by more than ``X`` eV/Å between the two
models is uncertain, like an atom above the novelty threshold. The two thresholds are
calibrated together on validation relaxations (:func:`tdn_calc.evaluation.flagging.calibrate_rule`).

Per structure the relaxed frame gets ``arrays["committee_force"]`` (``[n_atoms]``, eV/Å,
``|F_partner - F_model|`` per atom, 0 on fixed atoms) and ``info["committee_force_max"]``.
A structure the partner cannot compute (an element it does not know) gets neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from .errors import CheckpointError, InputError, TDNError
from .slab import fixed_mask

#: per-atom key of the force disagreement in ``frame.arrays`` / the scores of
#: :func:`~tdn_calc.uncertainty.uncertain_atoms`
ARRAY_KEY = "committee_force"
INFO_KEY = "committee_force_max"


@dataclass
class CommitteePartner:
    """A second model whose forces are compared with the model's at a minimum.

    Attributes:
        name: the partner's registered name.
        force_threshold: per-atom force disagreement (eV/Å) above which an atom is uncertain.
    """

    name: str
    force_threshold: float
    manifest: str | os.PathLike | None = None
    device: Any = "cpu"
    _calculator: Any = field(default=None, repr=False)

    @property
    def calculator(self):
        """The partner's calculator (no scores of its own), built on first use."""
        if self._calculator is None:
            from .calculator import TDNCalculator

            try:
                self._calculator = TDNCalculator(self.name, device=self.device,
                                                  manifest=self.manifest, extrapolation=False,
                                                  uncertainty=False)  # fmt: skip
            except TDNError as err:
                raise CheckpointError(
                    f"the committee partner {self.name!r} named in the model card cannot be "
                    f"loaded ({err}); fix the manifest entry's uncertainty.committee record "
                    "or reinstall tdn-calc") from err
        return self._calculator

    def disagreement(self, atoms: Atoms, forces: np.ndarray) -> np.ndarray | None:
        """``[n_atoms]`` ``|F_partner - forces|`` (eV/Å) per atom at ``atoms``, 0 on atoms held
        by ``FixAtoms``; ``None`` when the partner does not cover the elements of ``atoms``.

        Args:
            atoms: the relaxed structure.
            forces: ``[n_atoms, 3]`` the model's forces there (eV/Å).
        """
        if not set(atoms.numbers) <= set(int(z) for z in self.calculator.model.elements):
            return None
        probe = atoms.copy()
        probe.calc = self.calculator
        try:
            other = probe.get_forces(apply_constraint=False)
        except InputError:
            return None
        gap = np.linalg.norm(other - np.asarray(forces, dtype=float), axis=1)
        gap[fixed_mask(atoms)] = 0.0
        return gap


def partner_record(name: str, manifest: str | os.PathLike | None = None
                   ) -> dict[str, Any] | None:
    """The ``"committee"`` record of registered model ``name``'s uncertainty entry, or None."""
    from .registry import model_entry

    record = (model_entry(name, manifest).get("uncertainty") or {}).get("committee")
    return dict(record) if record else None


def partner_for_loaded_model(model: Any, manifest: str | os.PathLike | None = None
                             ) -> CommitteePartner | None:
    """The committee partner named by the card of a loaded registered model (found by its
    file's sha256, ``model.sha256``), or ``None``. Kept on the model, so the partner is
    loaded once per model."""
    from .registry import per_registered_model

    def partner(name: str) -> CommitteePartner | None:
        record = partner_record(name, manifest)
        if not record:
            return None
        threshold = record.get("force_threshold")
        if not record.get("model") or not isinstance(threshold, (int, float)) or threshold <= 0:
            raise CheckpointError(
                f"model {name!r}: the manifest's uncertainty.committee record needs 'model' (a "
                f"registered name) and a positive 'force_threshold' (eV/Å), got {record}")
        found = CommitteePartner(record["model"], float(threshold), manifest=manifest,
                                 device=next(model.parameters()).device)
        found.calculator  # noqa: B018 - loaded now: a bad partner fails before any relaxation
        return found

    return per_registered_model(model, "_tdn_committee", manifest, partner)


def add_committee_scores(scores: dict[str, Any], atoms: Atoms, forces: np.ndarray,
                         partner: CommitteePartner | None) -> float | None:
    """Put the partner's per-atom force disagreement at ``atoms`` into ``scores`` (a
    calculator's ``results`` or a frame's ``arrays``, under :data:`ARRAY_KEY`) and return the
    partner's threshold for :func:`~tdn_calc.uncertainty.uncertain_atoms`; ``None`` and
    nothing added without a partner or when it cannot compute it."""
    gap = None if partner is None else partner.disagreement(atoms, forces)
    if gap is None:
        return None
    scores[ARRAY_KEY] = gap
    return partner.force_threshold


def annotate_committee(frame: Atoms, forces: np.ndarray, partner: CommitteePartner | None
                       ) -> float | None:
    """:func:`add_committee_scores` on ``frame.arrays``, with ``info[INFO_KEY]`` (the largest
    disagreement, eV/Å); returns the threshold to apply, or ``None``."""
    threshold = add_committee_scores(frame.arrays, frame, forces, partner)
    if threshold is not None:
        gap = frame.arrays[ARRAY_KEY]
        frame.info[INFO_KEY] = float(gap.max()) if len(gap) else 0.0
    return threshold
