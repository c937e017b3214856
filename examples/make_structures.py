"""Regenerate the example structures (RDKit ETKDG conformers; ASE-built Pt(111) slabs).

    python examples/make_structures.py
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms
from ase.io import write

from tdn_calc.adsorption import build_adsorbate, build_slab, find_sites, place

HERE = Path(__file__).parent
MOLECULES = {
    "aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O",
    "biphenyl": "C1=CC=C(C=C1)C2=CC=CC=C2",
    "caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "paracetamol": "CC(=O)NC1=CC=C(C=C1)O",
    "ethanol": "CCO",
    "acetic_acid": "CC(=O)O",
    "pyridine": "C1=CC=NC=C1",
    "glycine": "C(C(=O)O)N",
}


def etkdg(smiles: str, seed: int = 42) -> Atoms:
    """One ETKDG (v3) conformer with explicit hydrogens; ``info['smiles']`` is kept."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"ETKDG failed for {smiles}")
    pos = mol.GetConformer().GetPositions()
    atoms = Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=pos)
    atoms.info.update(smiles=smiles, charge=0, spin=1)
    return atoms


def main() -> None:
    mols = {name: etkdg(smi) for name, smi in MOLECULES.items()}
    for name, atoms in mols.items():
        atoms.info["name"] = name
    for name in ("aspirin", "biphenyl", "caffeine"):
        write(HERE / "molecules" / f"{name}.xyz", mols[name], format="extxyz")
    write(HERE / "molecules" / "small_organics.xyz", list(mols.values()), format="extxyz")
    slab = build_slab("fcc111:Pt:3x3x4", vacuum=10.0)
    sites = {site.name: site for site in find_sites(slab)}
    for name, ads, site in (("co", "CO", "ontop"), ("o", "O", "fcc")):
        atoms = place(slab, build_adsorbate(ads), sites[site])
        atoms.info.pop("adsorbate_info", None)  # a dict: extxyz cannot store it
        atoms.info["site"] = site
        write(HERE / "slabs" / f"pt111_{name}.xyz", atoms, format="extxyz")

if __name__ == "__main__":
    main()
