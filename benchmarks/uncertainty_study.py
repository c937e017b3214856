"""Uncertainty study: which per-atom score catches new chemistry (issue: silently wrong
numbers on new adsorbates, facets, thick slabs and strained cells).

1. **Starts** (:func:`study_starts`, deterministic): in-domain (111) 3x3x4 slabs of the six
   trained metals with trained adsorbates (H C N O OH CO CH3 H2O); out-of-domain: new
   adsorbates of trained elements on trained metals (111), trained adsorbates on (100),
   (110), (211), six-layer (111) slabs, and (111) slabs strained laterally by 4-6 %.
2. **Labels** (:func:`label_start`, cached per start in ``results/uncertainty_cache/``):
   relax with tdn-catalysis (BFGS, fmax 0.03 eV/Å), then SevenNet-0 at the TDN minimum
   (energy, forces) and, when its fmax there is at most 0.5 eV/Å, a SevenNet-0 BFGS
   relaxation continued from the TDN minimum (fmax 0.03, <= 150 steps). A structure is
   *bad* when the teacher fmax (free atoms) at the TDN minimum exceeds 0.5 eV/Å or the
   teacher energy there lies more than 0.2 eV above the teacher's nearby minimum (the
   relaxation is skipped for those already bad by force); an atom is bad when
   ``|F_tdn - F_teacher| > 0.5`` eV/Å.
3. **Scores** (:func:`study`): every candidate on the TDN minima, per structure the maximum
   over atoms: (a) the current Mahalanobis score, (b) chemistry/density scores (Mahalanobis of
   every layer's invariants; nearest training atom in last-layer features or in the
   neighbour-element histogram, the shipped one), (c) LLPR of the energy head's hidden layer
   per atom and per structure. A committee of readout heads was not tried. Each candidate's
   threshold is chosen on the even-numbered starts (the highest recall of bad with a
   false-flag rate of good at most 15 %, :func:`calibrate`) and reported on the odd-numbered
   ones too; AUROC per structure and per free atom; the ms each adds to a call.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/uncertainty_study.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from tdn_calc.datagen.catalysis.adsorbates import place_adsorbate
from tdn_calc.datagen.catalysis.surfaces import build_surface
from tdn_calc.evaluation.flagging import (
    BAD_DE,
    BAD_FMAX,
    MAX_FALSE_FLAG,
    MIN_RECALL,
    auroc,
    calibrate,
    rates,
    targets_met,
)
from tdn_calc.fileio import atomic_write

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "uncertainty_cache"
OUT = HERE / "results" / "uncertainty_study.json"
LATTICE = {"Ag": 4.16608, "Au": 4.17110, "Cu": 3.61181, "Ni": 3.50424, "Pd": 3.95399,
           "Pt": 3.97769}  # SevenNet-0's own fcc lattice constants, Å (data set's table)
TRAINED_ADS = ("H", "C", "N", "O", "OH", "CO", "CH3", "H2O")
ATOM_CUT = 0.5  # eV/Å, |F_tdn - F_teacher| of a bad atom
FMAX = 0.03
TEACHER_STEPS = 150
DATA = "/work/main/datasets/catalysis-sevennet0"
SPLIT = "/work/main/runs/tdn-catalysis-v3/split.json"


# ---------------------------------------------------------------- starts
def slab_start(metal: str, facet: str, ads: str | None, site: str | None, *, layers: int = 4,
               strain: float = 0.0, seed: int = 0) -> Atoms:
    """A 3x3 (2x3 for (110)) slab of ``layers`` layers, bottom two fixed, lattice scaled by
    ``1 + strain`` in-plane only, ``ads`` placed on ``site`` with a 0.15 Å lateral jitter."""
    rng = np.random.default_rng(seed)
    size = (2, 3, layers) if facet == "110" else (3, 3, layers)
    surf = build_surface(metal, facet, size, (LATTICE[metal],), fixed_layers=2)
    atoms = surf.atoms
    if strain:
        cell = atoms.cell.array.copy()
        cell[:2] *= 1 + strain
        atoms.set_cell(cell, scale_atoms=False)
        atoms.positions[:, :2] *= 1 + strain
    n_metal = len(atoms)
    if ads is not None:
        xy = surf.sites[site] * (1 + strain) + rng.normal(0.0, 0.15, 2)
        place_adsorbate(atoms, n_metal, ads, xy, rng)
    atoms.set_constraint(FixAtoms(mask=np.r_[surf.layer >= layers - 2,
                                             np.zeros(len(atoms) - n_metal, bool)]))
    return atoms


def study_starts() -> list[dict[str, Any]]:
    """``[{"label", "group", "atoms"}]``: 20 in-domain, 10 new-adsorbate, 8 facet, 4 six-layer
    and 4 strained starts (fixed seeds)."""
    metals = ("Pt", "Pd", "Ni", "Cu", "Ag", "Au")
    sites = ("top", "bridge", "fcc", "hcp")
    out = []
    rng = np.random.default_rng(2026)
    for k in range(20):
        metal, ads, site = metals[k % 6], TRAINED_ADS[k % 8], sites[int(rng.integers(4))]
        out.append(("in_domain", f"{metal}111/{ads}/{site}/s{k}", (metal, "111", ads, site), {}))
    new = [("Pt", "COOH", "top"), ("Cu", "NNH", "top"), ("Ni", "CH2", "bridge"),
           ("Pt", "NH2", "bridge"), ("Cu", "HCOO", "top"), ("Pd", "CHO", "bridge"),
           ("Au", "NH3", "top"), ("Pt", "OOH", "top"), ("Ni", "CH3O", "fcc"), ("Pd", "NO", "fcc")]
    out += [("new_adsorbate", f"{m}111/{a}/{s}", (m, "111", a, s), {}) for m, a, s in new]
    facets = [("Pt", "100", "CO", "top"), ("Cu", "100", "O", "hollow"),
              ("Ni", "110", "H", "shortbridge"), ("Pd", "110", "OH", "shortbridge"),
              ("Au", "211", "CO", "step_top"), ("Pt", "211", "H", "step_bridge"),
              ("Ag", "100", "N", "hollow"), ("Ni", "211", "CH3", "terrace_hollow")]
    out += [("facet", f"{m}{f}/{a}/{s}", (m, f, a, s), {}) for m, f, a, s in facets]
    thick = [("Pt", "CO", "top"), ("Cu", "H", "fcc"), ("Ni", "O", "hcp"), ("Au", None, None)]
    out += [("six_layer", f"{m}111x6/{a}/{s}", (m, "111", a, s), {"layers": 6})
            for m, a, s in thick]
    strained = [("Pt", "CO", "top", 0.05), ("Cu", "O", "fcc", -0.04), ("Pd", "H", "fcc", 0.06),
                ("Ag", "OH", "top", -0.05)]
    out += [("strained", f"{m}111{e:+.0%}/{a}/{s}", (m, "111", a, s), {"strain": e})
            for m, a, s, e in strained]
    starts = []
    for seed, (group, label, args, kw) in enumerate(out):
        starts.append({"label": label, "group": group,
                       "atoms": slab_start(*args, seed=seed, **kw)})
    return starts


# ---------------------------------------------------------------- labels
def _free(atoms: Atoms) -> np.ndarray:
    fixed = np.zeros(len(atoms), bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed[c.index] = True
    return ~fixed


def cache_path(label: str) -> Path:
    return CACHE / (label.replace("/", "_").replace("%", "pc").replace("+", "p") + ".json")


def label_start(start: dict[str, Any], calc, teacher) -> dict[str, Any]:
    """Relax ``start`` with ``calc`` (TDN), judge with ``teacher``; the cached row (JSON)."""
    from tdn_calc.relax import relax

    path = cache_path(start["label"])
    if path.exists():
        return json.loads(path.read_text())
    atoms = start["atoms"]
    free = _free(atoms)
    t0 = time.perf_counter()
    try:
        res = relax(atoms, calc, fmax=FMAX, steps=300, optimizer="BFGS", warn=False)
    except Exception as exc:
        row = {"label": start["label"], "group": start["group"], "error": repr(exc)}
        path.write_text(json.dumps(row))
        return row
    tdn_s = time.perf_counter() - t0
    minimum = res.atoms.copy()
    minimum.set_constraint(atoms.constraints)
    f_tdn = res.atoms.get_forces(apply_constraint=False)
    minimum.calc = teacher
    e_t = float(minimum.get_potential_energy())
    f_t = minimum.get_forces(apply_constraint=False)
    fmax_t = float(np.linalg.norm(f_t[free], axis=1).max())
    e_tmin, t_steps, t_conv = None, 0, None
    if fmax_t <= BAD_FMAX:
        tres = relax(minimum, teacher, fmax=FMAX, steps=TEACHER_STEPS, optimizer="BFGS",
                     warn=False, guard=None)
        e_tmin, t_steps, t_conv = tres.energy, tres.n_steps, tres.converged
    de = None if e_tmin is None else e_t - e_tmin
    bad = fmax_t > BAD_FMAX or (de is not None and de > BAD_DE)
    row = {
        "label": start["label"], "group": start["group"], "n_atoms": len(atoms),
        "numbers": atoms.numbers.tolist(), "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(), "free": free.tolist(),
        "positions": minimum.positions.tolist(),
        "tdn_converged": res.converged, "tdn_steps": res.n_steps, "tdn_energy": res.energy,
        "tdn_s": tdn_s, "forces_tdn": f_tdn.tolist(), "forces_teacher": f_t.tolist(),
        "teacher_energy_at_tdn_min": e_t, "teacher_fmax_at_tdn_min": fmax_t,
        "teacher_min_energy": e_tmin, "teacher_steps": t_steps, "teacher_converged": t_conv,
        "de_above_teacher_min": de, "bad": bool(bad),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def label_all(starts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cached rows of every start (computes the missing ones)."""
    if all(cache_path(s["label"]).exists() for s in starts):
        return [json.loads(cache_path(s["label"]).read_text()) for s in starts]
    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.teachers import get_teacher

    calc = TDNCalculator("tdn-catalysis", device="cpu")
    teacher = get_teacher("sevenn-0")
    rows = []
    for s in starts:
        t0 = time.perf_counter()
        row = label_start(s, calc, teacher)
        print(f"{s['label']:28s} bad={row.get('bad')} fmax_t={row.get('teacher_fmax_at_tdn_min')}"
              f" dE={row.get('de_above_teacher_min')} {time.perf_counter() - t0:.1f}s",
              flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- candidate scores
def row_atoms(row: dict[str, Any]) -> Atoms:
    """The TDN minimum of a cached row."""
    return Atoms(numbers=row["numbers"], positions=row["positions"], cell=row["cell"],
                 pbc=row["pbc"])


def atom_features(model, graph) -> dict[str, np.ndarray]:
    """Per-atom candidate features of ``graph`` (float64 numpy, ``[n_atoms, .]``):
    ``last`` (last-layer invariants, the Mahalanobis score's), ``blocks`` (both blocks'
    invariants and the last layer's, concatenated), ``hidden`` (the energy head's hidden layer,
    the LLPR features) and ``hist`` (:func:`tdn_calc.uncertainty.graph_histogram`)."""
    import torch

    from tdn_calc.uncertainty import graph_histogram

    kept: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: kept.append(o[:, 0, :].detach()))
             for b in model.blocks]
    try:
        with torch.no_grad():
            x = model.node_features(graph)[:, 0, :]
            h = model.head[1](model.head[0](x))
    finally:
        for hook in hooks:
            hook.remove()
    return {"last": x.double().numpy(), "hidden": h.double().numpy(),
            "blocks": torch.cat([*kept, x], dim=1).double().numpy(),
            "hist": graph_histogram(graph, model.elements, model.cutoff),
            "numbers": graph.atomic_numbers.numpy(), "system": graph.system_idx.numpy()}


