"""Fit the chemistry-novelty summary (:mod:`tdn_calc.uncertainty`) of a registered model from
the training split of its data set, write it next to the manifest as
``models/<name>-uncertainty.json`` and record it (sha256, threshold) in the manifest entry:
``"uncertainty": {"method", "threshold", "file", "sha256"}``.
The model's own .safetensors file is not touched.

    OMP_NUM_THREADS=1 nice -n 10 python tools/make_uncertainty_sidecar.py tdn-catalysis \
        --data /work/main/datasets/catalysis-sevennet0 --threshold 1.0 --max-frames 12000
    python tools/make_uncertainty_sidecar.py tdn-catalysis --threshold 1.6 --threshold-only
    python tools/make_uncertainty_sidecar.py tdn-catalysis --threshold 0.28 --threshold-only \
        --committee tdn-catalysis-20261206-3 --committee-threshold 0.54

``--committee NAME --committee-threshold X`` names a committee partner
(:mod:`tdn_calc.committee`): at a relaxed minimum an atom whose force differs by more than X
eV/Å between the two models is uncertain too; ``--committee none`` removes it. A refit (with
``--data``) keeps no partner unless ``--committee`` is given again: the new scores need both
thresholds chosen anew (``tools/calibrate_flags.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "models" / "manifest.json"


def main(argv: list[str] | None = None) -> int:
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.fileio import sha256_file
    from tdn_calc.registry import add_to_manifest, model_entry, model_info
    from tdn_calc.train.evaluate import select_frames
    from tdn_calc.uncertainty import METHOD, fit_chemistry_novelty

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="registered model name, or a .safetensors file (then only "
                                 "the summary is written, to --out; nothing is registered)")
    p.add_argument("--out", default=None, help="summary JSON of a model file")
    p.add_argument("--data", nargs="+", default=None,
                   help="the model's HDF5 data set folder(s), as its training config lists them")
    p.add_argument("--split-file", default=None, help="default: the model card's")
    p.add_argument("--threshold", type=float, required=True,
                   help="per-atom score above which an atom is uncertain (calibrated by "
                        "benchmarks/uncertainty_study.py)")
    p.add_argument("--max-frames", type=int, default=12000)
    p.add_argument("--bank-size", type=int, default=4000)
    p.add_argument("--threshold-only", action="store_true",
                   help="keep the fitted summary, record only the new --threshold")
    p.add_argument("--committee", default=None,
                   help="registered committee partner to record ('none' removes it)")
    p.add_argument("--committee-threshold", type=float, default=None,
                   help="eV/Å, the partner's force disagreement above which an atom is "
                        "uncertain (calibrated with the novelty threshold on validation)")
    args = p.parse_args(argv)
    if (args.committee not in (None, "none")) != (args.committee_threshold is not None):
        p.error("--committee NAME needs --committee-threshold (and only it)")
    if args.threshold_only:
        return set_threshold(args.model, args.threshold, args.committee,
                             args.committee_threshold)
    if not args.data:
        p.error("--data is required unless --threshold-only")

    as_file = args.model.endswith(".safetensors")
    if as_file:
        from tdn_calc.checkpoint import load_checkpoint_file

        if not args.out:
            p.error("a model file needs --out (the summary JSON to write)")
        card = load_checkpoint_file(args.model, device="cpu").card
        elements = _elements(card["elements"])
    else:
        entry = model_entry(args.model, MANIFEST)
        card = model_info(args.model, MANIFEST).get("card") or {}
        elements = _elements(entry["elements"])
    dataset = H5Dataset(args.data)
    indices, used = select_frames(dataset, "train", args.split_file, card)
    summary = fit_chemistry_novelty(dataset, indices, elements, float(card["cutoff"]),
                                    max_frames=args.max_frames, bank_size=args.bank_size)
    if as_file:
        summary.save(Path(args.out))
        print(f"wrote {args.out} ({summary.n_frames} training frames)")
        return 0
    name = f"{entry['name']}-uncertainty.json"
    summary.save(MANIFEST.parent / name)
    record = {"method": METHOD, "threshold": args.threshold, "file": name,
              "sha256": sha256_file(MANIFEST.parent / name), "split_file": used,
              "n_frames": summary.n_frames}
    if args.committee not in (None, "none"):
        record["committee"] = {"model": model_entry(args.committee, MANIFEST)["name"],
                               "force_threshold": args.committee_threshold}
    old = _stored_entry(entry["name"])
    if "curvature_threshold" in (old.get("uncertainty") or {}):
        print("the curvature threshold was chosen with the old summary and is removed: "
              "calibrate again (tools/calibrate_flags.py --curvature --write)", file=sys.stderr)
    add_to_manifest(MANIFEST, {**old, "uncertainty": record})
    print(json.dumps(record, indent=1))
    return 0


def set_threshold(model: str, threshold: float, committee: str | None = None,
                  committee_threshold: float | None = None, *,
                  curvature_threshold: float | str | None = None) -> int:
    """Record ``threshold`` in the manifest's ``uncertainty`` record of ``model`` (whose
    summary file stays as fitted), the committee partner ``committee`` with its force
    threshold (eV/Å) when given (``"none"``: remove the partner), and the adsorbate-curvature
    threshold (eV/Å², :mod:`tdn_calc.soft_modes`) when given (``"none"``: remove it)."""
    from tdn_calc.registry import add_to_manifest, model_entry

    entry = _stored_entry(model_entry(model, MANIFEST)["name"])
    record = entry.get("uncertainty")
    if not record:
        raise SystemExit(f"{entry['name']} has no uncertainty summary yet: fit one (--data ...)")
    record["threshold"] = threshold
    if committee == "none":
        record.pop("committee", None)
    elif committee is not None:
        partner = model_entry(committee, MANIFEST)["name"]  # its own name, not an alias
        record["committee"] = {"model": partner, "force_threshold": committee_threshold}
    if curvature_threshold == "none":
        record.pop("curvature_threshold", None)
    elif curvature_threshold is not None:
        record["curvature_threshold"] = float(curvature_threshold)
    add_to_manifest(MANIFEST, entry)
    print(json.dumps(record, indent=1))
    return 0


def _stored_entry(name: str) -> dict:
    """The manifest's own entry of the registered model ``name``, as stored."""
    return json.loads(MANIFEST.read_text(encoding="utf-8"))["models"][name]


def _elements(symbols: list[str]) -> list[int]:
    """Atomic numbers of the manifest's element symbols, in the model's order."""
    from ase.data import atomic_numbers

    return sorted(atomic_numbers[s] for s in symbols)


if __name__ == "__main__":
    sys.exit(main())
