"""Relaxation quality of an organic TDN model, judged by GFN2-xTB (issues 6 and 8).

For ``--n`` test-split molecules of the GFN2-xTB data set (picked with ``--seed``):

1. start = RDKit ETKDGv3 conformer (with hydrogens, seeded per molecule) plus Gaussian noise
   of ``--perturb`` Å per Cartesian component;
2. reference = GFN2-xTB (tblite, as the data builder runs it) BFGS relaxation of the same
   start to 0.01 eV/Å (at most 500 steps): GFN2's own minimum. Cached per (SMILES, seed,
   perturb) in ``--cache``, so runs for other models reuse it;
3. the real ``tdn-relax`` CLI relaxes all starts once (``--fmax``, default 0.05 eV/Å); with
   ``--relaxer mace`` a MACE model (``--model`` = its ``.model`` file, e.g. the one
   ``benchmarks/accuracy.py`` trains) relaxes them instead with ASE's FIRE (which the
   batched FIRE of ``tdn-relax --optimizer FIRE`` reproduces), in the peers' environment
   (``benchmarks/peers/mace_relax.py``);
4. judge: a GFN2 single point at each TDN minimum, ``dE = (E_GFN2(TDN min) - E_GFN2(GFN2
   min)) / n_atoms`` in meV/atom (signed: a lower minimum is no failure), and the bonding.

A molecule passes when ``dE <= 1 meV/atom`` and its bonds are unchanged; the target is a pass
rate of at least 95 %. Bonds are atom pairs closer than 1.2 x the sum of their covalent radii
(``ase.neighborlist.natural_cutoffs``), compared with the *unperturbed* ETKDG conformer: the
noise alone stretches some bonds past the cutoff (counted in ``start_bonds_perturbed``), so
the noisy start is not a fair reference.

5. oracle (unless ``--no-oracle``): GFN2 itself relaxed from the same start with the same
   optimizer (``--optimizer``, ASE's, which the batched optimizers of ``tdn-relax`` reproduce) and
   ``--fmax``, judged the same way: the pass rate a perfect copy of GFN2 would reach under
   this protocol. On floppy molecules a loose ``fmax`` stops far along soft torsions, so the
   oracle itself often misses 1 meV/atom. Cached beside the reference.

Usage::

    nice -n 19 python benchmarks/relax_quality_organic.py --model tdn-organic --n 100

Writes ``--out`` (JSON: settings, per-molecule rows, summary; atomic) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tdn_calc.evaluation.landing import (
    BOND_MULT,
    THRESHOLD_MEV,
    bond_changes,
    bonds,
    delta_e_mev,
    passes,
)

REF_FMAX = 0.01  # eV/Å, GFN2 reference relaxation
TDN_RELAX_STEPS = 500  # tdn-relax's default --steps, also given to the MACE relaxation
REF_STEPS = 500
TARGET_RATE = 0.95
CACHE_VERSION = 1


@dataclass(frozen=True)
class Start:
    """One molecule's starting point: ``numbers`` [n], ``conformer`` and ``positions`` [n, 3]
    Å (the ETKDG conformer before and after the noise)."""

    smiles: str
    numbers: np.ndarray
    conformer: np.ndarray
    positions: np.ndarray


# --- pure helpers --------------------------------------------------------------------------
def pick(identifiers: Sequence[str], seed: int) -> list[str]:
    """The unique ``identifiers`` in a seeded random order (independent of the input order)."""
    unique = sorted(set(identifiers))
    return [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]


def summarize(rows: Sequence[dict], threshold: float = THRESHOLD_MEV,
              target: float = TARGET_RATE) -> dict:
    """Counts and statistics over the judged rows (``status == "judged"``)."""
    judged = [r for r in rows if r["status"] == "judged"]
    de = np.array([r["delta_e_meV_atom"] for r in judged if r["delta_e_meV_atom"] is not None])
    res = np.array([r["gfn2_fmax_at_tdn_min"] for r in judged
                    if r["gfn2_fmax_at_tdn_min"] is not None])
    n_ok = sum(r["success"] for r in judged)
    rate = n_ok / len(judged) if judged else float("nan")

    def stat(x: np.ndarray, q: float) -> float | None:
        return float(np.percentile(x, q)) if x.size else None

    oracle = np.array([r["oracle_delta_e_meV_atom"] for r in judged
                       if r.get("oracle_delta_e_meV_atom") is not None])
    skipped: dict[str, int] = {}
    for r in rows:
        if r["status"] != "judged":
            skipped[r["status"]] = skipped.get(r["status"], 0) + 1
    return {
        "n_judged": len(judged),
        "n_success": n_ok,
        "success_rate": rate,
        "target_rate": target,
        "meets_target": bool(judged) and rate >= target,
        "n_within_threshold": int((de <= threshold).sum()),
        "n_lower_than_reference": int((de < 0).sum()),
        "n_lower_by_more_than_threshold": int((de < -threshold).sum()),
        "n_bonds_changed_tdn": sum(not r["bonds_kept_tdn"] for r in judged),
        "n_bonds_changed_gfn2": sum(not r["bonds_kept_gfn2"] for r in judged),
        "n_start_bonds_perturbed": sum(r["start_bonds_perturbed"] > 0 for r in judged),
        "n_gfn2_failed_at_tdn_min": sum(r["delta_e_meV_atom"] is None for r in judged),
        "n_tdn_converged": sum(bool(r["tdn_converged"]) for r in judged),
        "n_reference_not_converged": sum(not r["ref_converged"] for r in judged),
        "delta_e_meV_atom_median": stat(de, 50),
        "delta_e_meV_atom_p95": stat(de, 95),
        "delta_e_meV_atom_max": stat(de, 100),
        "gfn2_fmax_at_tdn_min_median": stat(res, 50),
        "gfn2_fmax_at_tdn_min_p95": stat(res, 95),
        "tdn_steps_median": stat(np.array([r["tdn_steps"] for r in judged]), 50),
        "oracle_n_judged": int(oracle.size),
        "oracle_n_success": sum(bool(r.get("oracle_success")) for r in judged),
        "oracle_delta_e_meV_atom_median": stat(oracle, 50),
        "skipped": skipped,
    }


def markdown(summary: dict, timings: dict) -> str:
    """The summary (and timings) as a two-column markdown table."""
    lines = ["| quantity | value |", "|---|---|"]
    for key, value in [*summary.items(), *((f"time_{k}", v) for k, v in timings.items())]:
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)


def cache_key(smiles: str, seed: int, perturb: float) -> str:
    """sha256 naming the cached GFN2 reference of this start and reference recipe."""
    spec = {"smiles": smiles, "seed": int(seed), "perturb": float(perturb), "fmax": REF_FMAX,
            "steps": REF_STEPS, "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def model_tag(model: str) -> str:
    """A file-name tag for ``model``: the registry name, or ``<dir>-<stem>`` of a path."""
    path = Path(model)
    if path.suffix == ".safetensors" or os.sep in model:
        return f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    return model


# --- inputs ---------------------------------------------------------------------------------
def model_metadata(model: str) -> tuple[Path, list[int], dict]:
    """``(checkpoint path, elements, card)`` of a registry name or ``.safetensors`` path."""
    from tdn_calc.checkpoint import read_metadata
    from tdn_calc.registry import model_path

    path = model_path(model)
    config, card = read_metadata(path)
    return path, [int(z) for z in config.elements], card


def mace_metadata(model: str, data: str) -> tuple[Path, list[int], dict]:
    """``(model path, elements, {})`` of a MACE ``.model`` file: the elements are those of
    ``data`` (the set it was trained on); there is no model card to name a split."""
    from ase.data import atomic_numbers

    from tdn_calc.data.summary import summarize

    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"MACE model {model} not found")
    return path, sorted(atomic_numbers[s] for s in summarize(data)["elements"]), {}


def split_identifiers(data: str, split_file: str | None, card: dict,
                      part: str = "test") -> tuple[list[str], str]:
    """SMILES of the test-split trajectories present in ``data``, and the split file used."""
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.train.evaluate import select_frames

    dataset = H5Dataset(data)
    frames, used = select_frames(dataset, part, split_file, card)
    return dataset.identifiers_of(frames), str(used)


def make_start(smiles: str, seed: int, perturb: float) -> Start | None:
    """The seeded noisy ETKDG start of ``smiles`` (None when RDKit cannot embed it).

    The per-molecule seed differs from the data builder's, so starts are new geometries.
    """
    from tdn_calc.datagen.molecules.label import embed, molecule_seed

    mseed = molecule_seed(seed, f"relax-quality|{smiles}")
    conf = embed(smiles, mseed)
    if conf is None:
        return None
    numbers, conformer = conf
    noise = np.random.default_rng(mseed).normal(0.0, perturb, conformer.shape)
    return Start(smiles, numbers, conformer, conformer + noise)


# --- GFN2 -------------------------------------------------------------------------------------
def gfn2_calculator():
    """The data builder's GFN2-xTB calculator (tblite, neutral, closed shell)."""
    from tdn_calc.datagen.molecules.label import BuildSettings, gfn2_calculator

    return gfn2_calculator(BuildSettings())