def training_features(model, n_frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """:func:`atom_features` of ``n_frames`` random frames of the training split."""
    import torch

    from tdn_calc.data.dataset import Collater, H5Dataset
    from tdn_calc.train.evaluate import select_frames

    dataset = H5Dataset(DATA)
    indices, _ = select_frames(dataset, "train", SPLIT, None)
    indices = np.sort(np.random.default_rng(seed).choice(indices, n_frames, replace=False))
    collate = Collater(cutoff=model.cutoff, dtype=torch.float64, max_neighbors=None)
    parts = []
    for s in range(0, len(indices), 16):
        graph, _ = collate([dataset[int(k)] for k in indices[s:s + 16]])
        f = atom_features(model, graph)
        f["system"] = f["system"] + s
        parts.append(f)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _quantile_scaled(values: np.ndarray) -> float:
    return max(float(np.quantile(values, 0.999)), 1e-12)


class Mahalanobis:
    """Per-element Mahalanobis distance of feature ``key`` (shrinkage 0.1), in units of the
    training atoms' 99.9th percentile."""

    def __init__(self, train: dict[str, np.ndarray], key: str) -> None:
        from tdn_calc.extrapolation import shrunk_covariance

        self.key, self.fit = key, {}
        for z in np.unique(train["numbers"]):
            x = train[key][train["numbers"] == z]
            mu, prec = x.mean(0), np.linalg.inv(shrunk_covariance(x, 0.1))
            self.fit[z] = (mu, prec, 1.0)
            self.fit[z] = (mu, prec, _quantile_scaled(self._d(x, z)))

    def _d(self, x: np.ndarray, z: int) -> np.ndarray:
        mu, prec, scale = self.fit[z]
        return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", x - mu, prec, x - mu), 0)) / scale

    def __call__(self, f: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(len(f["numbers"]))
        for z in np.unique(f["numbers"]):
            sel = f["numbers"] == z
            out[sel] = self._d(f[self.key][sel], z)
        return out


class NearestNeighbour:
    """Per-element distance to the nearest training atom in feature ``key``, in units of the
    training atoms' leave-one-out 99.9th percentile (the shipped score for ``hist``)."""

    def __init__(self, train: dict[str, np.ndarray], key: str, bank: int = 4000) -> None:
        from tdn_calc.uncertainty import fit_histograms

        groups = {int(z): train[key][train["numbers"] == z] for z in np.unique(train["numbers"])}
        self.key = key
        self.summary = fit_histograms(groups, [], 0.0, bank_size=bank, resolution=0.0)

    def __call__(self, f: dict[str, np.ndarray]) -> np.ndarray:
        return self.summary.score(f[self.key], f["numbers"])


class LLPR:
    """Last-layer prediction rigidity of the energy head's hidden features ``h`` ``[C]``:
    ``h^T (H^T H / n + lam * mean(diag) * I)^-1 h`` with ``H`` the training atoms' (per
    element, or per structure with ``structure=True`` on per-frame sums), in units of the
    training 99.9th percentile."""

    def __init__(self, train: dict[str, np.ndarray], structure: bool = False,
                 lam: float = 1e-3) -> None:
        self.structure, self.fit = structure, {}
        if structure:
            sums = np.zeros((train["system"].max() + 1, train["hidden"].shape[1]))
            np.add.at(sums, train["system"], train["hidden"])
            groups = {None: sums}
        else:
            groups = {z: train["hidden"][train["numbers"] == z]
                      for z in np.unique(train["numbers"])}
        for z, h in groups.items():
            a = h.T @ h / len(h)
            prec = np.linalg.inv(a + lam * np.trace(a) / len(a) * np.eye(len(a)))
            self.fit[z] = (prec, 1.0)
            self.fit[z] = (prec, _quantile_scaled(self._u(h, z)))

    def _u(self, h: np.ndarray, z) -> np.ndarray:
        prec, scale = self.fit[z]
        return np.einsum("ni,ij,nj->n", h, prec, h) / scale

    def __call__(self, f: dict[str, np.ndarray]) -> np.ndarray:
        if self.structure:
            return np.full(len(f["numbers"]), self._u(f["hidden"].sum(0, keepdims=True), None)[0])
        out = np.zeros(len(f["numbers"]))
        for z in np.unique(f["numbers"]):
            sel = f["numbers"] == z
            out[sel] = self._u(f["hidden"][sel], z)
        return out


# ---------------------------------------------------------------- metrics
def evaluate(name: str, per_atom: list[np.ndarray], rows: list[dict[str, Any]],
             fixed_threshold: float | None) -> dict[str, Any]:
    """Per-structure (max over atoms) and per-atom (free atoms) figures of one candidate."""
    smax = np.array([float(p.max()) for p in per_atom])
    bad = np.array([r["bad"] for r in rows])
    calib = np.arange(len(rows)) % 2 == 0
    t = calibrate(smax[calib], bad[calib])
    atom_s, atom_y = [], []
    for r, p in zip(rows, per_atom, strict=True):
        err = np.linalg.norm(np.subtract(r["forces_tdn"], r["forces_teacher"]), axis=1)
        free = np.asarray(r["free"])
        atom_s.append(p[free])
        atom_y.append(err[free] > ATOM_CUT)
    out = {"name": name, "auroc": auroc(smax, bad),
           "auroc_atoms": auroc(np.concatenate(atom_s), np.concatenate(atom_y)),
           "threshold_calibrated": t, "calibration_half": rates(smax[calib], bad[calib], t),
           "held_out_half": rates(smax[~calib], bad[~calib], t), "all": rates(smax, bad, t),
           "structure_scores": smax.tolist()}
    if fixed_threshold is not None:
        out["threshold_fixed"] = fixed_threshold
        out["at_fixed_threshold"] = rates(smax, bad, fixed_threshold)
    held = out["held_out_half"]
    out["targets_met_held_out"] = targets_met(held)
    return out


def group_recall(rows: list[dict[str, Any]], smax: list[float], t: float) -> dict[str, Any]:
    """Per start group: bad / flagged-bad / good / flagged-good counts at threshold ``t``."""
    out: dict[str, Any] = {}
    for r, s in zip(rows, smax, strict=True):
        g = out.setdefault(r["group"], {"bad": 0, "bad_flagged": 0, "good": 0,
                                        "good_flagged": 0})
        key = "bad" if r["bad"] else "good"
        g[key] += 1
        g[f"{key}_flagged"] += int(s > t)
    return out


# ---------------------------------------------------------------- cost
def call_cost(n_repeat: int = 30) -> dict[str, float]:
    """Median ms of one energy+forces call of tdn-catalysis (float32, CPU) on a 38-atom
    Pt(111)+CO slab without scores, with the Mahalanobis score (one more forward pass), with
    the shipped novelty score, and with both; the calculators take turns (round robin) so
    that a busy machine slows them alike."""
    from tdn_calc.calculator import TDNCalculator

    atoms = slab_start("Pt", "111", "CO", "top")
    calcs = {key: TDNCalculator("tdn-catalysis", device="cpu", extrapolation=e, uncertainty=u)
             for key, e, u in (("bare", False, False), ("with_mahalanobis", True, False),
                               ("with_novelty", False, True), ("with_both", True, True))}
    times: dict[str, list[float]] = {key: [] for key in calcs}
    for k in range(n_repeat + 3):
        for key, calc in calcs.items():
            a = atoms.copy()
            a.positions[-1, 2] += 1e-4 * k
            a.calc = calc
            t0 = time.perf_counter()
            a.get_forces()
            times[key].append(time.perf_counter() - t0)
    out = {f"{key}_ms": 1e3 * float(np.median(t[3:])) for key, t in times.items()}
    for key in ("with_mahalanobis", "with_novelty", "with_both"):
        out[f"{key}_overhead"] = out[f"{key}_ms"] / out["bare_ms"] - 1
    return out


def time_ms(fn, *args, repeat: int = 20) -> float:
    """Median ms of ``fn(*args)``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def split_flag_rates(model, summary, threshold: float, n_frames: int = 400, seed: int = 1
                     ) -> dict[str, Any]:
    """The shipped score on random test-split frames (held-out systems of the training
    distribution, SevenNet-0 labels stored): fraction of frames and atoms flagged at
    ``threshold``, per frame kind, and against the frame's largest force error of ``model``
    (a frame is bad when an atom's ``|F_tdn - F_label| > ATOM_CUT``)."""
    import torch

    from tdn_calc.data.dataset import Collater, H5Dataset
    from tdn_calc.data.frames import kind_name
    from tdn_calc.train.evaluate import select_frames

    dataset = H5Dataset(DATA)
    indices, _ = select_frames(dataset, "test", SPLIT, None)
    indices = np.sort(np.random.default_rng(seed).choice(indices, n_frames, replace=False))
    collate = Collater(cutoff=summary.cutoff, dtype=torch.float64, max_neighbors=None)
    frame_max, frame_err, n_atoms, n_flagged = [], [], 0, 0
    for s in range(0, len(indices), 32):
        graph, target = collate([dataset[int(k)] for k in indices[s:s + 32]])
        scores = summary.score_graph(graph)
        err = (model(graph)["forces"] - target["forces"]).norm(dim=1).numpy()
        system = graph.system_idx.numpy()
        frame_max += [float(scores[system == k].max()) for k in range(graph.n_systems)]
        frame_err += [float(err[system == k].max()) for k in range(graph.n_systems)]
        n_atoms, n_flagged = n_atoms + len(scores), n_flagged + int((scores > threshold).sum())
    kinds = np.array([str(kind_name(k)) for k in dataset.frame_kind[indices]])
    score, bad = np.array(frame_max), np.array(frame_err) > ATOM_CUT
    flagged = score > threshold
    return {"n_frames": len(indices), "frames_flagged": float(flagged.mean()),
            "atoms_flagged": n_flagged / n_atoms,
            "by_kind": {str(k): {"n": int((kinds == k).sum()),
                            "flagged": float(flagged[kinds == k].mean())}
                        for k in sorted(set(kinds))},
            "bad_frames": int(bad.sum()), "auroc": auroc(score, bad),
            **rates(score, bad, threshold)}


# ---------------------------------------------------------------- study
def study(n_train_frames: int) -> dict[str, Any]:
    import torch

    from tdn_calc.checkpoint import load_model
    from tdn_calc.extrapolation import from_card
    from tdn_calc.graph import atoms_to_graph
    from tdn_calc.registry import model_entry
    from tdn_calc.uncertainty import for_model

    rows = [r for r in label_all(study_starts()) if "positions" in r]
    model = load_model("tdn-catalysis", device="cpu", dtype="float64")
    train = training_features(model, n_train_frames)
    dist = from_card(model.card)
    shipped, shipped_threshold = for_model("tdn-catalysis")
    feats = []
    for r in rows:
        graph = atoms_to_graph([row_atoms(r)], model.cutoff, dtype=torch.float64, device="cpu")
        feats.append((atom_features(model, graph), graph))
    mahalanobis = {"name": "(a) Mahalanobis, last-layer invariants (current)",
                   "fn": lambda f, g: dist.score(f["last"], f["numbers"])}
    shipped_c = {"name": "(b) nearest training neighbour-element histogram (shipped)",
                 "fn": lambda f, g: shipped.score_graph(g)}
    knn_last = NearestNeighbour(train, "last")
    maha_blocks = Mahalanobis(train, "blocks")
    llpr_atom, llpr_struct = LLPR(train), LLPR(train, structure=True)
    candidates = [
        mahalanobis,
        {"name": "(b) Mahalanobis, invariants of every layer", "fn": lambda f, g: maha_blocks(f)},
        {"name": "(b) nearest training atom, last-layer invariants",
         "fn": lambda f, g: knn_last(f)},
        shipped_c,
        {"name": "(c) LLPR per atom (per element)", "fn": lambda f, g: llpr_atom(f)},
        {"name": "(c) LLPR per structure", "fn": lambda f, g: llpr_struct(f)},
        {"name": "max of (a) and shipped (b)",
         "fn": lambda f, g: np.maximum(mahalanobis["fn"](f, g), shipped_c["fn"](f, g))},
    ]
    results = []
    for c in candidates:
        per_atom = [c["fn"](f, g) for f, g in feats]
        res = evaluate(c["name"], per_atom, rows, 1.0)  # all: 99.9 % of training atoms < 1
        f0, g0 = feats[0]
        res["extra_ms_38_atoms"] = time_ms(c["fn"], f0, g0)
        res["by_group_at_calibrated"] = group_recall(rows, res["structure_scores"],
                                                     res["threshold_calibrated"])
        results.append(res)
        print(f"{c['name']:60s} AUROC {res['auroc']:.2f} atoms {res['auroc_atoms']:.2f} "
              f"t={res['threshold_calibrated']:.2f} held-out {res['held_out_half']}", flush=True)
    entry = model_entry("tdn-catalysis")
    return {
        "benchmark": "uncertainty_study", "model": "tdn-catalysis",
        "model_sha256": entry["sha256"], "teacher": "sevenn-0",
        "created": time.strftime("%Y-%m-%d"),
        "targets": {"min_recall_bad": MIN_RECALL, "max_false_flag_good": MAX_FALSE_FLAG},
        "labels": {"bad_fmax_eV_A": BAD_FMAX, "bad_dE_eV": BAD_DE, "atom_cut_eV_A": ATOM_CUT,
                   "tdn_fmax": FMAX, "teacher_steps": TEACHER_STEPS},
        "n_train_frames_features": n_train_frames,
        "starts": [{k: r[k] for k in ("label", "group", "bad", "teacher_fmax_at_tdn_min",
                                      "de_above_teacher_min", "tdn_converged")} for r in rows],
        "counts": {g: {"n": sum(r["group"] == g for r in rows),
                       "bad": sum(r["group"] == g and r["bad"] for r in rows)}
                   for g in dict.fromkeys(r["group"] for r in rows)},
        "shipped": {"method": entry["uncertainty"]["method"], "threshold": shipped_threshold,
                    "file": entry["uncertainty"]["file"],
                    "all": rates(np.array(results[3]["structure_scores"]),
                                 np.array([r["bad"] for r in rows]), shipped_threshold),
                    "by_group": group_recall(rows, results[3]["structure_scores"],
                                             shipped_threshold),
                    "test_split": split_flag_rates(model, shipped, shipped_threshold)},
        "candidates": results, "cost": call_cost(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels-only", action="store_true", help="only build the cached labels")
    p.add_argument("--train-frames", type=int, default=1500,
                   help="training frames whose features the model-feature candidates use")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.labels_only:
        label_all(study_starts())
        return 0
    report = study(args.train_frames)
    with atomic_write(args.out, "w") as fh:
        fh.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
