"""The ``coverage2`` recipe of the catalysis builder: ten metals, five facets, bimetallic
top layers, laterally strained slabs, 25 adsorbates (one or two per cell), bulk and
gas-phase references, in an order that spans metals, facets and adsorbate families evenly
from its very start.

Labels (all distinct from the first recipe's ``Pt111/CO/fcc/r0``, ``bulk/Pt/...``,
``gas/CO/r0``; the trailing ``/rN`` is the round, so splits by system work):

- ``Ru0001-3x3x4f2/NNH/hcp/r0``: metal, facet, repeats x layers, ``fK`` = K bottom layers
  fixed (``f0``: all free), adsorbate, site; ``/clean/`` for a bare slab;
- ``Pt111-3x3x5f2/CO+H/top+fcc/r1``: two adsorbates (co-adsorption);
- ``Pt111-2x2x4f2-Ni25/O/fcc/r0``: top layer 25 % Ni (ordered p(2x2), "A3B"), ``-Ni50``
  half (rows, "AB"), ``-Ni1`` a single Ni atom (3x3 cell); site ``dopant`` = over it;
- ``Pt111-3x3x4f2-s-1.5/CO/fcc/r0``: the close-packed facet built at the teacher's lattice
  constant(s) scaled by 1 - 1.5 % (``-s+2``: +2 %), clean (``/clean/``) or with one
  adsorbate;
- ``bulk/Ru-hcp/strain+2%/r0``, ``molecule/OOH/r0``.

A round (``replicas``) holds one system per metal × facet × adsorbate (the site and slab
thickness turn with the round), a clean slab and co-adsorbed pairs per surface, three alloys
per metal, strained slabs per metal (:func:`_strained_round`), strained bulk per metal and
every gas species. The build order (:func:`interleave`) draws from strata (metal, facet,
family) in turn, each time from the stratum whose metal, facet and family have been drawn
least, so any prefix of the order is a balanced sample; a stratum gives its round-0 systems
before later rounds. The strained slabs came after the first data set
(``datasets/catalysis2-sevennet0``) was started: they only add labels, and the order of the
other systems among themselves is the one without them, so that set resumes where it stopped
with the strained slabs mixed in.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.geometry import get_distances

from ...errors import ConfigError, InputError
from .adsorbates import ADSORBATE_NAMES, GAS_SPECIES, get_adsorbate, oriented, place_adsorbate
from .surfaces import (
    ALLOYS,
    LAYERS,
    METALS,
    SITES,
    STRUCTURE,
    SURFACE_CELL,
    build_bulk_cell,
    build_surface,
    load_lattices,
    substitute_top_layer,
    surface_facets,
)
from .systems import system_rng

RECIPES = ("coverage2", "quarter")
#: the ``quarter`` recipe's cell: 2x2 surface atoms, so one adsorbate is a quarter monolayer
QUARTER_CELL = (2, 2)
#: its facets, those of a metal's that :func:`surface_facets` lists
QUARTER_FACETS = ("111", "0001", "100")
COADSORBED = ("CO+O", "H+O", "H+OH", "CO+H", "H+H", "O+O", "CO+CO", "OH+H2O", "N+H",
              "NH2+H", "CH3+H", "NO+O", "N+N", "C+O", "CHO+H", "COOH+H", "OOH+H", "NNH+H")
_LAYER_WEIGHT = {3: 1.0, 4: 3.0, 5: 2.0, 6: 1.0, 7: 1.0}
# adsorbates of the strained slabs (the atoms and small fragments whose binding follows
# the d-band shift of strain most directly), taken in turn over rounds and strains
STRAINED_ADSORBATES = ("H", "O", "OH", "CO", "N", "C", "CH3", "NH2")
# families of strata added after the first data set: kept out of the others' order
_LATER_FAMILIES = ("strained",)


@dataclass(frozen=True)
class CoverageSpec:
    """One system of the recipe; ``kind`` is "slab", "bulk" or "gas"."""

    label: str
    kind: str
    metal: str = ""
    facet: str = ""
    size: tuple[int, int, int] = (0, 0, 0)
    fixed_layers: int = 0
    dopant: str = ""
    alloy: str = ""
    adsorbate: str = ""  # "CO" or "CO+H"
    site: str = ""  # "top" or "top+fcc"
    strain: float = 0.0  # bulk: of the cell; slab (family "strained"): of the lattice
    replica: int = 0
    family: str = ""
    spin: int = 0


@dataclass(frozen=True)
class CoverageConfig:
    """The recipe and its relaxation settings (the build fields of CatalysisConfig)."""

    recipe: str = "coverage2"
    metals: tuple[str, ...] = METALS
    adsorbates: tuple[str, ...] = ADSORBATE_NAMES
    gas_molecules: tuple[str, ...] = GAS_SPECIES
    bulk_strains: tuple[float, ...] = (-0.04, -0.02, 0.0, 0.02, 0.04)
    # lateral strains of the close-packed slabs (ASE's experimental lattice constants are
    # 0.9-2.2 % below SevenNet-0's for Au Ag Pd Pt Rh Ru Ir); () for none
    slab_strains: tuple[float, ...] = (-0.03, -0.015, 0.02)
    strained_adsorbates: int = 3  # per strained slab and round, besides the clean one
    replicas: int = 3  # rounds
    seed: int = 0
    coadsorbed_per_surface: int = 2
    free_fraction: float = 0.15  # share of slabs with no fixed layer
    vacuum: float = 10.0
    gas_box: float = 12.0
    perturb: float = 0.05
    lateral_jitter: float = 0.15
    max_tilt: float = 10.0
    shear: float = 0.005
    optimizer: str = "BFGS"
    fmax: float = 0.05
    max_steps: int = 60
    subsample: int = 1
    n_rattle: int = 3
    rattle_sigma: tuple[float, float] = (0.05, 0.15)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}; have {', '.join(RECIPES)}")
        for name, values, allowed in (("metals", self.metals, METALS),
                                      ("adsorbates", self.adsorbates, ADSORBATE_NAMES),
                                      ("gas_molecules", self.gas_molecules, GAS_SPECIES)):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"unknown {name} {bad}; allowed: {', '.join(allowed)}")
        if self.replicas < 1 or self.max_steps < 0 or self.n_rattle < 0 or self.fmax <= 0:
            raise ConfigError("need replicas >= 1, max_steps >= 0, n_rattle >= 0, fmax > 0")
        tags = [_strain_tag(x) for x in self.slab_strains]
        if len(set(tags)) != len(tags) or any(not -0.2 < x < 0.2 for x in self.slab_strains):
            raise ConfigError(f"slab_strains must be distinct (as {', '.join(tags)}) and "
                              f"within ±20 %; got {self.slab_strains}")
        if self.strained_adsorbates < 0:
            raise ConfigError(f"strained_adsorbates must be >= 0; got "
                              f"{self.strained_adsorbates}")

    # the recipe interface of catalysis_build.build_catalysis
    @property
    def source(self) -> str:
        if self.recipe == "quarter":
            return ("tdn-calc catalysis builder, recipe quarter: p(2x2) cells of the "
                    "close-packed facets and (100) of 10 metals, 25 adsorbates, clean slabs")
        return ("tdn-calc catalysis builder, recipe coverage2: 10 metals, 5 facets, alloys, "
                "strained slabs, 25 adsorbates, bulk, gas")

    def enumerate(self) -> list[CoverageSpec]:
        return interleave(enumerate_coverage(self), self.seed)

    def build(self, spec: CoverageSpec, lattice: dict) -> Atoms:
        return build_coverage_system(spec, lattice, self)

    def spin(self, spec: CoverageSpec) -> int:
        return spec.spin

    def lattice_constants(self, path, teacher: str, calc_factory) -> dict:
        return load_lattices(path, teacher, self.metals, calc_factory)


# ---------------------------------------------------------------- enumeration
def _slab_tag(metal: str, facet: str, size, fixed: int, dopant: str = "", share: int = 0,
              strain: float | None = None) -> str:
    tag = f"{metal}{facet}-{size[0]}x{size[1]}x{size[2]}f{fixed}"
    tag += f"-{dopant}{share}" if dopant else ""
    return tag + (f"-{_strain_tag(strain)}" if strain is not None else "")


def _strain_tag(strain: float) -> str:
    """``-0.015`` -> ``"s-1.5"``, ``0.02`` -> ``"s+2"`` (percent, sign always given)."""
    return f"s{round(strain * 100, 4):+g}"


def _geometry(rng: np.random.Generator, facet: str, free_fraction: float,
              cell: tuple[int, int] | None = None) -> tuple[tuple[int, int, int], int]:
    layers = LAYERS[facet]
    w = np.array([_LAYER_WEIGHT[n] for n in layers])
    nz = int(rng.choice(layers, p=w / w.sum()))
    fixed = 0 if rng.random() < free_fraction else nz // 2
    return (*(cell or SURFACE_CELL[facet]), nz), fixed


def enumerate_coverage(config: CoverageConfig) -> list[CoverageSpec]:
    """All systems of the recipe, round by round, in a plain (not interleaved) order."""
    if config.recipe == "quarter":
        return _enumerate_quarter(config)
    specs: list[CoverageSpec] = []
    for r in range(config.replicas):
        for mi, metal in enumerate(config.metals):
            for fi, facet in enumerate(surface_facets(metal)):
                specs += _surface_round(config, r, metal, facet, mi + fi)
            specs += _alloy_round(config, r, metal, mi)
            specs += _strained_round(config, r, metal, mi)
            for strain in config.bulk_strains:
                specs.append(CoverageSpec(
                    f"bulk/{metal}-{STRUCTURE[metal]}/strain{strain * 100:+.0f}%/r{r}", "bulk",
                    metal, strain=strain, replica=r, family="bulk"))
        for gas in config.gas_molecules:
            specs.append(CoverageSpec(f"molecule/{gas}/r{r}", "gas", adsorbate=gas, replica=r,
                                      family="gas", spin=get_adsorbate(gas).spin))
    return specs


def _enumerate_quarter(config: CoverageConfig) -> list[CoverageSpec]:
    """The ``quarter`` recipe: each metal's close-packed facet ((111) or (0001)) and, for the
    fcc metals, (100), in cells of :data:`QUARTER_CELL` surface atoms, clean and with each
    adsorbate alone: a quarter monolayer, p(2x2), the textbook coverage that coverage2's 3x3
    cells (a ninth of a monolayer) leave out. Sites, layers and fixed layers turn as in
    coverage2's rounds; no co-adsorption (half a monolayer), alloys, strain, bulk or gas
    (coverage2 has those)."""
    specs: list[CoverageSpec] = []
    for r in range(config.replicas):
        for mi, metal in enumerate(config.metals):
            facets = [f for f in surface_facets(metal) if f in QUARTER_FACETS]
            for fi, facet in enumerate(facets):
                specs += _quarter_round(config, r, metal, facet, mi + fi)
    return specs


def _quarter_round(config: CoverageConfig, r: int, metal: str, facet: str, shift: int
                   ) -> list[CoverageSpec]:
    """One slab of ``metal``'s ``facet`` in a :data:`QUARTER_CELL` cell for round ``r``
    (layers and fixed layers drawn once, so each adsorbate system has its clean slab), clean
    and with each adsorbate; sites turn as in :func:`_surface_round`."""
    rng = system_rng(config.seed, f"{metal}{facet}-quarter/r{r}")
    size, fixed = _geometry(rng, facet, config.free_fraction, QUARTER_CELL)
    tag = _slab_tag(metal, facet, size, fixed)
    common = dict(metal=metal, facet=facet, size=size, fixed_layers=fixed, replica=r)
    out = [CoverageSpec(f"{tag}/clean/r{r}", "slab", family="clean", **common)]
    cycle = (*SITES[facet], "random")
    for k, ads in enumerate(config.adsorbates, start=1):
        site = cycle[(r + k + shift) % len(cycle)]
        out.append(CoverageSpec(f"{tag}/{ads}/{site}/r{r}", "slab", adsorbate=ads, site=site,
                                family=get_adsorbate(ads).family, **common))
    return out


def _surface_round(config: CoverageConfig, r: int, metal: str, facet: str, shift: int
                   ) -> list[CoverageSpec]:
    sites = SITES[facet]
    out = []
    for k, ads in enumerate(("clean", *config.adsorbates)):
        rng = system_rng(config.seed, f"{metal}{facet}/{ads}/r{r}")
        size, fixed = _geometry(rng, facet, config.free_fraction)
        tag = _slab_tag(metal, facet, size, fixed)
        if ads == "clean":
            out.append(CoverageSpec(f"{tag}/clean/r{r}", "slab", metal, facet, size, fixed,
                                    replica=r, family="clean"))
            continue
        cycle = (*sites, "random")
        site = cycle[(r + k + shift) % len(cycle)]
        out.append(CoverageSpec(f"{tag}/{ads}/{site}/r{r}", "slab", metal, facet, size, fixed,
                                adsorbate=ads, site=site, replica=r,
                                family=get_adsorbate(ads).family))
    pairs = [p for p in COADSORBED if all(a in config.adsorbates for a in p.split("+"))]
    for j in range(config.coadsorbed_per_surface if pairs else 0):
        pair = pairs[(shift * 7 + r * config.coadsorbed_per_surface + j) % len(pairs)]
        rng = system_rng(config.seed, f"{metal}{facet}/{pair}/{j}/r{r}")
        size, fixed = _geometry(rng, facet, config.free_fraction)
        site = "+".join(str(rng.choice(sites)) for _ in range(2))
        out.append(CoverageSpec(f"{_slab_tag(metal, facet, size, fixed)}/{pair}/{site}/r{r}",
                                "slab", metal, facet, size, fixed, adsorbate=pair, site=site,
                                replica=r, family="coads"))
    return out


def _alloy_round(config: CoverageConfig, r: int, metal: str, mi: int) -> list[CoverageSpec]:
    """Three bimetallic surfaces of host ``metal`` (A3B, AB, single atom), dopants turning
    over the other metals with the round; each clean and with one adsorbate."""
    others = [m for m in config.metals if m != metal]
    facet = surface_facets(metal)[0]  # (111) or (0001)
    out = []
    for t, (alloy, share) in enumerate(ALLOYS.items()):
        if not others:
            break
        dopant = others[(mi + 3 * r + t) % len(others)]
        rng = system_rng(config.seed, f"{metal}{facet}-{dopant}{share}/r{r}")
        size, fixed = _geometry(rng, facet, config.free_fraction,
                                (3, 3) if alloy == "SA" else (2, 2))
        tag = _slab_tag(metal, facet, size, fixed, dopant, share)
        ads = config.adsorbates[(mi + 5 * r + 11 * t) % len(config.adsorbates)]
        site = str(rng.choice(("dopant", *SITES[facet])))
        common = dict(metal=metal, facet=facet, size=size, fixed_layers=fixed, dopant=dopant,
                      alloy=alloy, replica=r, family="alloy")
        out.append(CoverageSpec(f"{tag}/clean/r{r}", "slab", **common))
        out.append(CoverageSpec(f"{tag}/{ads}/{site}/r{r}", "slab", adsorbate=ads, site=site,
                                **common))
    return out


def _strained_round(config: CoverageConfig, r: int, metal: str, mi: int
                    ) -> list[CoverageSpec]:
    """Laterally strained slabs of ``metal``'s close-packed facet ((111) or (0001)), one
    per strain of ``config.slab_strains``: the slab at the teacher's lattice constants
    scaled by ``1 + strain`` (isotropically, a and for hcp c, so the layer spacing too: as
    in a slab built with ASE's default, experimental lattice constants; the relaxation
    moves the free atoms, the cell and the fixed bottom layers stay), clean and with
    ``config.strained_adsorbates`` adsorbates of :data:`STRAINED_ADSORBATES` (those in
    ``config.adsorbates``), which turn over with the metal, strain and round; their sites
    turn over the facet's sites and "random" like :func:`_surface_round`'s. The systems of
    one strain and round share the slab (size and fixed layers), so each adsorbate system
    has its clean reference."""
    facet = surface_facets(metal)[0]  # (111) or (0001), as _alloy_round's
    pool = [a for a in STRAINED_ADSORBATES if a in config.adsorbates]
    n = min(config.strained_adsorbates, len(pool))
    cycle = (*SITES[facet], "random")
    out = []
    for si, strain in enumerate(config.slab_strains):
        stag = _strain_tag(strain)
        rng = system_rng(config.seed, f"{metal}{facet}-{stag}/r{r}")
        size, fixed = _geometry(rng, facet, config.free_fraction)
        tag = _slab_tag(metal, facet, size, fixed, strain=strain)
        common = dict(metal=metal, facet=facet, size=size, fixed_layers=fixed, strain=strain,
                      replica=r, family="strained")
        out.append(CoverageSpec(f"{tag}/clean/r{r}", "slab", **common))
        for j in range(n):
            ads = pool[(mi + (r * len(config.slab_strains) + si) * n + j) % len(pool)]
            site = cycle[(mi + r + si + j) % len(cycle)]
            out.append(CoverageSpec(f"{tag}/{ads}/{site}/r{r}", "slab", adsorbate=ads,
                                    site=site, **common))
    return out


def stratum(spec: CoverageSpec) -> tuple[str, str, str]:
    """(metal, facet, family) of a system: the unit of the interleaved order. Strained
    slabs are a stratum per metal and strain, facet ``"111-s-1.5"``, family ``"strained"``
    (as large as the adsorbate families' strata, so they are spread as evenly)."""
    if spec.kind == "gas":  # one stratum per species: the cheap references come early
        return "gas", "gas", f"gas-{spec.adsorbate}"
    if spec.kind == "bulk":
        return spec.metal, "bulk", "bulk"
    if spec.family == "strained":
        return spec.metal, f"{spec.facet}-{_strain_tag(spec.strain)}", "strained"
    return spec.metal, "alloy" if spec.alloy else spec.facet, spec.family


def interleave(specs: list[CoverageSpec], seed: int) -> list[CoverageSpec]:
    """Deterministic balanced order: repeatedly take the next system of the stratum with
    the fewest draws, ties broken by the fewest draws of its metal + facet + family, then
    by a seeded random key. Within a stratum, rounds in order; within a round the
    adsorbates of a family start at a different one in each stratum.

    Strata of the families added later (:data:`_LATER_FAMILIES`: the strained slabs) take
    their turns like the others, but their shuffles and random keys come from a generator
    of their own and their draws do not count in the others' margins, so the other
    systems keep, among themselves, the order they had without them."""
    queues: dict[tuple, list[CoverageSpec]] = defaultdict(list)
    for s in specs:
        queues[stratum(s)].append(s)
    main = sorted(k for k in queues if k[2] not in _LATER_FAMILIES)
    keys = main + sorted(k for k in queues if k[2] in _LATER_FAMILIES)
    later = np.arange(len(keys)) >= len(main)
    rng, rng_later = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 3])
    shift = rng.integers(0, 1 << 16)
    names = {f: sorted({s.adsorbate for k in keys if k[2] == f for s in queues[k]})
             for f in {k[2] for k in keys}}
    for j, k in enumerate(keys):  # adsorbates turn over the strata of a family
        g = rng_later if later[j] else rng
        q = [queues[k][i] for i in g.permutation(len(queues[k]))]
        fam = names[k[2]]
        queues[k] = sorted(q, key=lambda s, j=j, fam=fam: (
            s.replica, (fam.index(s.adsorbate) - j - shift) % len(fam)))
    tie = np.r_[rng.random(len(main)), rng_later.random(len(keys) - len(main))]
    axes = [np.unique([k[d] for k in keys], return_inverse=True)[1] for d in range(3)]
    drawn = [np.zeros(ax.max() + 1) for ax in axes]
    taken = np.zeros(len(keys), dtype=int)
    left = np.array([len(queues[k]) for k in keys])
    out: list[CoverageSpec] = []
    while left.any():
        marg = sum(drawn[d][axes[d]] for d in range(3))
        i = int(np.argmin(np.where(left > 0, taken * 1e6 + marg + tie, np.inf)))
        out.append(queues[keys[i]][taken[i]])
        taken[i] += 1
        left[i] -= 1
        if not later[i]:
            for d in range(3):
                drawn[d][axes[d][i]] += 1
    return out