def single_thread():
    """Limit tblite/BLAS to one thread, as the data builder does."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def gfn2_point(calc, numbers: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
    """GFN2 ``(energy eV, largest per-atom |force| eV/Å)`` at ``positions`` [n, 3] Å."""
    from ase import Atoms

    from tdn_calc.datagen.molecules.label import single_point

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = calc
    frame = single_point(atoms, 0, 0)
    return float(frame.energy), float(np.linalg.norm(frame.forces, axis=1).max())


def reference(start: Start, calc) -> dict:
    """GFN2's own minimum from ``start`` (BFGS to ``REF_FMAX``); raises on SCF failure."""
    from ase import Atoms

    from tdn_calc.data.frames import FrameKind
    from tdn_calc.datagen.molecules.label import relax_frames

    t0 = time.perf_counter()
    atoms = Atoms(numbers=start.numbers, positions=start.positions)
    atoms.calc = calc
    frames, steps, converged = relax_frames(atoms, REF_FMAX, REF_STEPS, REF_STEPS + 1,
                                            FrameKind.RELAX)
    last = frames[-1]
    return {"smiles": start.smiles, "numbers": start.numbers.tolist(),
            "conformer": start.conformer.tolist(), "start": start.positions.tolist(),
            "minimum": last.positions.tolist(), "energy": float(last.energy),
            "fmax": float(np.linalg.norm(last.forces, axis=1).max()), "steps": int(steps),
            "converged": bool(converged), "seconds": time.perf_counter() - t0}


