"""Rebuild the regression slices of the shipped models (tests/data/regression_<model>.extxyz).

A slice is ``--frames`` test-split frames of the model's data set, one from each of as many
test trajectories (picked with a fixed seed), with the reference labels (``REF_energy``,
``REF_forces``) and the registered model's own float64 predictions on them (``tdn_energy``,
``tdn_forces``). tests/test_regression_models.py checks that the model still predicts those
numbers (to 1e-4 eV, eV/Å) and that its errors on the slice stay near the ones measured.

    python tools/make_regression_slice.py                  # both models
    python tools/make_regression_slice.py tdn-organic      # one

The data sets (datasets/, git-ignored) and split files (runs/<run>/split.json, named in the
manifest's test metrics) must be present; rebuilding with the same model and data gives the
same file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {
    "tdn-organic": "datasets/organic-gfn2",
    # tdn-catalysis 2 (configs/tdn-catalysis2-v7.yaml): its coverage2 test systems, from the
    # first 2,497 trajectories of datasets/catalysis2-sevennet0
    "tdn-catalysis": "datasets/catalysis2-sevennet0-snap2497",
    # the previous one (configs/tdn-catalysis2-v6.yaml), first 2,042 trajectories
    "tdn-catalysis-20261207-3": "datasets/catalysis2-sevennet0-snap2042",
    # the previous one (configs/tdn-catalysis2-v5.yaml), first 1,486 trajectories
    "tdn-catalysis-20261207-2": "datasets/catalysis2-sevennet0-snap1486",
    # the previous one (configs/tdn-catalysis2-v3.yaml), first 825 trajectories
    "tdn-catalysis-20261207": "datasets/catalysis2-sevennet0-snap825",
    # the one before it (configs/tdn-catalysis2-v2.yaml), first 659 trajectories
    "tdn-catalysis-20261206-3": "datasets/catalysis2-sevennet0-snap659",
    "tdn-catalysis-20261206-2": "datasets/catalysis-sevennet0",
    # the first 450 trajectories of datasets/catalysis2-sevennet0 (configs/tdn-catalysis2-v1.yaml)
    "tdn-catalysis2-preview": "datasets/catalysis2-sevennet0-snap450",
}
SEED = 20261206


def slice_path(model: str) -> Path:
    return ROOT / "tests" / "data" / f"regression_{model}.extxyz"


def pick_frames(traj: np.ndarray, test: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """``n`` frame indices from ``test``: one random frame of each of ``n`` random test
    trajectories (sorted)."""
    rng = np.random.default_rng(seed)
    trajectories = np.unique(traj[test])
    chosen = rng.choice(trajectories, size=min(n, trajectories.size), replace=False)
    return np.sort([rng.choice(test[traj[test] == t]) for t in np.sort(chosen)])


def predict(frames, model: str) -> None:
    """Store the registered model's float64 energy and forces in each frame."""
    from tdn_calc.calculator import TDNCalculator

    calc = TDNCalculator(model, device="cpu", dtype="float64", extrapolation=False)
    for atoms in frames:
        calc.calculate(atoms, ["energy", "forces"])
        atoms.info["tdn_energy"] = float(calc.results["energy"])
        atoms.arrays["tdn_forces"] = np.array(calc.results["forces"], dtype=np.float64)


def build(model: str, n_frames: int) -> Path:
    from ase.io import read, write

    from tdn_calc.data.dataset import H5Dataset, sample_atoms
    from tdn_calc.data.split import load_split
    from tdn_calc.registry import list_models, model_info

    entry = {m["name"]: m for m in list_models()}[model]
    split_file = ROOT / (entry["metrics"]["test"].get("split_file")  # else the training split
                         or model_info(model)["card"]["trained_on"]["split_file"])
    dataset = H5Dataset(ROOT / DATASETS[model])
    test = load_split(split_file).indices(dataset)["test"]
    frames = []
    for index in pick_frames(dataset.traj, test, n_frames):
        sample = dataset[int(index)]
        atoms = sample_atoms(sample)
        atoms.info.update(REF_energy=sample["energy"], dataset_index=int(index),
                          trajectory=dataset.identifiers[sample["traj"]])
        atoms.arrays["REF_forces"] = sample["forces"]
        frames.append(atoms)
    out = slice_path(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, frames, format="extxyz")
    frames = read(out, ":", format="extxyz")  # predictions on the positions as stored
    predict(frames, model)
    write(out, frames, format="extxyz")
    print(json.dumps({"model": model, "file": str(out.relative_to(ROOT)),
                      "frames": len(frames), "bytes": out.stat().st_size,
                      "split_file": str(split_file.relative_to(ROOT)), **errors(frames)}))
    return out


def errors(frames) -> dict[str, float]:
    """Energy MAE (meV/atom) and force MAE (meV/Å, over components) of the stored
    predictions against the reference labels."""
    de = [abs(a.info["tdn_energy"] - a.info["REF_energy"]) / len(a) for a in frames]
    df = np.concatenate([np.abs(a.arrays["tdn_forces"] - a.arrays["REF_forces"]).ravel()
                         for a in frames])
    return {"energy_mae_meV_atom": 1000 * float(np.mean(de)),
            "forces_mae_meV_A": 1000 * float(np.mean(df))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=sorted(DATASETS),
                        help=f"any of {sorted(DATASETS)} (default: all)")
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    unknown = set(args.models) - set(DATASETS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {sorted(DATASETS)}")
    for model in args.models:
        build(model, args.frames)


if __name__ == "__main__":
    main()
