"""The result of a distillation: the last round's model, copied to
``<out>/models/<name>.safetensors`` with a model card naming the spec (hash), the teacher,
the data counts, the loop history and the held-out agreement, listed in the user's own
manifest ``<out>/manifest.json`` (``TDN_MANIFEST=<out>/manifest.json`` or ``--manifest``
makes it a registered model) with a chemistry-novelty summary of its training data, so
that its calculator reports ``uncertainty`` and ``uncertain``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_write, sha256_file
from .spec import DistillSpec
from .state import DistillState

#: the novelty score above which an atom is uncertain (99.9 % of training atoms score below 1)
NOVELTY_THRESHOLD = 1.0


def distill_card(spec: DistillSpec, state: DistillState) -> dict[str, Any]:
    """The ``distill`` record of the model card and manifest entry."""
    last = state.history[-1]["agreement"] if state.history else None
    return {"spec_name": spec.campaign.name, "spec_hash": spec.hash(), "teacher": spec.teacher,
            "init_from": spec.init_from, "rounds": len(state.history),
            "frames": state.frames, "teacher_calls": state.teacher_calls,
            "cpu_hours": round(state.cpu_seconds / 3600, 4), "stop_reason": state.stop_reason,
            "history": state.history, "holdout_agreement": last}


def register_result(spec: DistillSpec, state: DistillState, out: Path) -> Path:
    """Copy the last round's model with its card to ``out/models``, write its novelty
    summary there and list both in ``out/manifest.json``. Returns the model's path."""
    from ..checkpoint import load_checkpoint_file, save_model
    from ..data.dataset import H5Dataset
    from ..registry import add_to_manifest, manifest_entry
    from ..uncertainty import METHOD, fit_chemistry_novelty

    source = out / state.history[-1]["model"]
    model = load_checkpoint_file(source, device="cpu")
    record = distill_card(spec, state)
    card = {k: v for k, v in model.card.items() if k != "created"}
    card.update(name=spec.name, distill=record,
                description=f"TDN distilled from {spec.teacher} for the spec "
                            f"{spec.campaign.name!r} ({spec.hash()}) by tdn distill")
    folder = out / "models"
    folder.mkdir(exist_ok=True)
    target = save_model(model, folder / f"{spec.name}.safetensors", card)
    data = H5Dataset(out / "data")
    novelty = fit_chemistry_novelty(data, range(len(data)), model.config.elements,
                                    model.config.cutoff)
    sidecar = folder / f"{spec.name}-uncertainty.json"
    novelty.save(sidecar)
    entry = manifest_entry(target, spec.name, card["description"],
                           metrics={"holdout_agreement": record["holdout_agreement"]})
    entry["file"] = f"models/{target.name}"
    entry["distill"] = record
    entry["uncertainty"] = {"method": METHOD, "threshold": NOVELTY_THRESHOLD,
                            "file": f"models/{sidecar.name}", "sha256": sha256_file(sidecar),
                            "n_frames": len(data)}
    add_to_manifest(out / "manifest.json", entry)
    with atomic_write(out / "model_card.json", "w") as fh:
        json.dump(card, fh, indent=1)
    return target