def json_cached(path: Path, make) -> tuple[dict, bool]:
    """The JSON record at ``path``, or ``make()`` written there atomically;
    returns ``(record, was_cached)``."""
    from tdn_calc.fileio import atomic_write

    if path.is_file():
        with open(path) as fh:
            return json.load(fh), True
    record = make()
    with atomic_write(path, "w") as fh:
        json.dump(record, fh)
    return record, False


def cached_reference(start: Start, key: str, cache: Path, calc) -> tuple[dict, bool]:
    """The cached reference of ``key``, or a new one written to ``cache`` atomically;
    returns ``(record, was_cached)``."""
    return json_cached(cache / f"{key}.json", lambda: reference(start, calc))


def cached_oracle(ref: dict, key: str, cache: Path, calc, optimizer: str,
                  fmax: float) -> dict:
    """GFN2 relaxed from the reference's start with ``optimizer`` (an ASE optimizer name, as
    ``tdn-relax --optimizer``) to ``fmax``, at most ``TDN_RELAX_STEPS`` steps; cached in
    ``cache`` (atomically) under the reference's ``key``, the optimizer and ``fmax``.
    Returns ``{"minimum", "energy", "steps", "converged"}``."""
    from ase import Atoms

    from tdn_calc.relax.single import resolve_optimizer

    opt_class = resolve_optimizer(optimizer, len(ref["numbers"]))

    def relax_with_reference() -> dict:
        atoms = Atoms(numbers=ref["numbers"], positions=ref["start"])
        atoms.calc = calc
        opt = opt_class(atoms, logfile=None)
        converged = bool(opt.run(fmax=fmax, steps=TDN_RELAX_STEPS))
        return {"minimum": atoms.positions.tolist(),
                "energy": float(atoms.get_potential_energy()), "steps": int(opt.nsteps),
                "converged": converged}

    path = cache / f"{key}-oracle-{opt_class.__name__.lower()}-{fmax:g}.json"
    return json_cached(path, relax_with_reference)[0]


