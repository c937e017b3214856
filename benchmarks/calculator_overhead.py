"""Overhead of the ASE calculator: structure checks + conversion + neighbour list, against a
full ``TDNCalculator`` call (conversion, model forward with forces/stress, results to NumPy).

Systems: a 20-atom molecule (methyl pentanoate, RDKit conformer) and a Pt(111) 3x3x4 slab
with CO on top (38 atoms). The model has the default TDNConfig architecture with random
weights (the timing does not depend on the weights). Usage::

    python benchmarks/calculator_overhead.py [--repeats 50] [--threads 1] [--device cpu]

Prints the median times and the overhead fraction (target: < 15%).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule
from ase.calculators.calculator import all_changes

from tdn_calc.calculator import TDNCalculator
from tdn_calc.graph import atoms_to_graph
from tdn_calc.nn.config import TDNConfig
from tdn_calc.nn.model import TDNModel
from tdn_calc.validation import validate_structure


def molecule_20() -> Atoms:
    """Methyl pentanoate C6H12O2 (20 atoms), an RDKit ETKDG conformer."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCC(=O)OC"))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    positions = mol.GetConformer().GetPositions()
    return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=positions)


def pt_co_slab() -> Atoms:
    """Pt(111) 3x3x4 with CO on a top site, 10 Å vacuum, pbc = (T, T, F)."""
    slab = fcc111("Pt", (3, 3, 4), vacuum=10.0)
    add_adsorbate(slab, molecule("CO"), 1.85, "ontop")
    slab.pbc = (True, True, False)
    return slab


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = TDNConfig(elements=[1, 6, 7, 8, 78])  # default architecture
    model = TDNModel(config)
    calc = TDNCalculator(model, device=args.device, dtype="float32")
    print(
        f"model: lmax={config.lmax} channels={config.channels} layers={config.num_layers} "
        f"cutoff={config.cutoff} Å, tp={config.tp_backend}; device={calc.device}, "
        f"threads={torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'system':<22}{'atoms':>6}{'edges':>7}{'prep ms':>10}{'call ms':>10}{'overhead':>10}")
    for name, atoms in (("molecule C6H12O2", molecule_20()), ("Pt(111)+CO slab", pt_co_slab())):
        rng = np.random.default_rng(0)

        def prepare(atoms=atoms):
            validate_structure(
                atoms.numbers,
                atoms.positions,
                atoms.cell.array,
                atoms.pbc,
                supported_elements=config.elements,
            )
            return atoms_to_graph(atoms, config.cutoff, dtype=calc.dtype, device=calc.device)

        def full_call(atoms=atoms, rng=rng):
            atoms.positions += rng.normal(scale=1e-4, size=atoms.positions.shape)
            calc.calculate(atoms, ["energy", "forces"], all_changes)

        n_edges = prepare().n_edges
        t_prep = median_time(prepare, args.repeats)
        t_call = median_time(full_call, args.repeats)
        print(
            f"{name:<22}{len(atoms):>6}{n_edges:>7}{1e3 * t_prep:>10.2f}{1e3 * t_call:>10.2f}"
            f"{100 * t_prep / t_call:>9.1f}%"
        )


if __name__ == "__main__":
    main()
