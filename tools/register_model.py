"""Maintainers' tool: ship a trained checkpoint in models/ and list it in models/manifest.json.

    python tools/register_model.py runs/x/best.safetensors --name tdn-organic \
        --description "..." [--alias organic] [--license MIT] [--default]

The file is copied to ``models/<name>-<YYYYMMDD>.safetensors``; its sha256, size, elements,
reference method and metrics come from the file and its model card, never typed by hand.
The entry's ``equivariance`` field holds the measured O(3) symmetry errors of the shipped file
(float64) on the example molecule and slab that its elements cover
(:func:`tdn_calc.model_checks.equivariance_summary`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
from pathlib import Path

from ase.data import chemical_symbols
from ase.io import read

from tdn_calc.checkpoint import load_checkpoint_file, read_metadata
from tdn_calc.fileio import atomic_write, sha256_file
from tdn_calc.model_checks import equivariance_summary

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
#: Structures the equivariance of a model is measured on (those its elements cover).
EQUIVARIANCE_STRUCTURES = {
    "molecule (aspirin)": ROOT / "examples" / "molecules" / "aspirin.xyz",
    "slab (Pt(111)+CO)": ROOT / "examples" / "slabs" / "pt111_co.xyz",
}


def measure_equivariance(checkpoint: Path) -> dict[str, dict]:
    """O(3) symmetry errors of ``checkpoint`` (float64, 8 random transformations, half of
    them improper) on the :data:`EQUIVARIANCE_STRUCTURES` its elements cover."""
    model = load_checkpoint_file(checkpoint, device="cpu", dtype="float64")
    candidates = {name: read(path) for name, path in EQUIVARIANCE_STRUCTURES.items()}
    return equivariance_summary(model, candidates, n_rotations=8, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--alias", action="append", default=[])
    parser.add_argument("--license", default="MIT")
    parser.add_argument("--default", action="store_true", help="preferred by --model auto")
    args = parser.parse_args()

    config, card = read_metadata(args.checkpoint)  # also validates the file
    stamp = datetime.date.today().strftime("%Y%m%d")
    target = MODELS / f"{args.name}-{stamp}.safetensors"
    with atomic_write(target) as out, open(args.checkpoint, "rb") as src:
        shutil.copyfileobj(src, out)
    trained_on = card.get("trained_on", {})
    entry = {
        "name": args.name,
        "aliases": args.alias,
        "file": target.name,
        "sha256": sha256_file(target),
        "size": target.stat().st_size,
        "elements": [chemical_symbols[z] for z in config.elements],
        "reference_method": trained_on.get("reference_method", "unknown"),
        "description": args.description,
        "dataset": {k: trained_on.get(k) for k in ("dataset", "dataset_sha256", "n_frames")},
        "architecture": {
            k: getattr(config, k)
            for k in ("lmax", "channels", "num_layers", "num_heads", "cutoff", "tp_backend")
        },
        "metrics": card.get("metrics", {}),
        "equivariance": measure_equivariance(target),
        "license": args.license,
        "default": args.default,
    }
    manifest_path = MODELS / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"][args.name] = entry
    with atomic_write(manifest_path, "w") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
