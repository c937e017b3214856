"""Uncertainty study: which per-atom score catches new chemistry (issue: silently wrong
numbers on new adsorbates, facets, thick slabs and strained cells), for any catalysis model.

1. **Starts**, two deterministic sets (``--starts``):

   - ``old`` (:func:`study_starts`, for tdn-catalysis: (111) of six metals, 8 adsorbates):
     in-domain (111) 3x3x4 slabs of the six trained metals with trained adsorbates (H C N O
     OH CO CH3 H2O); out-of-domain: new adsorbates of trained elements on trained metals
     (111), trained adsorbates on (100), (110), (211), six-layer (111) slabs, and (111) slabs
     strained laterally by 4-6 %.
   - ``coverage2`` (:func:`coverage2_starts`, for a model of the coverage2 recipe: ten metals,
     fcc (111) (100) (110) (211) and hcp (0001), 3-7 layers, alloys, the 25 library
     adsorbates; the teacher's lattice constants of ``datasets/catalysis2-sevennet0``):
     ``in_domain`` (all ten metals and five facets, 22 of the library adsorbates, 3-7 layers,
     three alloy top layers), ``new_adsorbate`` (molecules and fragments of H C N O outside the
     library: C2H4 C2H2 CH3OH HCOOH N2H4 NO2 CH3CHO C2H6 CCH3 NNH2 CH2OH HNO, anchor atom
     lowest, 2.0 Å from the nearest metal atom, the others at least 1.8 Å), ``thick`` (8-9
     layers), ``strained`` (±4-6 % lateral), ``subsurface`` (an H, C, N or O atom in the hole
     between the top two metal layers) and ``other_facet`` (fcc (311) and (210), ten atomic
     planes).

   Bottom layers are fixed: two in the old set, half of them (the recipe's) in coverage2.
2. **Labels** (:func:`label_start`, cached per start and model, :func:`cache_dir`): relax
   with the model (BFGS, fmax 0.03 eV/Å), then SevenNet-0 at the TDN minimum (energy,
   forces) and, when its fmax there is at most 0.5 eV/Å, a SevenNet-0 BFGS relaxation
   continued from the TDN minimum (fmax 0.03, <= 150 steps). A structure is *bad*
   (:func:`tdn_calc.evaluation.flagging.is_bad`) when the teacher fmax (free atoms) at the
   TDN minimum exceeds 0.5 eV/Å or the teacher energy there lies more than 0.2 eV above the
   teacher's nearby minimum (the relaxation is skipped for those already bad by force); an
   atom is bad when ``|F_tdn - F_teacher| > 0.5`` eV/Å.
3. **Scores** (:func:`study`): every candidate on the TDN minima, per structure the maximum
   over atoms: (a) the current Mahalanobis score, (b) chemistry/density scores (Mahalanobis of
   every layer's invariants; nearest training atom in last-layer features or in the
   neighbour-element histogram, the shipped one), (c) LLPR of the energy head's hidden layer
   per atom and per structure. A committee of readout heads was not tried. Features of the
   training atoms come from ``--data`` / ``--split-file`` (defaults: tdn-catalysis's, else the
   model card's data set under ``datasets/`` and its split). A candidate that cannot apply to
   the model (no Mahalanobis summary in its card, no novelty summary, no training data) is
   skipped with its reason (``skipped_candidates``). Each candidate's threshold is chosen on
   the even-numbered starts (the highest recall of bad with a false-flag rate of good at most
   15 %, :func:`calibrate`) and reported on the odd-numbered ones too; AUROC per structure
   and per free atom; the ms each adds to a call.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/uncertainty_study.py  # first tdn-catalysis
    python benchmarks/uncertainty_study.py --starts coverage2 --model runs/X/best.safetensors \\
        --uncertainty runs/X/uncertainty.json --data datasets/catalysis2-sevennet0 \\
        --split-file runs/X/split.json
    python benchmarks/uncertainty_study.py --starts coverage2 --build-only  # check the starts
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atom, Atoms
from ase.constraints import FixAtoms

from tdn_calc.datagen.catalysis.adsorbates import (
    ADSORBATE_NAMES,
    get_adsorbate,
    place_adsorbate,
    place_template,
)
from tdn_calc.datagen.catalysis.surfaces import (
    ALLOYS,
    LAYERS,
    METALS,
    SITES,
    SURFACE_CELL,
    Surface,
    build_surface,
    load_lattices,
    substitute_top_layer,
    surface_facets,
)
from tdn_calc.errors import InputError
from tdn_calc.evaluation.flagging import (
    BAD_DE,
    BAD_FMAX,
    MAX_FALSE_FLAG,
    MIN_RECALL,
    auroc,
    calibrate,
    is_bad,
    rates,
    targets_met,
)
from tdn_calc.fileio import atomic_write
from tdn_calc.slab import fixed_mask

HERE = Path(__file__).resolve().parent
CACHE = HERE / "results" / "uncertainty_cache"
OUT = HERE / "results" / "uncertainty_study.json"
DEFAULT_MODEL = "tdn-catalysis-20261206-2"  # the first tdn-catalysis: the old set and its cache
LATTICE = {"Ag": 4.16608, "Au": 4.17110, "Cu": 3.61181, "Ni": 3.50424, "Pd": 3.95399,
           "Pt": 3.97769}  # SevenNet-0's own fcc lattice constants, Å (data set's table)
LATTICE2 = HERE.parent / "datasets" / "catalysis2-sevennet0" / "lattice_constants.json"
TRAINED_ADS = ("H", "C", "N", "O", "OH", "CO", "CH3", "H2O")
ATOM_CUT = 0.5  # eV/Å, |F_tdn - F_teacher| of a bad atom
FMAX = 0.03
TEACHER_STEPS = 150
DATA = "/work/main/datasets/catalysis-sevennet0"  # tdn-catalysis's training data and split
SPLIT = "/work/main/runs/tdn-catalysis-v3/split.json"
NEW_BOND = 2.0  # Å, start distance of a new adsorbate's anchor to its nearest metal atom
NEW_MIN_OTHER = 1.8  # Å, least start distance of its other atoms to a metal atom
# molecules outside the coverage2 library: ase.build.molecule name -> anchor element
NEW_MOLECULES = {"C2H4": "C", "C2H2": "C", "CH3OH": "O", "HCOOH": "O", "N2H4": "N",
                 "NO2": "N", "CH3CHO": "O", "C2H6": "H"}
# fragments outside it: anchor first, positions in Å (CCH3 and NNH2 stack library templates)
NEW_FRAGMENTS = {
    "CH2OH": ("CHHOH", ((0, 0, 0), (-0.51, 0.89, 0.36), (-0.51, -0.89, 0.36), (1.34, 0, 0.47),
                        (1.60, 0, 1.42))),
    "HNO": ("NOH", ((0, 0, 0), (0.60, 0, 1.05), (-0.95, 0, 0.45))),
}
STACKED = {"CCH3": ("C", "CH3", 1.50), "NNH2": ("N", "NH2", 1.25)}  # atom, template, bond Å
OPEN_CELL = {"311": (1, 3), "210": (2, 3)}  # in-plane repeats of ase.build.surface's cell


# ---------------------------------------------------------------- starts
def lowest_anchor(mol: Atoms, anchor: int, n_directions: int = 2000) -> Atoms:
    """``mol`` with atom ``anchor`` first, at the origin, turned so that the lowest of the
    other atoms lies as high as it can (the best of ``n_directions`` on a Fibonacci sphere
    and the principal axes, so that a flat molecule lies flat, becomes +z): the anchor is
    the lowest atom wherever the molecule allows it."""
    mol = mol[[anchor, *(k for k in range(len(mol)) if k != anchor)]]
    mol.translate(-mol.positions[0])
    mol.pbc, mol.cell = False, None
    if len(mol) > 1:
        k = np.arange(n_directions) + 0.5
        theta, phi = np.arccos(1 - 2 * k / n_directions), np.pi * (1 + 5**0.5) * k
        dirs = np.c_[np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]
        axes = np.linalg.svd(mol.positions[1:] - mol.positions[1:].mean(0))[2]
        dirs = np.r_[dirs, axes, -axes]
        best = dirs[np.argmax((mol.positions[1:] @ dirs.T).min(axis=0))]
        mol.rotate(best, "z")
    return mol


def new_adsorbate(name: str) -> Atoms:
    """Template (anchor first, lowest, at the origin) of an adsorbate outside the library:
    :data:`NEW_MOLECULES` (ASE's g2 geometry), :data:`NEW_FRAGMENTS` or :data:`STACKED`."""
    from ase.build import molecule

    if name in NEW_MOLECULES:
        mol = molecule(name)
        return lowest_anchor(mol, mol.get_chemical_symbols().index(NEW_MOLECULES[name]))
    if name in STACKED:
        atom, top, bond = STACKED[name]
        upper = get_adsorbate(top).template()
        upper.translate([0.0, 0.0, bond])
        return lowest_anchor(Atoms(atom) + upper, 0)
    if name in NEW_FRAGMENTS:
        symbols, positions = NEW_FRAGMENTS[name]
        return lowest_anchor(Atoms(symbols, positions=positions), 0)
    raise InputError(f"unknown adsorbate {name!r}: neither in the library nor a new one")


def open_surface(metal: str, facet: str, size: tuple[int, int, int],
                 lattice: Sequence[float]) -> Surface:
    """fcc ``facet`` ("311", "210": open, outside the recipe) of ``metal`` by
    ``ase.build.surface`` with ``size[2]`` atomic planes (layer 0 = top plane), 10 Å vacuum
    each side; one site, ``top``, over the highest atom."""
    from ase.build import bulk, surface

    slab = surface(bulk(metal, "fcc", a=lattice[0]), tuple(int(c) for c in facet), size[2],
                   vacuum=10.0).repeat((*OPEN_CELL[facet], 1))
    slab.pbc = (True, True, False)
    heights = np.round(slab.positions[:, 2], 3)
    layer = np.searchsorted(-np.unique(heights)[::-1], -heights)
    top_xy = slab.positions[layer == 0, :2]
    return Surface(slab, layer, {"top": top_xy[0]}, top_xy)


def _subsurface(atoms: Atoms, surf: Surface, element: str, strain: float,
                rng: np.random.Generator) -> None:
    """Append ``element`` midway between the top two metal layers under the site of ``surf``
    farthest from every metal atom (the octahedral hole under fcc of (111)/(0001), the
    tetrahedral one under bridge of (100)), jittered by 0.05 Å."""
    from ase.geometry import get_distances

    z = [atoms.positions[surf.layer == k, 2].mean() for k in (0, 1)]
    holes = np.array([[*(xy * (1 + strain)), (z[0] + z[1]) / 2] for xy in surf.sites.values()])
    _, d = get_distances(holes, atoms.positions[:len(surf.layer)], cell=atoms.cell,
                         pbc=[1, 1, 0])
    atoms.append(Atom(element, holes[np.argmax(d.min(axis=1))] + rng.normal(0.0, 0.05, 3)))


def slab_start(metal: str, facet: str, ads: str | None, site: str | None, *, layers: int = 4,
               strain: float = 0.0, seed: int = 0, lattice: Sequence[float] | None = None,
               fixed: int = 2, alloy: tuple[str, str] | None = None,
               below: str | None = None) -> Atoms:
    """A 3x3 (2x3 for (110), 2x2 for A3B/AB alloys) slab of ``layers`` layers at the lattice
    constants ``lattice`` (Å, ``(a,)`` or ``(a, c)``; default :data:`LATTICE`), bottom
    ``fixed`` fixed, scaled by ``1 + strain`` in-plane only; ``alloy = (dopant, kind)``
    substitutes the top layer (:data:`ALLOYS`, site ``dopant`` over the first one);
    ``ads`` (a library or :func:`new_adsorbate` name) placed on ``site`` with a 0.15 Å
    lateral jitter; ``below`` an element put under the top layer (:func:`_subsurface`).
    Facets of :data:`OPEN_CELL` are built by :func:`open_surface` (``layers`` planes)."""
    rng = np.random.default_rng(seed)
    lattice = (LATTICE[metal],) if lattice is None else tuple(lattice)
    cell = (2, 2) if alloy and alloy[1] != "SA" else OPEN_CELL.get(facet, SURFACE_CELL.get(facet))
    size = (*cell, layers)
    if facet in OPEN_CELL:
        surf = open_surface(metal, facet, size, lattice)
    else:
        surf = build_surface(metal, facet, size, lattice, fixed_layers=fixed)
    atoms = surf.atoms
    if alloy:
        surf.sites["dopant"] = atoms.positions[substitute_top_layer(surf, *alloy), :2]
    if strain:
        cell = atoms.cell.array.copy()
        cell[:2] *= 1 + strain
        atoms.set_cell(cell, scale_atoms=False)
        atoms.positions[:, :2] *= 1 + strain
    n_metal = len(atoms)
    if ads is not None:
        xy = surf.sites[site] * (1 + strain) + rng.normal(0.0, 0.15, 2)
        if ads in ADSORBATE_NAMES:
            place_adsorbate(atoms, n_metal, ads, xy, rng)
        else:
            mol = new_adsorbate(ads)
            mol.rotate(rng.uniform(0.0, 360.0), "z", center=(0, 0, 0))
            place_template(atoms, n_metal, mol, xy, NEW_BOND, min_other=NEW_MIN_OTHER)
    if below is not None:
        _subsurface(atoms, surf, below, strain, rng)
    atoms.set_constraint(FixAtoms(mask=np.r_[surf.layer >= layers - fixed,
                                             np.zeros(len(atoms) - n_metal, bool)]))
    return atoms


def _build(specs: list[tuple[str, str, tuple, dict]]) -> list[dict[str, Any]]:
    """``[{"label", "group", "adsorbate", "atoms"}]`` of ``(group, label, slab_start args,
    kwargs)`` specs; the seed of each is its index."""
    repeated = sorted(k for k, n in Counter(label for _, label, _, _ in specs).items() if n > 1)
    if repeated:
        raise InputError(f"repeated start labels: {repeated}")
    return [{"label": label, "group": group, "adsorbate": args[2],
             "atoms": slab_start(*args, seed=seed, **kw)}
            for seed, (group, label, args, kw) in enumerate(specs)]


def study_starts() -> list[dict[str, Any]]:
    """The ``old`` set (for tdn-catalysis): 20 in-domain, 10 new-adsorbate, 8 facet, 4
    six-layer and 4 strained starts (fixed seeds)."""
    metals = ("Pt", "Pd", "Ni", "Cu", "Ag", "Au")
    sites = ("top", "bridge", "fcc", "hcp")
    out = []
    rng = np.random.default_rng(2026)
    for k in range(20):
        metal, ads, site = metals[k % 6], TRAINED_ADS[k % 8], sites[int(rng.integers(4))]
        out.append(("in_domain", f"{metal}111/{ads}/{site}/s{k}", (metal, "111", ads, site), {}))
    new = [("Pt", "COOH", "top"), ("Cu", "NNH", "top"), ("Ni", "CH2", "bridge"),
           ("Pt", "NH2", "bridge"), ("Cu", "HCOO", "top"), ("Pd", "CHO", "bridge"),
           ("Au", "NH3", "top"), ("Pt", "OOH", "top"), ("Ni", "CH3O", "fcc"), ("Pd", "NO", "fcc")]
    out += [("new_adsorbate", f"{m}111/{a}/{s}", (m, "111", a, s), {}) for m, a, s in new]
    facets = [("Pt", "100", "CO", "top"), ("Cu", "100", "O", "hollow"),
              ("Ni", "110", "H", "shortbridge"), ("Pd", "110", "OH", "shortbridge"),
              ("Au", "211", "CO", "step_top"), ("Pt", "211", "H", "step_bridge"),
              ("Ag", "100", "N", "hollow"), ("Ni", "211", "CH3", "terrace_hollow")]
    out += [("facet", f"{m}{f}/{a}/{s}", (m, f, a, s), {}) for m, f, a, s in facets]
    thick = [("Pt", "CO", "top"), ("Cu", "H", "fcc"), ("Ni", "O", "hcp"), ("Au", None, None)]
    out += [("six_layer", f"{m}111x6/{a}/{s}", (m, "111", a, s), {"layers": 6})
            for m, a, s in thick]
    strained = [("Pt", "CO", "top", 0.05), ("Cu", "O", "fcc", -0.04), ("Pd", "H", "fcc", 0.06),
                ("Ag", "OH", "top", -0.05)]
    out += [("strained", f"{m}111{e:+.0%}/{a}/{s}", (m, "111", a, s), {"strain": e})
            for m, a, s, e in strained]
    return _build(out)


def coverage2_lattice() -> dict[str, tuple[float, ...]]:
    """SevenNet-0's own lattice constants (Å; (a,) fcc, (a, c) hcp) of the ten metals, from
    the coverage2 data set's table (never fitted here)."""
    def no_fit():
        raise InputError(f"{LATTICE2} lacks SevenNet-0 lattice constants of some metals")

    return load_lattices(LATTICE2, "sevenn-0", METALS, no_fit)


def coverage2_starts() -> list[dict[str, Any]]:
    """The ``coverage2`` set (fixed seeds): 24 in-domain (21 pure surfaces: metal ``k % 10``,
    its facets in turn, library adsorbate ``7k % 25``, a random site, the facet's layer
    counts in turn; three alloys), 12 new-adsorbate, 6 thick (8-9 layers), 6 strained, 6
    subsurface and 4 other-facet starts; bottom ``layers // 2`` layers fixed (the recipe's)."""
    lattice = coverage2_lattice()
    out = []

    def add(group: str, label: str, metal: str, facet: str, ads: str | None, site: str | None,
            layers: int = 4, **kw) -> None:
        out.append((group, label, (metal, facet, ads, site),
                    {"layers": layers, "lattice": lattice[metal], "fixed": layers // 2, **kw}))

    rng = np.random.default_rng(2027)
    for k in range(21):
        metal = METALS[k % len(METALS)]
        facets = surface_facets(metal)
        facet = facets[(k + k // len(METALS)) % len(facets)]
        ads, site = ADSORBATE_NAMES[7 * k % len(ADSORBATE_NAMES)], str(rng.choice(SITES[facet]))
        layers = LAYERS[facet][k % len(LAYERS[facet])]
        add("in_domain", f"{metal}{facet}x{layers}/{ads}/{site}/s{k}", metal, facet, ads, site,
            layers)
    for host, dopant, kind, ads, site in (("Pt", "Ni", "A3B", "O", "fcc"),
                                          ("Cu", "Pd", "AB", "H", "hcp"),
                                          ("Ru", "Pt", "SA", "CO", "dopant")):
        facet = surface_facets(host)[0]
        add("in_domain", f"{host}{facet}x4-{dopant}{ALLOYS[kind]}/{ads}/{site}", host, facet,
            ads, site, alloy=(dopant, kind))
    new = [("Pt", "111", "C2H4", "bridge"), ("Pd", "100", "C2H2", "hollow"),
           ("Cu", "111", "CH3OH", "top"), ("Ag", "110", "HCOOH", "top"),
           ("Ni", "211", "N2H4", "step_bridge"), ("Rh", "111", "NO2", "top"),
           ("Ir", "100", "CH3CHO", "top"), ("Au", "111", "C2H6", "top"),
           ("Ru", "0001", "CCH3", "fcc"), ("Co", "0001", "NNH2", "hcp"),
           ("Pt", "211", "CH2OH", "step_top"), ("Pd", "111", "HNO", "fcc")]
    for m, f, a, s in new:
        add("new_adsorbate", f"{m}{f}x4/{a}/{s}", m, f, a, s)
    thick = [("Pt", "111", 9, "CO", "top"), ("Cu", "100", 8, "O", "hollow"),
             ("Ni", "110", 8, "H", "shortbridge"), ("Ru", "0001", 9, "N", "hcp"),
             ("Ir", "211", 8, "OH", "step_top"), ("Co", "0001", 8, "CH3", "fcc")]
    for m, f, n, a, s in thick:
        add("thick", f"{m}{f}x{n}/{a}/{s}", m, f, a, s, n)
    strained = [("Pt", "111", "CO", "top", 0.05), ("Cu", "100", "O", "hollow", -0.04),
                ("Rh", "110", "H", "shortbridge", 0.06), ("Ru", "0001", "OH", "top", -0.05),
                ("Ag", "211", "CO", "step_bridge", 0.04), ("Co", "0001", "N", "fcc", -0.06)]
    for m, f, a, s, e in strained:
        add("strained", f"{m}{f}x4{e:+.0%}/{a}/{s}", m, f, a, s, strain=e)
    below = [("Pd", "111", "H", 4), ("Ni", "111", "C", 5), ("Pt", "100", "O", 4),
             ("Ru", "0001", "N", 5), ("Cu", "111", "O", 4), ("Rh", "100", "H", 5)]
    for m, f, el, n in below:
        add("subsurface", f"{m}{f}x{n}/sub-{el}", m, f, None, None, n, below=el)
    other = [("Pt", "311", "CO"), ("Cu", "210", "O"), ("Ni", "311", "H"), ("Au", "210", "OH")]
    for m, f, a in other:
        add("other_facet", f"{m}{f}x10/{a}/top", m, f, a, "top", 10)
    return _build(out)


START_SETS = {"old": study_starts, "coverage2": coverage2_starts}
# groups whose adsorbates lie outside the library (the old set's new ones are library names)
NOVEL_GROUPS = {"old": (), "coverage2": ("new_adsorbate",)}


def check_starts(starts: list[dict[str, Any]], novel_groups: Sequence[str] = ("new_adsorbate",)
                 ) -> dict[str, int]:
    """Starts per group, after checking that no two atoms of a start are closer than 0.7 Å
    (periodic images included) and that adsorbates are library names except in
    ``novel_groups``, where none is (:class:`InputError` otherwise)."""
    problems = []
    for s in starts:
        d = s["atoms"].get_all_distances(mic=True)
        d_min = float(d[~np.eye(len(d), dtype=bool)].min())
        if d_min < 0.7:
            problems.append(f"{s['label']}: atoms {d_min:.2f} Å apart")
        ads = s["adsorbate"]
        if ads is not None and (ads in ADSORBATE_NAMES) == (s["group"] in novel_groups):
            problems.append(f"{s['label']}: {ads} is {'' if ads in ADSORBATE_NAMES else 'not '}"
                            "a library adsorbate")
    if problems:
        raise InputError("bad starts: " + "; ".join(problems))
    return dict(Counter(s["group"] for s in starts))


# ---------------------------------------------------------------- labels
def model_key(model: str) -> str:
    """The dated file name of the registered model ``model`` (a name, alias or file, e.g.
    ``tdn-catalysis-20261206-3``: unique per weights, so labels cached under it never belong
    to a later model of the same name), else ``sha256-`` and the first 12 hex digits of its
    file's sha256."""
    from tdn_calc.fileio import sha256_file
    from tdn_calc.registry import model_path, name_for_sha256

    path = Path(model_path(model))
    sha = sha256_file(path)
    return path.stem if name_for_sha256(sha) else f"sha256-{sha[:12]}"


def cache_dir(key: str, start_set: str) -> Path:
    """Cached labels of model ``key`` (:func:`model_key`) on ``start_set``: the original
    study's folder for tdn-catalysis on the old set, else ``<key>/<start_set>`` under it."""
    return CACHE if (key, start_set) == (DEFAULT_MODEL, "old") else CACHE / key / start_set


def default_out(key: str, start_set: str) -> Path:
    return OUT if (key, start_set) == (DEFAULT_MODEL, "old") else \
        OUT.with_name(f"uncertainty_study-{key}-{start_set}.json")


def cache_path(label: str, cache: Path = CACHE) -> Path:
    return cache / (label.replace("/", "_").replace("%", "pc").replace("+", "p") + ".json")


def label_start(start: dict[str, Any], calc, teacher, cache: Path = CACHE) -> dict[str, Any]:
    """Relax ``start`` with ``calc`` (TDN), judge with ``teacher``; the row (JSON) cached in
    the folder ``cache``."""
    from tdn_calc.relax import relax

    path = cache_path(start["label"], cache)
    if path.exists():
        return json.loads(path.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    atoms = start["atoms"]
    free = ~fixed_mask(atoms)
    t0 = time.perf_counter()
    try:
        res = relax(atoms, calc, fmax=FMAX, steps=300, optimizer="BFGS", warn=False)
    except Exception as exc:
        row = {"label": start["label"], "group": start["group"], "error": repr(exc)}
        path.write_text(json.dumps(row))
        return row
    tdn_s = time.perf_counter() - t0
    minimum = res.atoms.copy()
    minimum.set_constraint(atoms.constraints)
    f_tdn = res.atoms.get_forces(apply_constraint=False)
    minimum.calc = teacher
    e_t = float(minimum.get_potential_energy())
    f_t = minimum.get_forces(apply_constraint=False)
    fmax_t = float(np.linalg.norm(f_t[free], axis=1).max())
    e_tmin, t_steps, t_conv = None, 0, None
    if fmax_t <= BAD_FMAX:
        tres = relax(minimum, teacher, fmax=FMAX, steps=TEACHER_STEPS, optimizer="BFGS",
                     warn=False, guard=None)
        e_tmin, t_steps, t_conv = tres.energy, tres.n_steps, tres.converged
    de = None if e_tmin is None else e_t - e_tmin
    row = {
        "label": start["label"], "group": start["group"], "n_atoms": len(atoms),
        "numbers": atoms.numbers.tolist(), "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(), "free": free.tolist(),
        "positions": minimum.positions.tolist(),
        "tdn_converged": res.converged, "tdn_steps": res.n_steps, "tdn_energy": res.energy,
        "tdn_s": tdn_s, "forces_tdn": f_tdn.tolist(), "forces_teacher": f_t.tolist(),
        "teacher_energy_at_tdn_min": e_t, "teacher_fmax_at_tdn_min": fmax_t,
        "teacher_min_energy": e_tmin, "teacher_steps": t_steps, "teacher_converged": t_conv,
        "de_above_teacher_min": de, "bad": is_bad(fmax_t, -np.inf if de is None else de),
    }
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def label_all(starts: list[dict[str, Any]], model: str = DEFAULT_MODEL,
              uncertainty: str | None = None, cache: Path = CACHE) -> list[dict[str, Any]]:
    """Cached rows of every start (computes the missing ones with ``model``, a registered
    name or a file, and its novelty summary ``uncertainty``, a JSON file, when given)."""
    if all(cache_path(s["label"], cache).exists() for s in starts):
        return [json.loads(cache_path(s["label"], cache).read_text()) for s in starts]
    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.teachers import get_teacher

    calc = TDNCalculator(model, device="cpu", uncertainty=uncertainty or True)
    teacher = get_teacher("sevenn-0")
    rows = []
    for s in starts:
        t0 = time.perf_counter()
        row = label_start(s, calc, teacher, cache)
        print(f"{s['label']:36s} bad={row.get('bad')} fmax_t={row.get('teacher_fmax_at_tdn_min')}"
              f" dE={row.get('de_above_teacher_min')} {time.perf_counter() - t0:.1f}s",
              flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- candidate scores
def row_atoms(row: dict[str, Any]) -> Atoms:
    """The TDN minimum of a cached row."""
    return Atoms(numbers=row["numbers"], positions=row["positions"], cell=row["cell"],
                 pbc=row["pbc"])


def atom_features(model, graph) -> dict[str, np.ndarray]:
    """Per-atom candidate features of ``graph`` (float64 numpy, ``[n_atoms, .]``):
    ``last`` (last-layer invariants, the Mahalanobis score's), ``blocks`` (both blocks'
    invariants and the last layer's, concatenated), ``hidden`` (the energy head's hidden layer,
    the LLPR features) and ``hist`` (:func:`tdn_calc.uncertainty.graph_histogram`)."""
    import torch

    from tdn_calc.uncertainty import graph_histogram

    kept: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: kept.append(o[:, 0, :].detach()))
             for b in model.blocks]
    try:
        with torch.no_grad():
            x = model.node_features(graph)[:, 0, :]
            h = model.head[1](model.head[0](x))
    finally:
        for hook in hooks:
            hook.remove()
    return {"last": x.double().numpy(), "hidden": h.double().numpy(),
            "blocks": torch.cat([*kept, x], dim=1).double().numpy(),
            "hist": graph_histogram(graph, model.elements, model.cutoff),
            "numbers": graph.atomic_numbers.numpy(), "system": graph.system_idx.numpy()}


def split_frames(model, data: Sequence[str], split_file: str | None, split: str
                 ) -> tuple[Any, np.ndarray]:
    """The data set of the folders ``data`` and the frame indices of its ``split``
    ("train", "test") by ``split_file`` (default: the one in ``model``'s card)."""
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.train.evaluate import select_frames

    dataset = H5Dataset(list(data))
    card = None if split_file else getattr(model, "card", None)
    return dataset, select_frames(dataset, split, split_file, card)[0]


def training_features(model, n_frames: int, data: Sequence[str] = (DATA,),
                      split_file: str | None = SPLIT, seed: int = 0) -> dict[str, np.ndarray]:
    """:func:`atom_features` of ``n_frames`` random frames of the training split."""
    import torch

    from tdn_calc.data.dataset import Collater

    dataset, indices = split_frames(model, data, split_file, "train")
    indices = np.sort(np.random.default_rng(seed).choice(indices, n_frames, replace=False))
    collate = Collater(cutoff=model.cutoff, dtype=torch.float64, max_neighbors=None)
    parts = []
    for s in range(0, len(indices), 16):
        graph, _ = collate([dataset[int(k)] for k in indices[s:s + 16]])
        f = atom_features(model, graph)
        f["system"] = f["system"] + s
        parts.append(f)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _quantile_scaled(values: np.ndarray) -> float:
    return max(float(np.quantile(values, 0.999)), 1e-12)


class Mahalanobis:
    """Per-element Mahalanobis distance of feature ``key`` (shrinkage 0.1), in units of the
    training atoms' 99.9th percentile."""

    def __init__(self, train: dict[str, np.ndarray], key: str) -> None:
        from tdn_calc.extrapolation import shrunk_covariance

        self.key, self.fit = key, {}
        for z in np.unique(train["numbers"]):
            x = train[key][train["numbers"] == z]
            mu, prec = x.mean(0), np.linalg.inv(shrunk_covariance(x, 0.1))
            self.fit[z] = (mu, prec, 1.0)
            self.fit[z] = (mu, prec, _quantile_scaled(self._d(x, z)))

    def _d(self, x: np.ndarray, z: int) -> np.ndarray:
        mu, prec, scale = self.fit[z]
        return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", x - mu, prec, x - mu), 0)) / scale

    def __call__(self, f: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(len(f["numbers"]))
        for z in np.unique(f["numbers"]):
            sel = f["numbers"] == z
            out[sel] = self._d(f[self.key][sel], z)
        return out


class NearestNeighbour:
    """Per-element distance to the nearest training atom in feature ``key``, in units of the
    training atoms' leave-one-out 99.9th percentile (the shipped score for ``hist``)."""

    def __init__(self, train: dict[str, np.ndarray], key: str, bank: int = 4000) -> None:
        from tdn_calc.uncertainty import fit_histograms

        groups = {int(z): train[key][train["numbers"] == z] for z in np.unique(train["numbers"])}
        self.key = key
        self.summary = fit_histograms(groups, [], 0.0, bank_size=bank, resolution=0.0)

    def __call__(self, f: dict[str, np.ndarray]) -> np.ndarray:
        return self.summary.score(f[self.key], f["numbers"])


class LLPR:
    """Last-layer prediction rigidity of the energy head's hidden features ``h`` ``[C]``:
    ``h^T (H^T H / n + lam * mean(diag) * I)^-1 h`` with ``H`` the training atoms' (per
    element, or per structure with ``structure=True`` on per-frame sums), in units of the
    training 99.9th percentile."""

    def __init__(self, train: dict[str, np.ndarray], structure: bool = False,
                 lam: float = 1e-3) -> None:
        self.structure, self.fit = structure, {}
        if structure:
            sums = np.zeros((train["system"].max() + 1, train["hidden"].shape[1]))
            np.add.at(sums, train["system"], train["hidden"])
            groups = {None: sums}
        else:
            groups = {z: train["hidden"][train["numbers"] == z]
                      for z in np.unique(train["numbers"])}
        for z, h in groups.items():
            a = h.T @ h / len(h)
            prec = np.linalg.inv(a + lam * np.trace(a) / len(a) * np.eye(len(a)))
            self.fit[z] = (prec, 1.0)
            self.fit[z] = (prec, _quantile_scaled(self._u(h, z)))

    def _u(self, h: np.ndarray, z) -> np.ndarray:
        prec, scale = self.fit[z]
        return np.einsum("ni,ij,nj->n", h, prec, h) / scale

    def __call__(self, f: dict[str, np.ndarray]) -> np.ndarray:
        if self.structure:
            return np.full(len(f["numbers"]), self._u(f["hidden"].sum(0, keepdims=True), None)[0])
        out = np.zeros(len(f["numbers"]))
        for z in np.unique(f["numbers"]):
            sel = f["numbers"] == z
            out[sel] = self._u(f["hidden"][sel], z)
        return out


# ---------------------------------------------------------------- metrics
def evaluate(name: str, per_atom: list[np.ndarray], rows: list[dict[str, Any]],
             fixed_threshold: float | None) -> dict[str, Any]:
    """Per-structure (max over atoms) and per-atom (free atoms) figures of one candidate."""
    smax = np.array([float(p.max()) for p in per_atom])
    bad = np.array([r["bad"] for r in rows])
    calib = np.arange(len(rows)) % 2 == 0
    t = calibrate(smax[calib], bad[calib])
    atom_s, atom_y = [], []
    for r, p in zip(rows, per_atom, strict=True):
        err = np.linalg.norm(np.subtract(r["forces_tdn"], r["forces_teacher"]), axis=1)
        free = np.asarray(r["free"])
        atom_s.append(p[free])
        atom_y.append(err[free] > ATOM_CUT)
    out = {"name": name, "auroc": auroc(smax, bad),
           "auroc_atoms": auroc(np.concatenate(atom_s), np.concatenate(atom_y)),
           "threshold_calibrated": t, "calibration_half": rates(smax[calib], bad[calib], t),
           "held_out_half": rates(smax[~calib], bad[~calib], t), "all": rates(smax, bad, t),
           "structure_scores": smax.tolist()}
    if fixed_threshold is not None:
        out["threshold_fixed"] = fixed_threshold
        out["at_fixed_threshold"] = rates(smax, bad, fixed_threshold)
    held = out["held_out_half"]
    out["targets_met_held_out"] = targets_met(held)
    return out


def group_recall(rows: list[dict[str, Any]], smax: list[float], t: float) -> dict[str, Any]:
    """Per start group: bad / flagged-bad / good / flagged-good counts at threshold ``t``."""
    out: dict[str, Any] = {}
    for r, s in zip(rows, smax, strict=True):
        g = out.setdefault(r["group"], {"bad": 0, "bad_flagged": 0, "good": 0,
                                        "good_flagged": 0})
        key = "bad" if r["bad"] else "good"
        g[key] += 1
        g[f"{key}_flagged"] += int(s > t)
    return out


# ---------------------------------------------------------------- cost
def call_cost(model: str = DEFAULT_MODEL, uncertainty: str | None = None,
              mahalanobis: bool = True, novelty: bool = True, n_repeat: int = 30
              ) -> dict[str, float]:
    """Median ms of one energy+forces call of ``model`` (float32, CPU) on a 38-atom
    Pt(111)+CO slab without scores, with the Mahalanobis score (one more forward pass), with
    the shipped novelty score (``uncertainty``: its JSON file, default the registered one),
    and with both (those the model has: ``mahalanobis``, ``novelty``); the calculators take
    turns (round robin) so that a busy machine slows them alike."""
    from tdn_calc.calculator import TDNCalculator

    atoms = slab_start("Pt", "111", "CO", "top")
    u = uncertainty or True
    kinds = [(key, e, n) for key, e, n in (("bare", False, False),
                                           ("with_mahalanobis", True, False),
                                           ("with_novelty", False, u), ("with_both", True, u))
             if (mahalanobis or not e) and (novelty or not n)]
    calcs = {key: TDNCalculator(model, device="cpu", extrapolation=e, uncertainty=n)
             for key, e, n in kinds}
    times: dict[str, list[float]] = {key: [] for key in calcs}
    for k in range(n_repeat + 3):
        for key, calc in calcs.items():
            a = atoms.copy()
            a.positions[-1, 2] += 1e-4 * k
            a.calc = calc
            t0 = time.perf_counter()
            a.get_forces()
            times[key].append(time.perf_counter() - t0)
    out = {f"{key}_ms": 1e3 * float(np.median(t[3:])) for key, t in times.items()}
    for key in [k for k in calcs if k != "bare"]:
        out[f"{key}_overhead"] = out[f"{key}_ms"] / out["bare_ms"] - 1
    return out


def time_ms(fn, *args, repeat: int = 20) -> float:
    """Median ms of ``fn(*args)``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def split_flag_rates(model, summary, threshold: float, data: Sequence[str] = (DATA,),
                     split_file: str | None = SPLIT, n_frames: int = 400, seed: int = 1
                     ) -> dict[str, Any]:
    """The shipped score on random test-split frames (held-out systems of the training
    distribution, SevenNet-0 labels stored): fraction of frames and atoms flagged at
    ``threshold``, per frame kind, and against the frame's largest force error of ``model``
    (a frame is bad when an atom's ``|F_tdn - F_label| > ATOM_CUT``)."""
    import torch

    from tdn_calc.data.dataset import Collater
    from tdn_calc.data.frames import kind_name

    dataset, indices = split_frames(model, data, split_file, "test")
    indices = np.sort(np.random.default_rng(seed).choice(indices, min(n_frames, len(indices)),
                                                         replace=False))
    collate = Collater(cutoff=summary.cutoff, dtype=torch.float64, max_neighbors=None)
    frame_max, frame_err, n_atoms, n_flagged = [], [], 0, 0
    for s in range(0, len(indices), 32):
        graph, target = collate([dataset[int(k)] for k in indices[s:s + 32]])
        scores = summary.score_graph(graph)
        err = (model(graph)["forces"] - target["forces"]).norm(dim=1).numpy()
        system = graph.system_idx.numpy()
        frame_max += [float(scores[system == k].max()) for k in range(graph.n_systems)]
        frame_err += [float(err[system == k].max()) for k in range(graph.n_systems)]
        n_atoms, n_flagged = n_atoms + len(scores), n_flagged + int((scores > threshold).sum())
    kinds = np.array([str(kind_name(k)) for k in dataset.frame_kind[indices]])
    score, bad = np.array(frame_max), np.array(frame_err) > ATOM_CUT
    flagged = score > threshold
    return {"n_frames": len(indices), "frames_flagged": float(flagged.mean()),
            "atoms_flagged": n_flagged / n_atoms,
            "by_kind": {str(k): {"n": int((kinds == k).sum()),
                            "flagged": float(flagged[kinds == k].mean())}
                        for k in sorted(set(kinds))},
            "bad_frames": int(bad.sum()), "auroc": auroc(score, bad),
            **rates(score, bad, threshold)}


# ---------------------------------------------------------------- study
SHIPPED = "(b) nearest training neighbour-element histogram (shipped)"


class Skip(Exception):
    """A candidate that does not apply to the model; the message says why."""


def novelty_summary(model: str, path: str | None, threshold: float | None
                    ) -> tuple[Any, float, dict[str, Any]] | None:
    """``(summary, threshold, record)`` of the shipped chemistry-novelty score: the JSON file
    ``path`` (threshold: ``threshold``, else 1.0) or ``model``'s registered sidecar (its
    threshold unless ``threshold`` is given); None when neither exists."""
    from tdn_calc.fileio import sha256_file
    from tdn_calc.registry import model_entry, model_path, name_for_sha256
    from tdn_calc.uncertainty import ChemistryNovelty, for_model

    if path:
        return (ChemistryNovelty.load(path), 1.0 if threshold is None else threshold,
                {"method": "neighbour-histogram-knn", "file": str(path)})
    found = for_model(model)  # None unless registered (by name or by the file's sha256)
    if found is None:
        return None
    record = model_entry(name_for_sha256(sha256_file(model_path(model))))["uncertainty"]
    return found[0], found[1] if threshold is None else threshold, record


def candidates(dist, shipped, train: dict[str, np.ndarray] | str
               ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The candidate scores: ``[{"name", "fn"}]`` with ``fn(features, graph)`` the per-atom
    scores (:func:`atom_features`, the TDN minimum's graph), and ``[{"name", "skipped"}]`` for
    those that cannot apply: ``dist`` (the card's Mahalanobis summary), ``shipped`` (the
    novelty summary) or ``train`` (training features; a string: why there are none) is
    missing, or fitting fails."""
    def need(value, reason: str):
        if value is None or isinstance(value, str):
            raise Skip(value if isinstance(value, str) else reason)
        return value

    def mahalanobis():
        fit = need(dist, "the model card has no Mahalanobis summary (tdn_calc.extrapolation)")
        return lambda f, g: fit.score(f["last"], f["numbers"])

    def novelty():
        fit = need(shipped, "no chemistry-novelty summary (registered sidecar or --uncertainty)")
        return lambda f, g: fit.score_graph(g)

    def fitted(cls, *args, **kw):
        fit = cls(need(train, "no training features"), *args, **kw)
        return lambda f, g: fit(f)

    def both():
        a, b = mahalanobis(), novelty()
        return lambda f, g: np.maximum(a(f, g), b(f, g))

    made, skipped = [], []
    for name, make in [
        ("(a) Mahalanobis, last-layer invariants (current)", mahalanobis),
        ("(b) Mahalanobis, invariants of every layer", lambda: fitted(Mahalanobis, "blocks")),
        ("(b) nearest training atom, last-layer invariants",
         lambda: fitted(NearestNeighbour, "last")),
        (SHIPPED, novelty),
        ("(c) LLPR per atom (per element)", lambda: fitted(LLPR)),
        ("(c) LLPR per structure", lambda: fitted(LLPR, structure=True)),
        ("max of (a) and shipped (b)", both),
    ]:
        try:
            made.append({"name": name, "fn": make()})
        except Exception as exc:  # a candidate that cannot apply to this model
            skipped.append({"name": name, "skipped": str(exc) if isinstance(exc, Skip)
                            else repr(exc)})
    return made, skipped


def default_data(model, key: str, data: Sequence[str] | None, split_file: str | None
                 ) -> tuple[list[str] | None, str | None]:
    """Training data folders and split file of the features: as given, tdn-catalysis's
    (:data:`DATA`, :data:`SPLIT`), else the card's data set under ``datasets/`` (its split
    from the card); no folders (None) when none is found."""
    if data:
        return list(data), split_file
    if key == DEFAULT_MODEL:
        return [DATA], split_file or SPLIT
    name = ((getattr(model, "card", None) or {}).get("trained_on") or {}).get("dataset")
    folder = HERE.parent / "datasets" / str(name)
    return ([str(folder)] if name and folder.is_dir() else None), split_file


def study(n_train_frames: int, model_name: str = DEFAULT_MODEL, start_set: str = "old",
          uncertainty: str | None = None, uncertainty_threshold: float | None = None,
          data: Sequence[str] | None = None, split_file: str | None = None,
          rows: list[dict[str, Any]] | None = None, cost: bool = True) -> dict[str, Any]:
    """The report: labels of ``start_set`` by ``model_name`` (``rows`` when given), every
    candidate's figures, the shipped score's (at its threshold, also on the test split) and,
    with ``cost``, the ms each score adds to a call."""
    import torch

    from tdn_calc.checkpoint import load_model
    from tdn_calc.extrapolation import from_card
    from tdn_calc.graph import atoms_to_graph

    key = model_key(model_name)
    if rows is None:
        rows = label_all(START_SETS[start_set](), model_name, uncertainty,
                         cache_dir(key, start_set))
    rows = [r for r in rows if "positions" in r]
    model = load_model(model_name, device="cpu", dtype="float64")
    data, split_file = default_data(model, key, data, split_file)
    train: dict[str, np.ndarray] | str
    try:
        train = training_features(model, n_train_frames, data, split_file) if data else \
            "no training data: pass --data (and --split-file)"
    except Exception as exc:
        train = f"training features failed: {exc!r}"
    dist = from_card(model.card)
    found = novelty_summary(model_name, uncertainty, uncertainty_threshold)
    shipped, shipped_threshold, record = found if found else (None, None, None)
    feats = []
    for r in rows:
        graph = atoms_to_graph([row_atoms(r)], model.cutoff, dtype=torch.float64, device="cpu")
        feats.append((atom_features(model, graph), graph))
    made, skipped = candidates(dist, shipped, train)
    results = []
    for c in made:
        try:
            per_atom = [c["fn"](f, g) for f, g in feats]
        except Exception as exc:
            skipped.append({"name": c["name"], "skipped": f"scoring failed: {exc!r}"})
            continue
        res = evaluate(c["name"], per_atom, rows, 1.0)  # all: 99.9 % of training atoms < 1
        f0, g0 = feats[0]
        res["extra_ms_38_atoms"] = time_ms(c["fn"], f0, g0)
        res["by_group_at_calibrated"] = group_recall(rows, res["structure_scores"],
                                                     res["threshold_calibrated"])
        results.append(res)
        print(f"{c['name']:60s} AUROC {_fmt(res['auroc'])} atoms {_fmt(res['auroc_atoms'])} "
              f"t={res['threshold_calibrated']:.2f} held-out {res['held_out_half']}", flush=True)
    for c in skipped:
        print(f"{c['name']:60s} skipped: {c['skipped']}", flush=True)
    bad = np.array([r["bad"] for r in rows])
    shipped_res = next((r for r in results if r["name"] == SHIPPED), None)
    if shipped_res is None:
        shipped_report: dict[str, Any] = {"skipped": next(
            c["skipped"] for c in skipped if c["name"] == SHIPPED)}
    else:
        scores = np.array(shipped_res["structure_scores"])
        shipped_report = {
            "method": record["method"], "threshold": shipped_threshold, "file": record["file"],
            "all": rates(scores, bad, shipped_threshold),
            "by_group": group_recall(rows, scores.tolist(), shipped_threshold),
            "test_split": (split_flag_rates(model, shipped, shipped_threshold, data, split_file)
                           if data else {"skipped": train})}
    return {
        "benchmark": "uncertainty_study", "model": key, "model_sha256": model.sha256,
        "start_set": start_set, "teacher": "sevenn-0", "created": time.strftime("%Y-%m-%d"),
        "targets": {"min_recall_bad": MIN_RECALL, "max_false_flag_good": MAX_FALSE_FLAG},
        "labels": {"bad_fmax_eV_A": BAD_FMAX, "bad_dE_eV": BAD_DE, "atom_cut_eV_A": ATOM_CUT,
                   "tdn_fmax": FMAX, "teacher_steps": TEACHER_STEPS},
        "n_train_frames_features": n_train_frames,
        "training_data": {"data": data, "split_file": split_file},
        "starts": [{k: r[k] for k in ("label", "group", "bad", "teacher_fmax_at_tdn_min",
                                      "de_above_teacher_min", "tdn_converged")} for r in rows],
        "counts": {g: {"n": sum(r["group"] == g for r in rows),
                       "bad": sum(r["group"] == g and r["bad"] for r in rows)}
                   for g in dict.fromkeys(r["group"] for r in rows)},
        "shipped": shipped_report, "candidates": results, "skipped_candidates": skipped,
        "cost": call_cost(model_name, uncertainty, dist is not None, shipped is not None)
        if cost else None,
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="registered model name or .safetensors file (default: tdn-catalysis)")
    p.add_argument("--uncertainty", default=None,
                   help="chemistry-novelty summary (JSON) of a model file without a registered "
                        "one (passed to TDNCalculator(model, uncertainty=...))")
    p.add_argument("--uncertainty-threshold", type=float, default=None,
                   help="of the shipped score; default: the registered one, else 1.0")
    p.add_argument("--starts", choices=tuple(START_SETS), default="old",
                   help="start set: old (tdn-catalysis's domain) or coverage2")
    p.add_argument("--data", nargs="+", default=None,
                   help="training data set folder(s) of the features (default: tdn-catalysis's, "
                        "else the card's data set under datasets/)")
    p.add_argument("--split-file", default=None,
                   help="split of --data (default: tdn-catalysis's, else the card's)")
    p.add_argument("--build-only", action="store_true",
                   help="build and check the starts, print the count per group; no model")
    p.add_argument("--labels-only", action="store_true", help="only build the cached labels")
    p.add_argument("--train-frames", type=int, default=1500,
                   help="training frames whose features the model-feature candidates use")
    p.add_argument("--out", type=Path, default=None,
                   help="report JSON (default: results/uncertainty_study.json for tdn-catalysis "
                        "on the old set, else results/uncertainty_study-MODEL-STARTS.json)")
    args = p.parse_args(argv)
    if args.build_only:
        starts = START_SETS[args.starts]()
        counts = check_starts(starts, NOVEL_GROUPS[args.starts])
        print(json.dumps({"n": len(starts), **counts}))
        return 0
    key = model_key(args.model)
    if args.labels_only:
        label_all(START_SETS[args.starts](), args.model, args.uncertainty,
                  cache_dir(key, args.starts))
        return 0
    report = study(args.train_frames, args.model, args.starts, args.uncertainty,
                   args.uncertainty_threshold, args.data, args.split_file)
    with atomic_write(args.out or default_out(key, args.starts), "w") as fh:
        fh.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