# ---------------------------------------------------------------- structures
def build_coverage_system(spec: CoverageSpec, lattice: dict, config: CoverageConfig) -> Atoms:
    """Start geometry of ``spec``; ``lattice`` maps metal → (a,) or (a, c)."""
    rng = system_rng(config.seed, spec.label)
    if spec.kind == "gas":
        mol = oriented(spec.adsorbate, rng, 180.0)
        mol.rotate(rng.uniform(0.0, 180.0), "x", center=(0, 0, 0))
        mol.positions += rng.normal(0.0, config.perturb, mol.positions.shape)
        mol.cell = np.eye(3) * config.gas_box
        mol.center()
        mol.pbc = False
        return mol
    if spec.metal not in lattice:
        raise InputError(f"no lattice constants for {spec.metal!r}; have {sorted(lattice)}")
    if spec.kind == "bulk":
        atoms = build_bulk_cell(spec.metal, lattice[spec.metal])
        eps = rng.normal(0.0, config.shear, (3, 3))
        deform = (1.0 + spec.strain) * np.eye(3) + (eps + eps.T) / 2
        atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
        atoms.positions += rng.normal(0.0, config.perturb, atoms.positions.shape)
        return atoms
    return _build_slab(spec, lattice, config, rng)


def _build_slab(spec: CoverageSpec, lattice: dict, config: CoverageConfig,
                rng: np.random.Generator) -> Atoms:
    # a strained slab: every lattice constant (a; c too for hcp) times 1 + strain
    constants = tuple(x * (1.0 + spec.strain) for x in lattice[spec.metal])
    surf = build_surface(spec.metal, spec.facet, spec.size, constants,
                         fixed_layers=spec.fixed_layers, vacuum=config.vacuum)
    slab = surf.atoms
    if spec.alloy:  # 2x2 cell: 1 of 4 = ordered p(2x2); 2 of 4 (one row) = AB rows
        first = substitute_top_layer(surf, spec.dopant, spec.alloy)
        surf.sites["dopant"] = slab.positions[first, :2]
    n_metal = len(slab)
    fixed = slab.constraints[0].get_indices()
    slab.set_constraint()
    if spec.adsorbate:
        placed: list[Atoms] = []
        for ads, site in zip(spec.adsorbate.split("+"), spec.site.split("+"), strict=True):
            xy = _site_xy(surf, site, rng, config)
            if placed:  # the equivalent site farthest from the first adsorbate
                xy = _farthest(xy, surf.top_xy, placed[0].positions[0, :2], slab.cell)
            placed.append(place_adsorbate(slab, n_metal, ads, xy, rng,
                                          max_tilt=config.max_tilt))
        slab.center(vacuum=config.vacuum, axis=2)
    free = np.setdiff1d(np.arange(len(slab)), fixed)
    slab.positions[free] += rng.normal(0.0, config.perturb, (len(free), 3))
    slab.set_constraint(FixAtoms(indices=fixed))
    return slab


