"""Times peer potentials (MACE, SevenNet-0, CHGNet) on request; runs inside ``.venv-peers``.

Started by ``benchmarks/model_speed.py`` with this environment's Python. It reads one JSON
request per line on stdin and answers one JSON line on stdout, so the caller can interleave
peer calls with its own (round-robin) and every contender sees the same machine load:

* ``{"cmd": "load", "name": ..., "kind": "mace" | "sevennet" | "chgnet", "options": {...}}``
  -> ``{"ok": true, "info": {"params": ..., "version": ...}}``
* ``{"cmd": "systems", "systems": {name: [{"numbers", "positions", "cell", "pbc"}, ...]}}``
* ``{"cmd": "time", "name": ..., "system": ...}`` -> ``{"ok": true, "wall_ms": ...,
  "cpu_ms": ...}`` (one energy+forces call over every structure of the system, timed in
  this process)
* ``{"cmd": "quit"}``

Anything the peers print goes to stderr. Network access is disabled before any model is
loaded (``socket.socket`` raises), which proves that the pretrained weights load offline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from importlib.metadata import version
from typing import Any

import numpy as np
from ase import Atoms
from timing import calculator_call_ms


class NetworkDisabledError(RuntimeError):
    pass


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise NetworkDisabledError("the peer benchmark runs offline; a peer tried to open a socket")


def build_mace(options: dict[str, Any]):
    """A randomly initialised ``ScaleShiftMACE`` in an ASE ``MACECalculator`` (float32).

    ``options``: ``elements``, ``num_interactions``, ``hidden_irreps``, ``max_ell``,
    ``correlation``, ``r_max`` (Å), ``seed``; mace's default radial basis (8 Bessel
    functions, polynomial cutoff p=5, radial MLP [64, 64, 64]), residual interaction blocks
    and a 16x0e readout MLP.
    """
    import torch
    from e3nn import o3
    from mace import modules
    from mace.calculators import MACECalculator

    torch.manual_seed(int(options.get("seed", 0)))
    elements = [int(z) for z in options["elements"]]
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=float(options["r_max"]),
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=int(options["max_ell"]),
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=int(options["num_interactions"]),
        num_elements=len(elements),
        hidden_irreps=o3.Irreps(options["hidden_irreps"]),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(elements)),
        avg_num_neighbors=float(options.get("avg_num_neighbors", 20.0)),
        atomic_numbers=elements,
        correlation=int(options["correlation"]),
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    ).float()
    calc = MACECalculator(models=model, device="cpu", default_dtype="float32")
    return calc, model, version("mace-torch")


def build_sevennet(options: dict[str, Any]):
    """The pretrained SevenNet-0 (weights ship in the ``sevenn`` wheel)."""
    from sevenn.calculator import SevenNetCalculator

    calc = SevenNetCalculator(options.get("model", "7net-0"), device="cpu")
    return calc, calc.model, version("sevenn")


def build_chgnet(options: dict[str, Any]):
    """The pretrained CHGNet 0.3.0 (weights ship in the ``chgnet`` wheel)."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    model = CHGNet.load(model_name=options.get("model", "0.3.0"), use_device="cpu")
    calc = CHGNetCalculator(model, use_device="cpu", on_isolated_atoms="ignore")
    return calc, model, version("chgnet")


BUILDERS = {"mace": build_mace, "sevennet": build_sevennet, "chgnet": build_chgnet}


def to_atoms(spec: dict[str, Any]) -> Atoms:
    return Atoms(
        numbers=spec["numbers"], positions=spec["positions"], cell=spec["cell"], pbc=spec["pbc"]
    )


def serve(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # e3nn 0.4.4 (pinned by mace-torch) torch.load()s its own constants file, which holds
    # slice objects that torch >= 2.6's weights-only loader refuses unless allowlisted.
    torch.serialization.add_safe_globals([slice])
    # Protocol on a private copy of stdout; everything printed by the peers goes to stderr.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    socket.socket = _no_network  # type: ignore[misc, assignment]
    socket.create_connection = _no_network  # type: ignore[assignment]
    calcs: dict[str, Any] = {}
    systems: dict[str, list[Atoms]] = {}
    rng = np.random.default_rng(0)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            cmd = request["cmd"]
            if cmd == "quit":
                break
            if cmd == "load":
                calc, model, pkg_version = BUILDERS[request["kind"]](request.get("options", {}))
                calcs[request["name"]] = calc
                params = sum(p.numel() for p in model.parameters())
                reply = {"ok": True, "info": {"params": params, "version": pkg_version}}
            elif cmd == "systems":
                systems.update({k: [to_atoms(s) for s in v] for k, v in request["systems"].items()})
                reply = {"ok": True}
            elif cmd == "time":
                wall, cpu = calculator_call_ms(
                    calcs[request["name"]], systems[request["system"]], rng
                )
                reply = {"ok": True, "wall_ms": wall, "cpu_ms": cpu}
            elif cmd == "versions":
                names = ("torch", "e3nn", "mace-torch", "sevenn", "chgnet", "ase", "numpy")
                reply = {"ok": True, "versions": {n: version(n) for n in names}}
            else:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
        except Exception as exc:  # report to the caller, keep serving
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(reply) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    serve(parser.parse_args().threads)


if __name__ == "__main__":
    main()
