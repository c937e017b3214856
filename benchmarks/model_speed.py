"""Model speed: the shipped TDN models against MACE, SevenNet-0 and GFN2-xTB on this CPU.

ms per energy+forces call (median of the timed repeats after warm-up), every contender
through its ASE calculator with its defaults (TDN: ``TDNCalculator(name)``, extrapolation
scores on), one thread each, repeats interleaved round-robin in a shuffled order so that
all contenders see the same machine load (compare ratios, not absolute times). Each turn
of a contender is ``--sequence`` consecutive calls on moving positions, as the steps of a
relaxation; the first call of a turn runs right after another contender's work, with cold
caches, and is reported apart as the "cold single call" figure:

* the target table: ``tdn-organic`` on a 20-atom molecule and biphenyl (22 atoms),
  ``tdn-catalysis`` on a Pt(111) 3x3x4 slab with CO (38 atoms); against the MACE of the
  shipped models' size (L=1, 64 channels, 2 layers, 5 Å; random weights), SevenNet-0 and
  GFN2-xTB (tblite, in this process; molecules only);
* the crossover: ``tdn-organic`` against GFN2-xTB on molecules of 3 to 161 atoms, and the
  size above which TDN is the faster (log-log interpolation between the measured sizes).

``--full`` adds the former size study: random-weight TDN at two sizes with every
tensor-product backend (and batched), the default-size MACE, CHGNet, a 500-atom Cu cell,
32 molecules, and time per call against atoms for fcc Cu (32 -> 2,048 atoms) with fitted
exponents. The peers run in ``benchmarks/.venv-peers`` (created on first use, see
``peers/env.py``). Usage::

    python benchmarks/model_speed.py [--quick] [--full] [--threads 1] [--update-docs]

Writes ``benchmarks/results/model_speed[-quick].json`` (with the commit and the date) and,
with ``--full``, ``docs/img/model_speed_scaling[-quick].png``; ``--update-docs`` rewrites
the generated part of the "Model speed" section of ``docs/benchmarks.md``; ``--from-json
FILE`` redoes the report, plot and docs from a saved results file without timing anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    ELEMENTS,
    Contender,
    benchmark_systems,
    boxed,
    cpu_model,
    cu_bulk,
    dirty_paths,
    fit_exponent,
    git_commit,
    load_average,
    run_round_robin,
    smiles_molecule,
)
from _speed_report import markdown_report, plot_scaling, update_docs
from peers.client import PeerProcess
from peers.env import ensure_peer_venv
from peers.timing import calculator_call_ms, rattle, timed_ms

from tdn_calc.calculator import TDNCalculator
from tdn_calc.fileio import atomic_write
from tdn_calc.graph import atoms_to_graph
from tdn_calc.nn.config import TP_BACKENDS, TDNConfig
from tdn_calc.nn.model import TDNModel
from tdn_calc.registry import list_models

ROOT = Path(__file__).resolve().parent.parent
BATCH = "32 molecules (498)"
MOLECULE = "molecule (20 atoms)"
BIPHENYL = "biphenyl (22)"
SLAB = "Pt(111)+CO slab (38)"
XTB = "GFN2-xTB (tblite)"
#: crossover molecules: (SMILES, or "" for water from ase.build), smallest to largest
CROSSOVER = {
    "water (3)": "",
    "methyl pentanoate (20)": "CCCCC(=O)OC",
    "biphenyl (22)": "c1ccc(cc1)-c1ccccc1",
    "undecane (35)": "C" * 11,
    "icosane (62)": "C" * 20,
    "C53H108 (161)": "C" * 53,
}

TDN_SIZES = {  # name -> TDNConfig overrides; "default" is TDNConfig's own defaults
    "default": {},
    "fast": {"lmax": 1, "num_layers": 2},
}
MACE_SIZES = {  # the MACE twin of each TDN size: same L, channels, layers and cutoff
    "default": {"num_interactions": 3, "hidden_irreps": "64x0e+64x1o+64x2e", "max_ell": 2},
    # the configuration named in the issue; its hidden L, channels, layers and cutoff are
    # those of TDN "fast" (MACE keeps edge harmonics up to max_ell 3)
    "fast": {"num_interactions": 2, "hidden_irreps": "64x0e+64x1o", "max_ell": 3},
}


def tdn_model(size: str, backend: str) -> TDNModel:
    torch.manual_seed(0)
    return TDNModel(TDNConfig(elements=list(ELEMENTS), tp_backend=backend, **TDN_SIZES[size]))


def describe(config: TDNConfig) -> str:
    return f"L={config.lmax}, {config.channels} ch, {config.num_layers} layers, {config.cutoff} Å"


def tdn_contenders(systems, rng, raw_batch: bool) -> list[Contender]:
    """TDN at each size with each tensor-product backend, through ``TDNCalculator``."""
    out = []
    for size in TDN_SIZES:
        for backend in TP_BACKENDS:
            model = tdn_model(size, backend)
            calc = TDNCalculator(model, device="cpu", dtype="float32")
            params = sum(p.numel() for p in model.parameters())
            base = f"TDN {size} {backend}"
            out.append(
                Contender(
                    base,
                    "TDN",
                    params,
                    describe(model.config),
                    lambda s, c=calc: calculator_call_ms(c, systems[s], rng),
                )
            )
            if raw_batch and BATCH in systems:
                out.append(
                    Contender(
                        base + " (raw batched model)",
                        "TDN",
                        params,
                        "one AtomicGraph of all 32, graph building included",
                        lambda s, m=model: raw_batch_ms(m, systems[s], rng),
                        systems={BATCH},
                    )
                )
    return out


def raw_batch_ms(model: TDNModel, atoms_list, rng) -> tuple[float, float]:
    """One batched call: neighbour lists + ``AtomicGraph`` + energies and forces of all."""
    rattle(atoms_list, rng)

    def call():
        graph = atoms_to_graph(atoms_list, model.cutoff, dtype=torch.float32)
        return model(graph, compute_forces=True)["forces"].numpy()

    return timed_ms(call)


def registry_contenders(systems, rng) -> list[Contender]:
    """The shipped models of ``tdn_calc.registry`` (on the systems whose elements they know)."""
    out = []
    for entry in list_models():
        try:
            calc = TDNCalculator(entry["name"], device="cpu", dtype="float32")
        except Exception as exc:  # a model that cannot load is reported, not timed
            print(f"skipping shipped model {entry['name']}: {exc}", file=sys.stderr)
            continue
        known = set(calc.model.elements)
        ok = {s for s, group in systems.items() if all(set(a.numbers) <= known for a in group)}
        params = sum(p.numel() for p in calc.model.parameters())
        out.append(
            Contender(
                f"tdn {entry['name']} (shipped)",
                "TDN",
                params,
                describe(calc.model.config),
                lambda s, c=calc: calculator_call_ms(c, systems[s], rng),
                systems=ok,
            )
        )
    return out


def xtb_contender(systems: dict, rng, names) -> Contender:
    """GFN2-xTB through tblite's ASE calculator, in this process, on the molecules ``names``
    (each timed call starts from the previous call's converged density, as in a relaxation)."""
    from importlib.metadata import version

    from tblite.ase import TBLite

    calc = TBLite(method="GFN2-xTB", verbosity=0)
    return Contender(
        XTB,
        f"tblite {version('tblite')}",
        0,
        "GFN2-xTB, the teacher of tdn-organic; SCC from the previous call's density",
        lambda s, c=calc: calculator_call_ms(c, systems[s], rng),
        systems=set(names),
    )


def target_systems() -> dict:
    """The target table's structures: the 20-atom molecule, biphenyl and the Pt+CO slab."""
    every = benchmark_systems(2)
    return {
        MOLECULE: every[MOLECULE],
        BIPHENYL: [boxed(smiles_molecule(CROSSOVER[BIPHENYL]))],
        SLAB: every[SLAB],
    }


def crossover_systems() -> dict:
    """Molecules from 3 to 161 atoms for the TDN/GFN2-xTB crossover (30 Å box, no pbc)."""
    from ase.build import molecule

    return {
        name: [boxed(smiles_molecule(smi) if smi else molecule("H2O"))]
        for name, smi in CROSSOVER.items()
    }


def crossover_atoms(atoms: dict[str, int], tdn_ms: dict, xtb_ms: dict) -> float | None:
    """Atoms above which TDN is faster than GFN2-xTB at every measured size: log-log
    interpolation of the time ratio between the largest size where TDN is slower and the
    next; ``None`` if TDN is slower on the largest, the smallest size if never slower."""
    names = sorted(atoms, key=atoms.get)
    ratio = [float(np.log(tdn_ms[s] / xtb_ms[s])) for s in names]
    slower = [k for k, r in enumerate(ratio) if r > 0]
    if not slower:
        return float(atoms[names[0]])
    k = slower[-1]
    if k == len(names) - 1:
        return None
    a, b = np.log(atoms[names[k]]), np.log(atoms[names[k + 1]])
    return float(np.exp(a + (b - a) * ratio[k] / (ratio[k] - ratio[k + 1])))


def peer_contenders(peer: PeerProcess, sizes: list[str], pretrained: bool | str) -> list[Contender]:
    """MACE twins of the TDN ``sizes`` (random weights) and, if ``pretrained``, SevenNet-0
    (and CHGNet too when it is ``"all"``)."""
    specs = []
    for size in sizes:
        options = {"elements": list(ELEMENTS), "correlation": 3, "r_max": 5.0, **MACE_SIZES[size]}
        detail = (
            f"{options['hidden_irreps']}, max_ell {options['max_ell']}, correlation 3, "
            f"{options['num_interactions']} layers, 5.0 Å"
        )
        specs.append((f"MACE {size}-size", "mace", options, detail))
    if pretrained:
        specs.append(("SevenNet-0", "sevennet", {}, "pretrained (7net-0, 11Jul2024)"))
    if pretrained == "all":
        specs.append(("CHGNet", "chgnet", {}, "pretrained 0.3.0"))
    out = []
    for name, kind, options, detail in specs:
        info = peer.request("load", name=name, kind=kind, options=options)["info"]
        out.append(
            Contender(
                name,
                f"{kind} {info['version']}",
                info["params"],
                detail,
                lambda s, n=name: _wall_cpu(peer.request("time", name=n, system=s)),
            )
        )
    return out


def _wall_cpu(reply: dict) -> tuple[float, float]:
    return reply["wall_ms"], reply["cpu_ms"]


def environment(peer: PeerProcess, threads: int) -> dict:
    import ase
    import e3nn

    return {
        "commit": git_commit(str(ROOT)),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dirty_paths": dirty_paths(str(ROOT)),
        "cpu": cpu_model(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "tdn_env": {"torch": torch.__version__, "e3nn": e3nn.__version__, "ase": ase.__version__},
        "peer_env": peer.request("versions")["versions"],
    }


def measure(args: argparse.Namespace) -> dict:
    """Run the table and the scaling study; returns the JSON-able results."""
    repeats = args.repeats or (3 if args.quick else 5)
    scaling_repeats = args.scaling_repeats or (2 if args.quick else 3)
    bulk_n = 3 if args.quick else 5  # Cu cell of the main table: 108 or 500 atoms
    scaling_n = (2, 3, 4) if args.quick else (2, 3, 4, 6, 8)  # 32 ... 2,048 atoms (4 n^3)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    peer = PeerProcess(ensure_peer_venv(), args.threads)
    try:
        env = environment(peer, args.threads)
        rng = np.random.default_rng(0)
        systems = benchmark_systems(bulk_n) if args.full else {}
        systems.update(target_systems())
        known = dict(systems)  # every structure a contender may be asked for, by name
        peer.set_systems(systems)
        contenders = [
            *registry_contenders(known, rng),
            xtb_contender(known, rng, (MOLECULE, BIPHENYL)),
        ]
        if args.full:
            contenders = (
                tdn_contenders(known, rng, raw_batch=True)
                + contenders
                + peer_contenders(peer, list(TDN_SIZES), pretrained="all")
            )
        else:  # the MACE of the shipped models' size, and SevenNet-0
            contenders += peer_contenders(peer, ["fast"], pretrained=True)
        if args.only:
            contenders = [c for c in contenders if re.search(args.only, c.name)]
        table = run_round_robin(
            contenders, list(systems), repeats, warmup=1, seed=1, sequence=args.sequence
        )
        partial = ROOT / "benchmarks" / "results" / "model_speed-partial.json"
        with atomic_write(partial, "w") as handle:  # kept if a later study fails
            json.dump({"environment": env, "table": table}, handle)
        crossover = (
            None if args.no_crossover else measure_crossover(known, rng, repeats, args.sequence)
        )
        scaling = None
        if args.full and not args.no_scaling:
            cu = {f"Cu {4 * n**3}": [cu_bulk(n)] for n in scaling_n}
            known.update(cu)
            peer.set_systems(cu)
            scalers = [
                *(c for c in contenders if c.name in ("TDN default exact", "TDN fast exact")),
                *(c for c in contenders if c.name.startswith("MACE")),
            ]
            scaling = run_round_robin(scalers, list(cu), scaling_repeats, warmup=1, seed=2)
            scaling["repeats"] = scaling_repeats
            scaling["atoms"] = {s: len(group[0]) for s, group in cu.items()}
            for key, medians in (("fits", "median_ms"), ("fits_cpu", "median_cpu_ms")):
                scaling[key] = {
                    c.name: fit_exponent(scaling["atoms"], scaling[medians][c.name])
                    for c in scalers
                }
    finally:
        peer.close()
    partial.unlink(missing_ok=True)

    edges = {s: int(atoms_to_graph(group, 5.0).n_edges) for s, group in systems.items()}
    return {
        "environment": env,
        "command": "python benchmarks/model_speed.py " + " ".join(sys.argv[1:]),
        "repeats": repeats,
        "systems": {
            s: {"atoms": sum(len(a) for a in g), "edges": edges[s]} for s, g in systems.items()
        },
        "contenders": [c.describe() for c in contenders],
        "shipped_models": [e["name"] for e in list_models()],
        "table": table,
        "crossover": crossover,
        "scaling": scaling,
        "wall_s": time.perf_counter() - start,
        "load_average_end": load_average(),
    }


def measure_crossover(known: dict, rng, repeats: int, sequence: int) -> dict:
    """``tdn-organic`` against GFN2-xTB on the :data:`CROSSOVER` molecules, round-robin."""
    systems = crossover_systems()
    known.update(systems)
    tdn = TDNCalculator("tdn-organic", device="cpu")
    contenders = [
        Contender(
            "tdn tdn-organic (shipped)",
            "TDN",
            0,
            "",
            lambda s, c=tdn: calculator_call_ms(c, systems[s], rng),
        ),
        xtb_contender(systems, rng, list(systems)),
    ]
    out = run_round_robin(contenders, list(systems), repeats, warmup=1, seed=3, sequence=sequence)
    out["atoms"] = {s: len(group[0]) for s, group in systems.items()}
    for key in ("median_ms", "median_cpu_ms"):
        tdn_ms, xtb_ms = out[key][contenders[0].name], out[key][XTB]
        out[f"crossover_atoms_{key[7:]}"] = crossover_atoms(out["atoms"], tdn_ms, xtb_ms)
    return out


def publish(results: dict, suffix: str, docs: bool, write_json: bool = True) -> None:
    """Write the JSON and the PNG, print the report and, if ``docs``, update the docs."""
    out_json = ROOT / "benchmarks" / "results" / f"model_speed{suffix}.json"
    if write_json:
        with atomic_write(out_json, "w") as handle:
            handle.write(json.dumps(results, indent=1) + "\n")
    png = None
    if results.get("scaling"):
        png = ROOT / "docs" / "img" / f"model_speed_scaling{suffix}.png"
        plot_scaling(results["scaling"], png)
    report = markdown_report(results, png.relative_to(ROOT / "docs") if png else None)
    print(report)
    if docs:
        update_docs(ROOT / "docs" / "benchmarks.md", report)
    written = [str(p) for p in (out_json if write_json else None, png) if p is not None]
    print("wrote " + (" and ".join(written) or "nothing"), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller scaling")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, every contender")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5)")
    parser.add_argument(
        "--scaling-repeats", type=int, default=None, help="timed calls per size (default 3)"
    )
    parser.add_argument(
        "--sequence", type=int, default=5, help="consecutive calls per turn (default 5)"
    )
    parser.add_argument("--update-docs", action="store_true", help="rewrite docs section")
    parser.add_argument("--full", action="store_true", help="also the former size study")
    parser.add_argument("--no-scaling", action="store_true", help="--full without scaling")
    parser.add_argument("--no-crossover", action="store_true", help="skip the xTB crossover")
    parser.add_argument("--only", default=None, help="time only contenders matching this regex")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="no timing: report a saved results file"
    )
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # tblite's OpenMP reads it at import
        os.environ[var] = str(args.threads)
    suffix = "-quick" if args.quick else ""
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        publish(results, suffix, args.update_docs, write_json=False)
    else:
        publish(measure(args), suffix, args.update_docs)


if __name__ == "__main__":
    main()