def _site_xy(surf, site: str, rng: np.random.Generator, config: CoverageConfig) -> np.ndarray:
    if site == "random":
        frac = rng.random(2)
        return frac @ surf.atoms.cell.array[:2, :2]
    jitter = rng.uniform(-1, 1, 2) * config.lateral_jitter
    return surf.sites[site] + jitter


def _farthest(xy: np.ndarray, top_xy: np.ndarray, other: np.ndarray, cell) -> np.ndarray:
    """Of the images ``xy + (t - t0)`` over top atoms ``t``, the one farthest (periodic)
    from ``other``."""
    cands = xy + (top_xy - top_xy[0])
    p = np.c_[cands, np.zeros(len(cands))]
    _, d = get_distances(p, [[*other, 0.0]], cell=cell, pbc=[1, 1, 0])
    return cands[int(np.argmax(d[:, 0]))]


def coverage_counts(specs: list[CoverageSpec]) -> dict[str, Counter]:
    """Systems per metal, facet (alloys, strained slabs per strain, bulk, gas apart), family
    and adsorbate (slabs), and strained slabs per strain (``"s-1.5"``)."""
    st = [stratum(s) for s in specs]
    return {"metal": Counter(k[0] for k in st), "facet": Counter(k[1] for k in st),
            "family": Counter(k[2] for k in st),
            "adsorbate": Counter(a for s in specs if s.kind == "slab"
                                 for a in (s.adsorbate or "clean").split("+")),
            "slab_strain": Counter(_strain_tag(s.strain) for s in specs
                                   if s.family == "strained")}

