"""Surface library of the coverage recipes: fcc (111), (100), (110), (211) and hcp (0001)
slabs of ten metals with their named adsorption sites, bulk cells, and the teacher's own
lattice constants (a, and c for hcp), fitted once and cached.

Layers are counted from the top (layer 0); the bottom ``fixed_layers`` are held by a
FixAtoms constraint. For (211) a "layer" is one step period (three atom rows of
``size[1]`` atoms each, ASE's ``fcc211`` repeat along z). Sites are in-plane points (Å):

- (111), (0001): top, bridge, fcc, hcp; (100): top, bridge, hollow;
- (110): top, shortbridge (along the rows), longbridge (across), hollow;
- (211): step_top, step_bridge (along the step edge), terrace_top, terrace_hollow (three-
  fold, between the edge and the terrace row), foot_hollow (four-fold, at the step foot).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc110, fcc111, fcc211, hcp0001
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, reference_states
from ase.eos import EquationOfState
from ase.geometry import get_distances

from ...errors import InputError
from ...fileio import atomic_write
from .systems import fit_lattice_constant

STRUCTURE = {"Pt": "fcc", "Pd": "fcc", "Ni": "fcc", "Cu": "fcc", "Ag": "fcc", "Au": "fcc",
             "Rh": "fcc", "Ir": "fcc", "Ru": "hcp", "Co": "hcp"}
METALS = tuple(STRUCTURE)
FACETS = {"fcc": ("111", "100", "110", "211"), "hcp": ("0001",)}
ALL_FACETS = ("111", "100", "110", "211", "0001")
# surface repeats (in-plane) and the layer counts drawn from, per facet
SURFACE_CELL = {"111": (3, 3), "100": (3, 3), "110": (2, 3), "211": (3, 3), "0001": (3, 3)}
LAYERS = {"111": (3, 4, 5, 6, 7), "100": (3, 4, 5, 6, 7), "110": (4, 5, 6, 7),
          "211": (3, 4, 5), "0001": (3, 4, 5, 6, 7)}
_BUILDERS = {"111": fcc111, "100": fcc100, "110": fcc110, "0001": hcp0001}
_SITE_NAMES = {"ontop": "top"}
# bimetallic top layers: top-layer share of the second metal in %, or (SA) one atom
ALLOYS = {"A3B": 25, "AB": 50, "SA": 1}
SITES = {"111": ("top", "bridge", "fcc", "hcp"), "0001": ("top", "bridge", "fcc", "hcp"),
         "100": ("top", "bridge", "hollow"),
         "110": ("top", "shortbridge", "longbridge", "hollow"),
         "211": ("step_top", "step_bridge", "terrace_top", "terrace_hollow", "foot_hollow")}


@dataclass
class Surface:
    """A slab (FixAtoms on the bottom layers), per-atom ``layer`` (0 = top), named ``sites``
    (in-plane points, Å) and ``top_xy``: in-plane positions of the equivalent top atoms,
    whose differences are the translations between equivalent sites."""

    atoms: Atoms
    layer: np.ndarray
    sites: dict[str, np.ndarray]
    top_xy: np.ndarray


def surface_facets(metal: str) -> tuple[str, ...]:
    return FACETS[_structure(metal)]


def _structure(metal: str) -> str:
    try:
        return STRUCTURE[metal]
    except KeyError:
        raise InputError(f"unknown metal {metal!r}; known: {', '.join(STRUCTURE)}") from None


def build_surface(metal: str, facet: str, size: tuple[int, int, int], lattice: Sequence[float],
                  *, fixed_layers: int, vacuum: float = 10.0) -> Surface:
    """``size = (nx, ny, layers)`` slab of ``metal``'s ``facet`` at the lattice constants
    ``lattice`` (``(a,)`` fcc, ``(a, c)`` hcp), ``vacuum`` Å on each side, pbc [T, T, F]."""
    nx, ny, nz = size
    if facet not in SURFACE_CELL or facet not in surface_facets(metal):
        raise InputError(f"no facet {facet!r} for {metal} ({_structure(metal)}); "
                         f"have {', '.join(surface_facets(metal))}")
    if not 0 <= fixed_layers < nz:
        raise InputError(f"fixed_layers must be in 0..{nz - 1}; got {fixed_layers}")
    if facet == "211":
        if nx != 3:
            raise InputError(f"(211) slabs have one step per cell (size 3xNxL); got nx={nx}")
        slab = fcc211(metal, size=(nx, ny, nz), a=lattice[0], vacuum=vacuum)
        rank = np.empty(len(slab), dtype=int)
        rank[np.argsort(-slab.positions[:, 2], kind="stable")] = np.arange(len(slab))
        layer = rank // (len(slab) // nz)
        sites, top_xy = _sites_211(slab, ny)
    else:
        kw = {"a": lattice[0], **({"c": lattice[1]} if facet == "0001" else {})}
        slab = _BUILDERS[facet](metal, size=(nx, ny, nz), vacuum=vacuum, **kw)
        layer = slab.get_tags() - 1
        info = slab.info["adsorbate_info"]
        sites = {_SITE_NAMES.get(k, k): np.dot(v, info["cell"]) for k, v in info["sites"].items()}
        top_xy = slab.positions[layer == 0, :2]
        sites = {k: v + top_xy[np.argmin(np.linalg.norm(top_xy, axis=1))] for k, v in sites.items()}
    slab.set_constraint(FixAtoms(mask=layer >= nz - fixed_layers))
    slab.pbc = (True, True, False)
    return Surface(slab, layer, {k: sites[k] for k in SITES[facet]}, top_xy)


def substitute_top_layer(surf: Surface, element: str, kind: str) -> int:
    """Put ``element`` into the top layer of ``surf`` (in place) as the alloy ``kind`` of
    :data:`ALLOYS` and return the index of the first substituted atom (the "dopant" site).

    The top-layer atoms, sorted by y then x, form rows (equal y) of columns: ``SA``
    substitutes the first atom, ``AB`` every other row (one row of a 2x2 cell: rows of
    half the atoms), ``A3B`` every other atom of every other row (one of four: the ordered
    p(2x2)). ``AB`` needs an even number of rows, ``A3B`` also even rows (:class:`InputError`
    where the share would not be exact)."""
    if kind not in ALLOYS:
        raise InputError(f"unknown alloy kind {kind!r}; known: {', '.join(ALLOYS)}")
    slab = surf.atoms
    top = np.flatnonzero(surf.layer == 0)
    top = top[np.lexsort((slab.positions[top, 0], slab.positions[top, 1]))]
    row = np.unique(np.round(slab.positions[top, 1], 3), return_inverse=True)[1].ravel()
    col = np.array([np.count_nonzero(row[:k] == row[k]) for k in range(len(top))])
    pick = {"SA": np.arange(len(top)) == 0, "AB": row % 2 == 0,
            "A3B": (row % 2 == 0) & (col % 2 == 0)}[kind]
    if kind != "SA" and 100 * np.count_nonzero(pick) != ALLOYS[kind] * len(top):
        rows, cols = row.max() + 1, np.bincount(row)
        raise InputError(
            f"alloy {kind} ({ALLOYS[kind]} %) needs an even number of top-layer rows"
            f"{' of even length' if kind == 'A3B' else ''}; this cell has {rows} row(s) of "
            f"{'/'.join(map(str, sorted(set(cols))))} atoms (use an even size, e.g. 2x2 or 4x4)")
    symbols = slab.get_chemical_symbols()
    for i in top[pick]:
        symbols[i] = element
    slab.set_chemical_symbols(symbols)
    return int(top[0])


def _nearest(point: np.ndarray, xy: np.ndarray, cell: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` points of ``xy`` nearest to ``point`` (periodic in-plane), unwrapped."""
    p3 = np.c_[xy, np.zeros(len(xy))]
    vec, dist = get_distances([[*point, 0.0]], p3, cell=cell, pbc=[1, 1, 0])
    order = np.argsort(dist[0], kind="stable")[:k]
    return point + vec[0, order, :2]