# --- TDN ---------------------------------------------------------------------------------------
def tdn_relax(starts: Sequence[Start], model: str, fmax: float, workdir: Path,
              threads: int, optimizer: str = "fire") -> tuple[list, dict, float]:
    """Relax ``starts`` with one ``tdn-relax`` run; ``(relaxed Atoms in input order, its JSON
    report, wall seconds)``. Exit status 3 (some not converged) is not an error."""
    from ase import Atoms
    from ase.io import read, write

    from tdn_calc.errors import TDNError
    from tdn_calc.structure_io import INDEX_KEY

    inp, out, report = workdir / "starts.extxyz", workdir / "tdn.extxyz", workdir / "report.json"
    write(inp, [Atoms(numbers=s.numbers, positions=s.positions) for s in starts],
          format="extxyz")
    exe = shutil.which("tdn-relax")
    cmd = [exe] if exe else [sys.executable, "-c", "from tdn_calc.cli.relax import main; main()"]
    cmd += [str(inp), "-o", str(out), "-m", model, "--fmax", str(fmax), "--report", str(report),
            "--optimizer", optimizer, "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise TDNError(f"tdn-relax exited with {proc.returncode}: {proc.stderr[-2000:]}")
    by_index = {int(a.info[INDEX_KEY]): a for a in read(out, index=":")}
    with open(report) as fh:
        return [by_index.get(k) for k in range(len(starts))], json.load(fh), wall


def mace_relax(starts: Sequence[Start], model: str, fmax: float, workdir: Path,
               threads: int, optimizer: str = "fire") -> tuple[list, dict, float]:
    """As :func:`tdn_relax` for a MACE ``.model`` file: ASE FIRE, same ``fmax`` and step
    limit, run by ``benchmarks/peers/mace_relax.py`` in the peers' environment (FIRE only)."""
    from ase import Atoms
    from ase.io import read, write

    from tdn_calc.errors import TDNError

    here = Path(__file__).resolve().parent
    from peers.env import DEFAULT_VENV, ensure_peer_venv, peer_env

    python = ensure_peer_venv(DEFAULT_VENV)
    inp, out, report = workdir / "starts.extxyz", workdir / "mace.extxyz", workdir / "report.json"
    write(inp, [Atoms(numbers=s.numbers, positions=s.positions) for s in starts],
          format="extxyz")
    cmd = [str(python), str(here / "peers" / "mace_relax.py"), model, str(inp), str(out),
           str(report), "--fmax", str(fmax), "--steps", str(TDN_RELAX_STEPS)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=peer_env(threads), capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise TDNError(f"mace_relax.py exited with {proc.returncode}: {proc.stderr[-2000:]}")
    with open(report) as fh:
        return read(out, index=":"), json.load(fh), wall


RELAXERS = {"tdn": tdn_relax, "mace": mace_relax}


# --- the run ------------------------------------------------------------------------------------
def judge(ref: dict, frame, report_row: dict | None, calc, oracle: dict | None = None) -> dict:
    """One judged row from the cached reference, the TDN-relaxed frame and its report row;
    with ``oracle`` (:func:`cached_oracle`), also how GFN2 itself fares under the protocol."""
    numbers = np.array(ref["numbers"])
    rep = report_row or {}
    topo = bonds(numbers, np.array(ref["conformer"]))
    row = {"smiles": ref["smiles"], "n_atoms": len(numbers), "status": "judged",
           "ref_energy": ref["energy"], "ref_fmax": ref["fmax"], "ref_steps": ref["steps"],
           "ref_converged": ref["converged"], "ref_seconds": ref["seconds"],
           "start_bonds_perturbed": bond_changes(topo, bonds(numbers, np.array(ref["start"]))),
           "bonds_kept_gfn2": bond_changes(topo, bonds(numbers, np.array(ref["minimum"]))) == 0,
           "tdn_converged": bool(frame.info.get("converged", False)) if frame else False,
           "tdn_steps": int(frame.info.get("n_steps", -1)) if frame else -1,
           "tdn_fmax": rep.get("fmax"), "tdn_seconds": rep.get("time"),
           "tdn_energy": rep.get("energy")}
    row["bonds_kept_tdn"] = frame is not None and bond_changes(topo, bonds(numbers,
                                                                           frame.positions)) == 0
    row["delta_e_meV_atom"] = row["gfn2_fmax_at_tdn_min"] = None
    t0 = time.perf_counter()
    if frame is not None:
        try:
            energy, fmax = gfn2_point(calc, numbers, frame.positions)
            row["delta_e_meV_atom"] = delta_e_mev(energy, ref["energy"], len(numbers))
            row["gfn2_fmax_at_tdn_min"] = fmax
        except Exception as exc:  # tblite SCF failure at a broken geometry: a failed molecule
            row["gfn2_error"] = f"{type(exc).__name__}: {exc}"[:200]
    row["judge_seconds"] = time.perf_counter() - t0
    row["success"] = passes(row["delta_e_meV_atom"], row["bonds_kept_tdn"])
    if oracle is not None:
        row["oracle_delta_e_meV_atom"] = delta_e_mev(oracle["energy"], ref["energy"],
                                                     len(numbers))
        row["oracle_steps"] = oracle["steps"]
        row["oracle_success"] = passes(row["oracle_delta_e_meV_atom"], bond_changes(
            topo, bonds(numbers, np.array(oracle["minimum"]))) == 0)
    return row


def collect(candidates: Sequence[str], n: int, args, elements: set[int], calc,
            rows: list[dict]) -> tuple[list[Start], list[dict], dict]:
    """Walk ``candidates`` until ``n`` starts with a GFN2 reference exist; skipped molecules are
    appended to ``rows``. Returns ``(starts, references, timing)``."""
    starts, refs = [], []
    timing = {"reference_computed": 0.0, "n_reference_computed": 0}
    for smiles in candidates:
        if len(starts) >= n:
            break
        start = make_start(smiles, args.seed, args.perturb)
        if start is None:
            rows.append({"smiles": smiles, "status": "embed_failed"})
            continue
        if not set(start.numbers.tolist()) <= elements:
            rows.append({"smiles": smiles, "status": "unsupported_elements"})
            continue
        try:
            ref, was_cached = cached_reference(
                start, cache_key(smiles, args.seed, args.perturb), args.cache, calc)
        except Exception as exc:  # SCF failure of the reference: not the model's fault
            rows.append({"smiles": smiles, "status": "reference_failed", "error": str(exc)[:200]})
            continue
        if not was_cached:
            timing["reference_computed"] += ref["seconds"]
            timing["n_reference_computed"] += 1
        # the cached start is the one used, so TDN and GFN2 always start from the same geometry
        starts.append(Start(smiles, np.array(ref["numbers"]), np.array(ref["conformer"]),
                            np.array(ref["start"])))
        refs.append(ref)
        print(f"[{len(starts)}/{n}] {smiles}: GFN2 minimum {'cached' if was_cached else 'new'} "
              f"({ref['steps']} steps, {ref['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return starts, refs, timing


def run(args) -> dict:
    """The whole benchmark for parsed ``args``; returns the JSON document."""
    from tdn_calc.errors import InputError

    t_start = time.perf_counter()
    path, elements, card = (model_metadata(args.model) if args.relaxer == "tdn"
                            else mace_metadata(args.model, args.data))
    identifiers, split_used = split_identifiers(args.data, args.split_file, card, args.split)
    candidates = pick(identifiers, args.seed)
    if not candidates:
        raise InputError(f"the {args.split} part of {split_used} has no molecules in {args.data}")
    calc = gfn2_calculator()
    rows: list[dict] = []
    with single_thread():
        starts, refs, timing = collect(candidates, args.n, args, set(elements), calc, rows)
    if len(starts) < args.n:
        print(f"warning: only {len(starts)} usable test molecules (asked for {args.n})",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="relax_quality_") as tmp:
        frames, report, tdn_wall = RELAXERS[args.relaxer](starts, args.model, args.fmax,
                                                          Path(tmp), args.threads,
                                                          args.optimizer)
    report_rows = {int(r["index"]): r for r in report.get("structures", [])}
    t0 = time.perf_counter()
    with single_thread():
        oracles = [cached_oracle(ref, cache_key(ref["smiles"], args.seed, args.perturb),
                                 args.cache, calc, args.optimizer, args.fmax)
                   if args.oracle else None for ref in refs]
        t_oracle = time.perf_counter() - t0
        judged = [judge(ref, frame, report_rows.get(k), calc, oracles[k])
                  for k, (ref, frame) in enumerate(zip(refs, frames, strict=True))]
    timings = {**timing, "tdn_relax_wall": tdn_wall, "tdn_relax_load": report["timings_s"]["load"],
               "tdn_relax_relax": report["timings_s"]["relax"],
               "oracle": t_oracle, "judge": time.perf_counter() - t0 - t_oracle,
               "total": time.perf_counter() - t_start}
    rows = judged + rows
    summary = summarize(rows)
    from _common import cpu_model, git_commit, load_average

    return {"benchmark": "relax_quality_organic",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {"model": args.model, "relaxer": args.relaxer, "data": str(args.data),
                         "split_file": split_used, "split": args.split,
                         "n": args.n, "seed": args.seed, "perturb_A": args.perturb,
                         "fmax": args.fmax, "optimizer": args.optimizer,
                         "oracle": args.oracle, "reference_fmax": REF_FMAX,
                         "reference_steps": REF_STEPS, "bond_mult": BOND_MULT,
                         "threshold_meV_atom": THRESHOLD_MEV, "threads": args.threads,
                         "cache": str(args.cache)},
            "model": report.get("model", {"path": str(path)}),
            "reference_method": "GFN2-xTB (tblite)", "versions": report.get("versions"),
            "git_commit": git_commit(str(Path(__file__).resolve().parent.parent)),
            "cpu": cpu_model(), "load_average_end": load_average(),
            "summary": summary, "timings_s": timings, "rows": rows}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    from tdn_calc.registry import cache_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tdn-organic",
                   help="registry name or .safetensors path; with --relaxer mace, a .model file")
    p.add_argument("--relaxer", choices=sorted(RELAXERS), default="tdn",
                   help="tdn: the tdn-relax CLI; mace: ASE FIRE with a MACE model (peers' venv)")
    p.add_argument("--data", default="datasets/organic-gfn2")
    p.add_argument("--split-file", default=None,
                   help="default: the split named in the model card")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="which part of the split: val to choose between models, test to report")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perturb", type=float, default=0.1, help="noise sigma, Å")
    p.add_argument("--fmax", type=float, default=0.05, help="tdn-relax threshold, eV/Å")
    p.add_argument("--optimizer", default="auto",
                   choices=["auto", "fire", "bfgs", "lbfgs", "bfgslinesearch"],
                   help="tdn-relax --optimizer (and the oracle's); auto is tdn-relax's default")
    p.add_argument("--no-oracle", dest="oracle", action="store_false",
                   help="skip GFN2's own relaxation with the same optimizer and --fmax")
    p.add_argument("--threads", type=int, default=1, help="OMP threads of tdn-relax")
    p.add_argument("--out", default=None,
                   help="default: benchmarks/results/relax_quality_organic_<model>.json")
    p.add_argument("--cache", type=Path, default=cache_dir() / "relax_quality_gfn2",
                   help="GFN2 reference minima [default: %(default)s]")
    args = p.parse_args(argv)
    if args.n < 1 or args.perturb < 0 or args.fmax <= 0 or args.threads < 1:
        p.error("--n and --threads must be >= 1, --perturb >= 0 and --fmax > 0")
    if args.relaxer == "mace" and args.split_file is None:
        p.error("--relaxer mace needs --split-file (a MACE model has no card naming its split)")
    if args.relaxer == "mace":
        if args.optimizer not in ("auto", "fire"):
            p.error("--relaxer mace runs ASE's FIRE only")
        args.optimizer = "fire"
    if args.out is None:
        tag = model_tag(args.model) if args.relaxer == "tdn" else f"mace-{Path(args.model).stem}"
        suffix = "" if args.split == "test" else f"-{args.split}"
        args.out = str(Path(__file__).resolve().parent / "results"
                       / f"relax_quality_organic_{tag}{suffix}.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run, write ``--out`` atomically, print the summary table; 0 when the target is met."""
    from tdn_calc.fileio import atomic_write

    args = parse_args(argv)
    doc = run(args)
    with atomic_write(args.out, "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
        fh.write("\n")
    print(markdown(doc["summary"], {k: round(v, 2) for k, v in doc["timings_s"].items()}))
    print(f"-> {args.out}")
    return 0 if doc["summary"]["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
