"""Maintainers' tool: record where a teacher is measured wrong in the models distilled from it.

Reads a result of ``benchmarks/teacher_vs_pbe.py`` and writes its wrong pairs (|teacher - PBE|
adsorption energy above the benchmark's line) into ``limits.teacher_errors`` of every entry of
``models/manifest.json`` whose ``reference_method`` is that teacher's; ``tdn-relax`` then warns
when a structure binds such an element to such a metal (:mod:`tdn_calc.relax.inputs`).

    python tools/record_teacher_errors.py benchmarks/results/teacher_vs_pbe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ase import Atoms

from tdn_calc.registry import add_to_manifest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "models" / "manifest.json"


def teacher_errors(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The wrong pairs of a teacher_vs_pbe result, as ``limits.teacher_errors`` records:
    ``element`` is the adsorbate's binding (first) atom."""
    return [
        {"metal": p["metal"], "element": Atoms(p["adsorbate"]).get_chemical_symbols()[0],
         "adsorbate": p["adsorbate"], "site": f"{p['facet']} {p['site']}",
         "teacher": result["teacher"], "teacher_eV": round(p["e_ads_teacher"], 3),
         "pbe_eV": round(p["e_ads_pbe"], 3), "error_eV": round(p["error"], 3),
         **({"desorbs": True} if p.get("teacher_desorbs") else {})}
        for p in result["pairs"] if p.get("wrong")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="benchmarks/results/teacher_vs_pbe.json")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    errors = teacher_errors(result)
    manifest = json.loads(args.manifest.read_text())
    names = []
    for name, entry in manifest["models"].items():
        if entry.get("reference_method") != result["teacher_method"]:
            continue
        limits = entry.setdefault("limits", {})
        limits["teacher_errors"] = errors
        limits["teacher_errors_source"] = (f"{args.result.name} ({result['commit'][:7]}, "
                                           f"{len(result['pairs'])} pairs measured)")
        add_to_manifest(args.manifest, entry)
        names.append(name)
    print(f"{len(errors)} teacher errors recorded in {', '.join(names) or 'no model'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