def _sites_211(slab: Atoms, ny: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Step-edge row (highest), terrace row (next) and step-foot row (third) sites."""
    order = np.argsort(-slab.positions[:, 2], kind="stable")
    edge, terrace, foot = (slab.positions[order[i * ny:(i + 1) * ny], :2] for i in range(3))
    cell = slab.cell
    a0 = edge[0]
    a1 = _nearest(a0, edge, cell, 2)[1]
    b2 = _nearest(a0, terrace, cell, 2)
    c2 = _nearest((a0 + a1) / 2, foot, cell, 2)  # the foot atoms below the bridge
    sites = {"step_top": a0, "step_bridge": (a0 + a1) / 2, "terrace_top": b2[0],
             "terrace_hollow": (a0 + b2[0] + b2[1]) / 3,
             "foot_hollow": (a0 + a1 + c2[0] + c2[1]) / 4}
    return sites, edge


def build_bulk_cell(metal: str, lattice: Sequence[float]) -> Atoms:
    """fcc: conventional cube ×2 (32 atoms); hcp: primitive cell ×(3, 3, 2) (36 atoms)."""
    if _structure(metal) == "fcc":
        return bulk(metal, "fcc", a=lattice[0], cubic=True).repeat(2)
    return bulk(metal, "hcp", a=lattice[0], c=lattice[1]).repeat((3, 3, 2))


# ---------------------------------------------------------------- lattice constants
def fit_hcp_lattice(metal: str, calc, *, span: float = 0.04, n_points: int = 7
                    ) -> tuple[float, float]:
    """hcp (a, c) minimising ``calc``'s energy: E(V) fits at five c/a ratios, a parabola
    through their minima for c/a, then one more E(V) fit at that ratio."""
    ref = reference_states[atomic_numbers[metal]]
    if ref.get("symmetry") == "hcp":
        a0, ca0 = ref["a"], ref["c/a"]
    else:  # a close-packed guess from the reference fcc/bcc cell (tests use fcc metals)
        a0, ca0 = ref["a"] / math.sqrt(2), math.sqrt(8 / 3)

    def e_min(ca: float) -> tuple[float, float]:
        vols, ens = [], []
        for s in np.linspace(1 - span, 1 + span, n_points):
            atoms = bulk(metal, "hcp", a=a0 * s, c=a0 * s * ca)
            atoms.calc = calc
            vols.append(atoms.get_volume())
            ens.append(atoms.get_potential_energy())
        v0, e0, _ = EquationOfState(vols, ens, eos="birchmurnaghan").fit()
        return float(v0), float(e0)

    ratios = ca0 * np.linspace(0.96, 1.04, 5)
    energies = [e_min(r)[1] for r in ratios]
    p = np.polyfit(ratios, energies, 2)
    ca = float(np.clip(-p[1] / (2 * p[0]), ratios[0], ratios[-1])) if p[0] > 0 else ca0
    v0, _ = e_min(ca)
    a = (2.0 * v0 / (math.sqrt(3.0) * ca)) ** (1.0 / 3.0)  # V = (√3/2) a² c per 2 atoms
    return float(a), float(a * ca)


def load_lattices(path: Path, teacher: str, metals: Sequence[str],
                  calc_factory: Callable[[], object]) -> dict[str, tuple[float, ...]]:
    """metal → ``(a,)`` (fcc) or ``(a, c)`` (hcp) for ``teacher``, cached in the JSON file
    ``path`` as ``{teacher: {metal: [a] or [a, c]}}``; missing ones are fitted."""
    table: dict = json.loads(path.read_text()) if path.exists() else {}
    mine = table.setdefault(teacher, {})
    todo = [m for m in metals if not isinstance(mine.get(m), list)]
    if todo:
        calc = calc_factory()
        for metal in todo:
            fcc = _structure(metal) == "fcc"
            mine[metal] = [fit_lattice_constant(metal, calc)] if fcc else list(
                fit_hcp_lattice(metal, calc))
        with atomic_write(path, "w") as fh:
            fh.write(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return {m: tuple(float(x) for x in mine[m]) for m in metals}
