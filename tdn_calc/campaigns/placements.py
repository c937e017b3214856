"""Slabs and adsorbate placements of a campaign. Lengths in Å.

* :func:`build_slab`: the surface of a :class:`~.spec.SurfaceSpec` from the surface library
  (:func:`tdn_calc.datagen.catalysis.surfaces.build_surface`) at its lattice constant;
* :func:`distinct_sites`: the symmetry-distinct sites of a (relaxed) slab from pymatgen's
  ``AdsorbateSiteFinder``, named with the site classifier's vocabulary
  (:mod:`tdn_calc.evaluation.sites`: ontop, bridge, fcc, hcp, hollow, ...) where it
  supports the facet, else pymatgen's ``ontop_0``, ``hollow_1`` ...;
* :func:`enumerate_placements`: one placement per distinct site plus ``random`` placements at
  random points, each with a random rotation about the normal, seeded per (surface,
  adsorbate) so that a rerun builds exactly the same structures.

A placement's structure is the slab followed by the adsorbate, binding (anchor) atom first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ..errors import InputError
from ..evaluation.sites import Site
from .spec import AdsorbateSpec, CampaignSpec, SurfaceSpec

SITE_PREFIX, RANDOM_PREFIX = "site-", "random-"


@dataclass
class Placement:
    """One start structure: ``key`` (``surface|adsorbate|placement``, unique in a campaign),
    ``placement`` (``site-fcc``, ``random-3``), ``start_site`` (the site under the anchor)
    and ``atoms`` (slab + adsorbate; the anchor at index ``n_slab``)."""

    key: str
    surface: str
    adsorbate: str
    placement: str
    start_site: str
    atoms: Atoms
    n_slab: int

    @property
    def adsorbate_indices(self) -> list[int]:
        return list(range(self.n_slab, len(self.atoms)))


def placement_key(surface: str, adsorbate: str, placement: str) -> str:
    """The unique key of a placement row."""
    return f"{surface}|{adsorbate}|{placement}"


def seed_for(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and ``names`` (stable across processes and runs)."""
    digest = hashlib.sha256("|".join(names).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def lattice_of(surface: SurfaceSpec, calc_for: Callable[[str], object]) -> tuple[float, ...]:
    """The lattice constants (``(a,)`` fcc, ``(a, c)`` hcp, Å) of ``surface``: as given,
    or fitted by E(V) scans with ``calc_for("model")`` / ``calc_for("teacher")``."""
    from ase.data import atomic_numbers, reference_states

    from ..datagen.catalysis.surfaces import fit_hcp_lattice
    from ..datagen.catalysis.systems import fit_lattice_constant

    hcp = surface.facet == "0001"
    value = surface.lattice_constant
    if isinstance(value, str):
        calc = calc_for(value)
        if hcp:
            return fit_hcp_lattice(surface.element, calc)
        return (fit_lattice_constant(surface.element, calc),)
    if hcp and len(value) == 1:
        ref = reference_states[atomic_numbers[surface.element]]
        return value[0], value[0] * float(ref.get("c/a", np.sqrt(8 / 3)))
    return value


def build_slab(surface: SurfaceSpec, lattice: tuple[float, ...]) -> Atoms:
    """The clean slab of ``surface`` (bottom ``fixed_layers`` fixed, pbc ``[T, T, F]``),
    with an alloy's top layer substituted."""
    from ..datagen.catalysis.surfaces import build_surface, substitute_top_layer

    size = (*surface.size, surface.layers)
    surf = build_surface(surface.element, surface.facet, size, lattice,
                         fixed_layers=surface.fixed_layers, vacuum=surface.vacuum)
    if surface.alloy:  # the host's lattice, its top layer substituted
        substitute_top_layer(surf, *surface.alloy)
    slab = surf.atoms
    slab.info.pop("adsorbate_info", None)
    return slab


def _classifier(slab: Atoms) -> Callable[[Atoms], str] | None:
    """``f(slab + adsorbate) -> site name`` of the anchor (index ``len(slab)``) by the
    geometric classifier, or None where it fails on this slab (stepped facets)."""
    from ..evaluation.sites import classify_site, metal_layers

    n = len(slab)
    mask = np.arange(n + 1) < n
    try:
        layers = metal_layers(slab + Atoms("H", positions=[[0, 0, 100.0]]), mask)

        def classify(atoms: Atoms) -> str:
            return classify_site(atoms[: n + 1], n, mask, layers)[0]

        classify(slab + Atoms("H", positions=[[*slab.positions[-1, :2], slab.positions[:, 2]
                                               .max() + 1.5]]))
    except (InputError, ValueError):
        return None
    return classify


def distinct_sites(slab: Atoms) -> list[Site]:
    """The symmetry-distinct adsorption sites of ``slab`` (pymatgen's ``AdsorbateSiteFinder``
    ``find_adsorption_sites``), named by the site classifier where it supports the facet
    (fcc(111): ontop, bridge, fcc, hcp), duplicates of one name numbered ``_1``, ``_2``."""
    from ..adsorption import find_sites

    found = find_sites(slab)
    classify = _classifier(slab)
    if classify is None:
        return found
    out: list[Site] = []
    top = slab.positions[:, 2].max()
    for site in found:
        probe = slab + Atoms("H", positions=[[site.xy[0], site.xy[1], top + 1.5]])
        name = classify(probe)
        taken = sum(1 for s in out if s.name == name or s.name.startswith(f"{name}_"))
        out.append(Site(f"{name}_{taken}" if taken else name, np.asarray(site.xy)))
    return out


def site_namer(slab: Atoms, sites: list[Site]) -> Callable[[Atoms], str]:
    """``f(slab + adsorbate) -> site`` of the anchor: the classifier's name, or on facets it
    does not support the nearest of ``sites``."""
    from ..evaluation.sites import nearest_site

    classify = _classifier(slab)
    if classify is not None:
        return classify
    n = len(slab)
    return lambda atoms: nearest_site(atoms.positions[n, :2], sites, slab.cell.array)


def _template(ads: AdsorbateSpec, spec: CampaignSpec) -> Atoms:
    from ..adsorption import build_adsorbate

    return build_adsorbate(spec.resolve(ads.file)) if ads.file else Atoms()


def place(slab: Atoms, ads: AdsorbateSpec, xy: np.ndarray, rng: np.random.Generator,
          template: Atoms) -> Atoms:
    """``slab`` + ``ads`` with its anchor over ``xy`` (Å), randomly turned about the normal:
    a library adsorbate by :func:`~tdn_calc.datagen.catalysis.adsorbates.place_adsorbate`,
    a user's ``template`` (anchor first, pointing up) ``ads.bond`` Å from the nearest metal
    atom."""
    from ..datagen.catalysis.adsorbates import anchor_height, place_adsorbate

    out = slab.copy()
    if not ads.file:
        place_adsorbate(out, len(slab), ads.name, xy, rng)
        return out
    mol = template.copy()
    mol.rotate(rng.uniform(0.0, 360.0), "z", center=(0, 0, 0))
    mol.translate([xy[0], xy[1], anchor_height(np.asarray(xy), slab, ads.bond)])
    out.extend(mol)
    return out


def enumerate_placements(spec: CampaignSpec, surface: SurfaceSpec, slab: Atoms,
                         sites: list[Site] | None = None) -> list[Placement]:
    """Every placement of every adsorbate of ``spec`` on the relaxed ``slab`` of
    ``surface``: the distinct ``sites`` (default :func:`distinct_sites`; with
    ``spec.sites``) then ``spec.random`` random points."""
    sites = distinct_sites(slab) if sites is None else sites
    name_of = site_namer(slab, sites)
    ab = slab.cell.array[:2, :2]
    out = []
    for ads in spec.adsorbates:
        rng = seed_for(spec.seed, surface.label, ads.name)
        template = _template(ads, spec)
        starts = [(f"{SITE_PREFIX}{s.name}", s.xy) for s in sites] if spec.sites else []
        starts += [(f"{RANDOM_PREFIX}{k}", rng.uniform(0, 1, 2) @ ab)
                   for k in range(spec.random)]
        for pid, xy in starts:
            atoms = place(slab, ads, np.asarray(xy, dtype=float), rng, template)
            out.append(Placement(placement_key(surface.label, ads.name, pid), surface.label,
                                 ads.name, pid, name_of(atoms), atoms, len(slab)))
    return out


def adsorbate_atoms(spec: CampaignSpec, ads: AdsorbateSpec) -> Atoms:
    """The adsorbate's atoms alone (for its gas-phase reference terms)."""
    from ..datagen.catalysis.adsorbates import get_adsorbate

    return _template(ads, spec) if ads.file else get_adsorbate(ads.name).template()
