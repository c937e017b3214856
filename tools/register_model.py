"""Maintainers' tool: ship a trained checkpoint in models/ and list it in models/manifest.json.

    python tools/register_model.py runs/x/best.safetensors --name tdn-organic \
        --description "..." [--alias organic] [--license MIT] [--default] \
        [--benchmark relaxation=benchmarks/results/relax_quality_organic_x.json ...]
    python tools/register_model.py --name tdn-organic --benchmark relaxation=RESULT.json
(the second form adds summaries measured after registration to the entry's metrics)

The file is copied to ``models/<name>-<YYYYMMDD>.safetensors`` (``-2``, ``-3`` ... when that
name is taken; the replaced model's file is left for the maintainer to delete); its sha256,
size, elements, reference method and metrics come from the file and its model card, never
typed by hand.
The entry's ``equivariance`` field holds the measured O(3) symmetry errors of the shipped file
(float64) on the example molecule and slab that its elements cover
(:func:`tdn_calc.model_checks.equivariance_summary`); ``cpu_speed`` the median ms per
energy+forces call (float32, one thread) on the 20-atom molecule and the Pt(111)+CO slab of
``benchmarks/model_speed.py`` that its elements cover; ``--benchmark NAME=JSON`` copies the
``summary`` of a benchmark result file (relaxation / adsorption tests) into ``metrics``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.io import read

from tdn_calc.checkpoint import load_checkpoint_file, read_metadata
from tdn_calc.fileio import atomic_write
from tdn_calc.model_checks import equivariance_summary
from tdn_calc.registry import add_to_manifest, manifest_entry

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
BENCHMARKS = ROOT / "benchmarks"
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


def _benchmark_module(relative: str):
    """The benchmark file ``benchmarks/<relative>`` loaded as a module by its path (the
    benchmarks are scripts, not an installed package; the two used here import only
    ``tdn_calc``, ASE and NumPy)."""
    import importlib.util

    path = BENCHMARKS / relative
    spec = importlib.util.spec_from_file_location(f"_benchmark_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_cpu_speed(checkpoint: Path, calls: int = 20) -> dict[str, float]:
    """Median ms per energy+forces call of the TDNCalculator (float32, 1 thread, CPU) on the
    calculator benchmark's 20-atom molecule and 38-atom slab (those ``checkpoint`` covers)."""
    overhead = _benchmark_module("calculator_overhead.py")
    molecule_20, pt_co_slab = overhead.molecule_20, overhead.pt_co_slab
    calculator_call_ms = _benchmark_module("peers/timing.py").calculator_call_ms
    from tdn_calc import TDNCalculator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    calc = TDNCalculator(str(checkpoint), device="cpu")
    rng = np.random.default_rng(0)
    out = {}
    try:
        for name, atoms in (("molecule_20_atoms_ms", molecule_20()),
                            ("pt111_co_slab_38_atoms_ms", pt_co_slab())):
            if not set(atoms.numbers) <= set(calc.model.elements):
                continue
            for _ in range(2):  # warm-up
                calculator_call_ms(calc, [atoms], rng)
            times = [calculator_call_ms(calc, [atoms], rng)[0] for _ in range(calls)]
            out[name] = round(float(np.median(times)), 2)
    finally:
        torch.set_num_threads(threads)
    return out


def new_model_path(name: str) -> Path:
    """``models/<name>-<YYYYMMDD>.safetensors``, or ``...-<YYYYMMDD>-2`` etc. when a model of
    that name was already shipped today (a shipped file is never replaced: configs and
    caches may name it). The number follows the highest one of that day in models/, so a
    newer file never gets a lower number than an older one (nor a withdrawn file's name)."""
    stamp = datetime.date.today().strftime("%Y%m%d")
    taken = [1 if m.group(1) is None else int(m.group(1))
             for p in MODELS.glob(f"{name}-{stamp}*.safetensors")
             if (m := re.fullmatch(rf"{re.escape(name)}-{stamp}(?:-(\d+))?", p.stem))]
    k = max(taken, default=0) + 1
    return MODELS / (f"{name}-{stamp}" + (f"-{k}" if k > 1 else "") + ".safetensors")


