"""Model speed: TDN against MACE, SevenNet-0 and CHGNet on this CPU, in one run.

ms per energy+forces call (median of the timed repeats after warm-up) for a 20-atom
molecule, a Pt(111)+CO slab (38 atoms), a 500-atom Cu bulk cell and 32 molecules, then time
per call against the number of atoms for fcc Cu (32 -> 2,048 atoms) with fitted exponents.
The contenders' repeats are interleaved round-robin in a shuffled order, so that all of
them see the same machine load: compare ratios, not absolute times.

TDN runs in this process through ``TDNCalculator`` (and as a raw batched model for the 32
molecules); the peers run through their ASE calculators in ``benchmarks/.venv-peers``
(created on first use, see ``peers/env.py``). Usage::

    python benchmarks/model_speed.py [--quick] [--threads 1] [--update-docs]

Writes ``benchmarks/results/model_speed[-quick].json`` and
``docs/img/model_speed_scaling[-quick].png``; ``--update-docs`` rewrites the generated
part of the "Model speed" section of ``docs/benchmarks.md``; ``--from-json FILE`` redoes the
report, plot and docs from a saved results file without timing anything.
"""

from __future__ import annotations

import argparse
import json
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
    cpu_model,
    cu_bulk,
    dirty_paths,
    fit_exponent,
    git_commit,
    load_average,
    run_round_robin,
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


def peer_contenders(peer: PeerProcess, sizes: list[str], pretrained: bool) -> list[Contender]:
    """MACE twins of the TDN ``sizes`` (random weights) and, if asked, SevenNet-0 and CHGNet."""
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
        systems = benchmark_systems(bulk_n)
        known = dict(systems)  # every structure a contender may be asked for, by name
        peer.set_systems(systems)
        contenders = (
            tdn_contenders(known, rng, raw_batch=True)
            + registry_contenders(known, rng)
            + peer_contenders(peer, list(TDN_SIZES), pretrained=True)
        )
        if args.only:
            contenders = [c for c in contenders if re.search(args.only, c.name)]
        table = run_round_robin(contenders, list(systems), repeats, warmup=1, seed=1)
        partial = ROOT / "benchmarks" / "results" / "model_speed-partial.json"
        with atomic_write(partial, "w") as handle:  # kept if the scaling study fails
            json.dump({"environment": env, "table": table}, handle)
        scaling = None
        if not args.no_scaling:
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
        "scaling": scaling,
        "wall_s": time.perf_counter() - start,
        "load_average_end": load_average(),
    }


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
    parser.add_argument("--update-docs", action="store_true", help="rewrite docs section")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--only", default=None, help="time only contenders matching this regex")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="no timing: report a saved results file"
    )
    args = parser.parse_args()
    suffix = "-quick" if args.quick else ""
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        publish(results, suffix, args.update_docs, write_json=False)
    else:
        publish(measure(args), suffix, args.update_docs)


if __name__ == "__main__":
    main()
