"""A per-atom learned force-error head for tdn-catalysis (issue 20): can the model's own
last-layer features, read by a small regressor trained on its errors on systems it never
saw, tell where its forces are wrong better than the committee partner does?

Stage ``collect`` evaluates the model and its committee partner on every ``--stride``-th
teacher relaxation frame (and the last) of the slab+adsorbate trajectories of ``--data``
whose system is in none of the ``--exclude-split`` files (neither model trained on them, and
no flag benchmark had evaluated them when the study ran: by default the coverage2
trajectories built after v6's later5 split, and the quarter data set; the "last" frame is the
trajectory's last relaxation frame, the teacher's minimum where it converged), and stores
per free atom: the model's last-layer invariant features ``[C]``, its element,
``|F_teacher - F_model|`` and ``|F_partner - F_model|`` (eV/Å), its system and frame
(``.npz``, a run folder's file).
Stage ``fit`` regresses ``ln(error + 0.02)`` on the features and the element one-hot (ridge
at each ``--alpha``, and a 64-64 MLP), cross-validated by system (5 folds), and reports how
well each head, the partner, and head plus partner (sum of the two logs) rank the atoms, the
frames and the teacher's minima (the trajectories' last frames) whose force error exceeds
0.5 eV/Å (AUROC), and the Spearman correlation with the error over atoms.

    OMP_NUM_THREADS=1 python benchmarks/error_head_atoms.py collect \
        --data datasets/catalysis2-sevennet0 datasets/catalysis2q-sevennet0-snap153 \
        --out runs/error-head/atoms-v6.npz   # snap153: the quarter data at commit 8f8a784
    OMP_NUM_THREADS=1 python benchmarks/error_head_atoms.py fit runs/error-head/atoms-v6.npz \
        --out benchmarks/results/error_head_atoms.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json

from tdn_calc.evaluation.flagging import auroc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FLOOR = 0.02  # eV/Å: the regression target is ln(error + FLOOR)
BAD_FORCE = 0.5  # eV/Å: the force threshold


def used_systems(split_files: list[str]) -> set[str]:
    """Systems (:func:`tdn_calc.data.split.system_of`) named in any part of ``split_files``."""
    from tdn_calc.data.split import system_of

    out: set[str] = set()
    for f in split_files:
        d = json.loads(Path(f).read_text(encoding="utf-8"))
        for part in ("train", "val", "test"):
            out.update(system_of(x) for x in d.get(part, []))
    return out


def unseen_adsorbate_labels(data: str, excluded: set[str]) -> list[str]:
    """Slab+adsorbate trajectories of ``data`` whose system is not in ``excluded``."""
    from tdn_calc.data.split import system_of
    from tdn_calc.datagen.catalysis.build import read_metadata

    return [label for label, m in read_metadata(data).items()
            if m.get("kind") == "slab" and m.get("adsorbate")
            and system_of(label) not in excluded]  # fmt: skip


def collect(args: argparse.Namespace) -> int:
    import torch

    from tdn_calc.checkpoint import load_model
    from tdn_calc.data.dataset import Collater, H5Dataset
    from tdn_calc.data.frames import FrameKind
    from tdn_calc.data.split import system_of
    from tdn_calc.datagen.catalysis.build import read_metadata

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    partner = load_model(args.partner, device="cpu")
    excluded = used_systems(args.exclude_split)
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("features", "z", "error", "committee", "group", "frame", "last")
    }
    group_of: dict[str, int] = {}  # system -> its index, in order of first appearance
    n_frames = 0
    param = next(model.parameters())
    collate = Collater(cutoff=max(model.cutoff, partner.cutoff), dtype=param.dtype,
                       max_neighbors=model.config.max_neighbors)  # fmt: skip
    for data in args.data:
        dataset = H5Dataset(data)
        meta = read_metadata(data)
        present = set(dataset.identifiers)
        labels = [x for x in unseen_adsorbate_labels(data, excluded) if x in present]
        print(f"{data}: {len(labels)} unseen slab+adsorbate trajectories", file=sys.stderr)
        for label in labels:
            idx = dataset.frames_of([label])
            idx = idx[dataset.frame_kind[idx] == FrameKind.RELAX]
            if idx.size == 0:
                continue
            idx = np.unique(np.r_[idx[:: args.stride], idx[-1]])
            g = group_of.setdefault(system_of(label), len(group_of))
            fixed = set(meta[label].get("fixed_atoms") or [])
            for k in idx:
                sample = dataset[int(k)]
                graph, _ = collate([sample])
                out = model(graph, return_features=True)
                f_model = out["forces"].detach().double().numpy()
                f_partner = partner(graph)["forces"].detach().double().numpy()
                free = np.array([a not in fixed for a in range(len(f_model))])
                err = np.linalg.norm(sample["forces"] - f_model, axis=1)[free]
                com = np.linalg.norm(f_partner - f_model, axis=1)[free]
                rows["features"].append(out["node_features"].double().numpy()[free])
                rows["z"].append(sample["atomic_numbers"][free])
                rows["error"].append(err)
                rows["committee"].append(com)
                rows["group"].append(np.full(int(free.sum()), g))
                rows["frame"].append(np.full(int(free.sum()), n_frames))
                rows["last"].append(np.full(int(free.sum()), k == idx[-1]))
                n_frames += 1
        print(f"  {n_frames} frames so far", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **{k: np.concatenate(v) for k, v in rows.items()},
                        systems=np.array(list(group_of)), meta=json.dumps({
                            "model": str(args.model), "partner": str(args.partner),
                            "data": list(args.data), "excluded_splits": list(args.exclude_split),
                            "stride": args.stride}))  # fmt: skip
    print(f"{out}: {n_frames} frames, {len(group_of)} systems", file=sys.stderr)
    return 0


def design(features: np.ndarray, z: np.ndarray, elements: list[int]) -> np.ndarray:
    """``[n, C + E]``: the features and the element one-hot."""
    onehot = (z[:, None] == np.asarray(elements)[None, :]).astype(np.float64)
    return np.hstack([features, onehot])


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, Any]:
    """Ridge regression on standardised columns; ``{"mean", "scale", "coef", "intercept"}``."""
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-12] = 1.0
    xs = (x - mean) / scale
    a = xs.T @ xs + alpha * len(xs) * np.eye(xs.shape[1])
    coef = np.linalg.solve(a, xs.T @ (y - y.mean()))
    return {"mean": mean, "scale": scale, "coef": coef, "intercept": float(y.mean())}


def predict(head: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return ((x - head["mean"]) / head["scale"]) @ head["coef"] + head["intercept"]


def ridge_fitter(alpha: float):
    """``fit(x, y) -> predict(x_new)`` of :func:`fit_ridge` at ``alpha``."""

    def fit(x: np.ndarray, y: np.ndarray):
        head = fit_ridge(x, y, alpha)
        return lambda x_new: predict(head, x_new)

    return fit


def element_mean_fitter(n_elements: int):
    """The baseline: each atom predicted by the mean of its element's training atoms (the
    last ``n_elements`` columns of the design are the element one-hot)."""

    def fit(x: np.ndarray, y: np.ndarray):
        onehot = x[:, -n_elements:] > 0.5
        means = np.array([y[col].mean() if col.any() else y.mean() for col in onehot.T])
        return lambda x_new: means[np.argmax(x_new[:, -n_elements:], axis=1)]

    return fit


def fit_mlp(x: np.ndarray, y: np.ndarray, epochs: int = 15, seed: int = 0):
    """A two-hidden-layer (64, SiLU) regressor of ``y`` on standardised ``x`` (AdamW, lr
    1e-3, weight decay 1e-3, batches of 512); returns ``predict(x_new) -> [n]``."""
    import torch

    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-12] = 1.0
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 64),
        torch.nn.SiLU(),
        torch.nn.Linear(64, 64),
        torch.nn.SiLU(),
        torch.nn.Linear(64, 1),
    )
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-3)
    xt = torch.tensor((x - mean) / scale, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for b in range(0, len(xt), 512):
            i = perm[b : b + 512]
            loss = ((net(xt[i]).squeeze(-1) - yt[i]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def run(x_new: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xn = torch.tensor((x_new - mean) / scale, dtype=torch.float32)
            return net(xn).squeeze(-1).double().numpy()

    return run


def frame_max(values: np.ndarray, frame: np.ndarray) -> np.ndarray:
    out = np.full(int(frame.max()) + 1, -np.inf)
    np.maximum.at(out, frame, values)
    return out


def fit(args: argparse.Namespace) -> int:
    from scipy.stats import spearmanr

    d = np.load(args.atoms)
    z, err, com, group, frame = d["z"], d["error"], d["committee"], d["group"], d["frame"]
    elements = sorted(int(e) for e in np.unique(z))
    x = design(d["features"], z, elements)
    y = np.log(err + FLOOR)
    rng = np.random.default_rng(0)
    fold_of_group = rng.integers(0, args.folds, int(group.max()) + 1)
    fold = fold_of_group[group]
    report: dict[str, Any] = {
        **json.loads(str(d["meta"])), "floor": FLOOR, "bad_force": BAD_FORCE,
        "folds": args.folds, "atoms": len(z), "frames": int(frame.max()) + 1,
        "systems": int(group.max()) + 1, "heads": {},
    }  # fmt: skip
    bad_atom = err > BAD_FORCE
    frame_err = frame_max(err, frame)
    bad_frame = frame_err > BAD_FORCE
    report["bad_atoms"], report["bad_frames"] = int(bad_atom.sum()), int(bad_frame.sum())
    last = frame_max(d["last"].astype(float), frame) > 0  # [n_frames] the teacher's minima
    report["bad_last_frames"] = int(bad_frame[last].sum())
    report["last_frames"] = int(last.sum())

    def rates(score: np.ndarray) -> dict[str, float]:
        per_frame = frame_max(score, frame)
        return {"auroc_atoms": auroc(score, bad_atom),
                "auroc_frames": auroc(per_frame, bad_frame),
                "auroc_last_frames": auroc(per_frame[last], bad_frame[last]),
                "spearman_atoms": float(spearmanr(score, err)[0])}  # fmt: skip

    report["committee"] = rates(com)
    fitters = {f"ridge, alpha {a:g}": ridge_fitter(a) for a in args.alpha}
    fitters["MLP 64-64"] = fit_mlp
    fitters["element alone (its mean)"] = element_mean_fitter(len(elements))
    for name, fitter in fitters.items():
        pred = np.empty_like(y)
        for f in range(args.folds):
            test = fold == f
            pred[test] = fitter(x[~test], y[~test])(x[test])
        both = pred + np.log(com + FLOOR)  # the two log-scores, equal weights
        report["heads"][name] = {"head": rates(pred), "head_and_committee": rates(both)}
        print(name, report["heads"][name], file=sys.stderr)
    print(json.dumps(report, indent=1))
    if args.out:
        write_json(Path(args.out), report)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--model", default="runs/tdn-catalysis2-v6/best.safetensors")
    c.add_argument("--partner", default="tdn-catalysis-sibling-2")
    c.add_argument(
        "--data",
        nargs="+",
        default=["datasets/catalysis2-sevennet0", "datasets/catalysis2q-sevennet0"],
    )
    c.add_argument(
        "--exclude-split",
        nargs="+",
        default=[
            "runs/tdn-catalysis2-v6/split.json",
            "runs/tdn-catalysis2-v6/split-coverage2-later5.json",
            "runs/tdn-catalysis2-sibling2/split-coverage2.json",
        ],
    )
    c.add_argument("--stride", type=int, default=3, help="every k-th relaxation frame")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--out", required=True)
    f = sub.add_parser("fit")
    f.add_argument("atoms")
    f.add_argument("--alpha", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1])
    f.add_argument("--folds", type=int, default=5)
    f.add_argument("--out", default=None)
    args = p.parse_args(argv)
    return collect(args) if args.stage == "collect" else fit(args)


if __name__ == "__main__":
    raise SystemExit(main())