def keep_previous(name: str) -> str | None:
    """List the model now registered as ``name`` under its file's dated name as well (e.g.
    ``tdn-catalysis-20261206-2``), so configs and scripts that named it keep loading the same
    weights after ``name`` moves to a new file; its uncertainty sidecar moves to a dated name
    too. Returns the dated name (None when ``name`` is not registered yet)."""
    manifest = MODELS / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    old = data["models"].get(name)
    if old is None:
        return None
    dated = Path(old["file"]).stem
    old = {**old, "name": dated, "aliases": [], "default": False, "superseded_by": name}
    sidecar = old.get("uncertainty")
    if sidecar:
        moved = f"{dated}-uncertainty.json"
        shutil.copyfile(MODELS / sidecar["file"], MODELS / moved)
        old["uncertainty"] = {**sidecar, "file": moved}
    add_to_manifest(manifest, old)
    return dated


def benchmark_summaries(specs: list[str]) -> dict[str, dict]:
    """``["relaxation=path.json", ...]`` -> ``{"relaxation": <the file's "summary">}``
    (:func:`compact`)."""
    out = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--benchmark wants NAME=JSON, got {spec!r}")
        data = json.loads(Path(path).read_text())
        out[name] = {"summary": compact(data["summary"]), "file": str(Path(path).name)}
    return out


def compact(summary: Any) -> Any:
    """``summary`` without its lists (misses, mismatches, labels): the figures only, so the
    manifest shipped in the wheel stays small; the lists stay in the benchmark's JSON."""
    if isinstance(summary, dict):
        return {k: compact(v) for k, v in summary.items() if not isinstance(v, list)}
    return summary


def add_benchmarks(name: str, specs: list[str]) -> dict[str, Any]:
    """Copy the summaries of the benchmark results ``specs`` (``NAME=JSON``) into the
    ``metrics`` of the registered model ``name`` (measured after it was registered, with
    its registered name); returns the updated metrics."""
    from tdn_calc.registry import model_entry

    manifest = MODELS / "manifest.json"
    name = model_entry(name, manifest)["name"]  # an alias names the model too
    entry = json.loads(manifest.read_text(encoding="utf-8"))["models"][name]
    entry.setdefault("metrics", {}).update(benchmark_summaries(specs))
    add_to_manifest(manifest, entry)
    return entry["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="?")
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", default=None, help="required with a checkpoint")
    parser.add_argument("--alias", action="append", default=[])
    parser.add_argument("--license", default="MIT")
    parser.add_argument("--default", action="store_true", help="preferred by --model auto")
    parser.add_argument("--keep-previous", action="store_true",
                        help="keep the model now called NAME loadable under its dated name")
    parser.add_argument("--benchmark", action="append", default=[],
                        help="NAME=JSON: copy that benchmark result's summary into metrics")
    args = parser.parse_args()
    if args.checkpoint is None:  # add benchmark summaries to the registered NAME
        if not args.benchmark:
            parser.error("without a checkpoint, give --benchmark NAME=JSON to add to NAME")
        print(json.dumps(add_benchmarks(args.name, args.benchmark), indent=2))
        return
    if not args.description:
        parser.error("--description is required with a checkpoint")

    read_metadata(args.checkpoint)  # validates the file before anything is copied
    if args.keep_previous:
        print(f"previous {args.name} stays loadable as {keep_previous(args.name)}")
    target = new_model_path(args.name)
    with atomic_write(target) as out, open(args.checkpoint, "rb") as src:
        shutil.copyfileobj(src, out)
    entry = manifest_entry(target, args.name, args.description, aliases=args.alias,
                           license=args.license, default=args.default,
                           metrics=benchmark_summaries(args.benchmark))
    entry["equivariance"] = measure_equivariance(target)
    entry["cpu_speed"] = measure_cpu_speed(target)
    # the shipped manifest keeps its key order: equivariance and speed before the licence
    entry = {k: entry[k] for k in (*[k for k in entry if k not in ("license", "default")],
                                   "license", "default")}
    add_to_manifest(MODELS / "manifest.json", entry)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
