"""Adsorption sites of a slab and the site an adsorbate sits on: one classifier, one
vocabulary.

Vocabulary (ASE's ``add_adsorbate`` names, so a structure built with ASE at a named site
reads back with that name):

=============== ==================================================================
``ontop``       above one top-layer atom
``bridge``      between two bonded top-layer atoms (one kind of bridge)
``shortbridge`` the shorter of two kinds of bridge, e.g. along the rows of fcc(110)
``longbridge``  the longer one, across the rows of fcc(110)
``fcc``         three-fold hollow with no atom of the second layer below
``hcp``         three-fold hollow above an atom of the second layer
``hollow``      four-fold hollow, fcc(100), bcc(100), fcc(110)
``desorbed``    the anchor atom is more than :data:`DESORBED_HEIGHT` above the top layer
=============== ==================================================================

Supported facets (tested): fcc(111), hcp(0001), fcc(100), bcc(100), fcc(110). Sites come
from the geometry of the (relaxed) top metal layer, not from how the slab was built: its
periodic Delaunay triangulation in the surface plane gives the top atoms (``ontop``), the
edges (bridges) and the faces (hollows); faces with one common circumcentre (a square or
rectangle split in two triangles) merge into one four-fold ``hollow``. Edges fall into two
kinds when some are longer than :data:`LONG_BRIDGE_RATIO` x the shortest (``shortbridge`` /
``longbridge``), else all are ``bridge``. Not supported: stepped facets such as fcc(211)
(the top layer is a set of rows) and bcc(110), whose pseudo three-fold site ASE calls
``hollow`` while this classifier reads ``fcc``. The surface normal is Cartesian z, as for
ASE's slab builders; heights are along :func:`tdn_calc.slab.surface_heights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ..errors import InputError
from ..slab import layer_indices, surface_heights

ONTOP, BRIDGE, SHORT_BRIDGE, LONG_BRIDGE = "ontop", "bridge", "shortbridge", "longbridge"
FCC, HCP, HOLLOW, DESORBED = "fcc", "hcp", "hollow", "desorbed"
#: every name :func:`classify_site` can return
SITE_NAMES = (ONTOP, BRIDGE, SHORT_BRIDGE, LONG_BRIDGE, FCC, HCP, HOLLOW, DESORBED)
#: other spellings accepted by :func:`canonical_site` (``top``: the catalysis data set's)
SITE_ALIASES = {"top": ONTOP, "on-top": ONTOP, "hollow-fcc": FCC, "hollow-hcp": HCP,
                "fcc-hollow": FCC, "hcp-hollow": HCP, "short-bridge": SHORT_BRIDGE,
                "long-bridge": LONG_BRIDGE, "four-fold": HOLLOW}
DESORBED_HEIGHT = 4.0  # Å above the mean top layer: the anchor counts as desorbed
LONG_BRIDGE_RATIO = 1.2  # edges longer than this x the shortest are long bridges
MERGE_FRACTION = 0.25  # x nearest-neighbour distance: faces with closer circumcentres merge
LAYER_TOLERANCE = 0.5  # Å, atoms closer than this in height share a layer


def canonical_site(name: str) -> str:
    """The vocabulary's name for ``name`` (``"top"`` -> ``"ontop"``); raises ``InputError``
    for a name that is neither in :data:`SITE_NAMES` nor in :data:`SITE_ALIASES`."""
    key = name.strip().lower()
    key = SITE_ALIASES.get(key, key)
    if key not in SITE_NAMES:
        raise InputError(f"unknown site name {name!r}; use one of {', '.join(SITE_NAMES)} "
                         f"(aliases: {', '.join(SITE_ALIASES)})")
    return key


@dataclass
class Site:
    """An adsorption site: ``name`` (see the module vocabulary; ``tdn adsorb`` may add a
    ``_k`` suffix for pymatgen's sites) and Cartesian ``xy`` ``(2,)`` Å in the surface
    plane."""

    name: str
    xy: np.ndarray


def lateral_distances(xy: np.ndarray, points: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """``(k,)`` minimum-image distances (Å) in the surface plane from ``xy`` ``(2,)`` to
    ``points`` ``(k, 2)``; ``cell`` ``(3, 3)`` rows are lattice vectors (a, b in-plane)."""
    ab = np.array([cell[0, :2], cell[1, :2]]).T
    frac = np.linalg.solve(ab, (np.asarray(points) - xy).T)
    frac -= np.round(frac)
    return np.linalg.norm(ab @ frac, axis=0)


def metal_layers(atoms: Atoms, metal_mask: np.ndarray) -> np.ndarray:
    """``(n_metal,)`` layer number (0 = lowest) of each metal atom (``metal_mask``
    ``(n_atoms,)`` bool), along :func:`tdn_calc.slab.surface_heights`."""
    heights = surface_heights(atoms)[np.flatnonzero(metal_mask)]
    return layer_indices(heights, LAYER_TOLERANCE)


def _wrap(xy: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """``xy`` ``(k, 2)`` wrapped into the in-plane cell spanned by the columns of ``ab``."""
    frac = np.linalg.solve(ab, np.atleast_2d(xy).T)
    return (ab @ (frac - np.floor(frac))).T


def _circumcentre(p: np.ndarray) -> np.ndarray | None:
    """Circumcentre ``(2,)`` of the triangle ``p`` ``(3, 2)``; None when it is flat."""
    a, b, c = p
    d = 2.0 * (a[0] * (b[1] - c[1]) + b[0] * (c[1] - a[1]) + c[0] * (a[1] - b[1]))
    if abs(d) < 1e-9 * float(np.abs(p).max() + 1.0) ** 2:
        return None
    sq = (p**2).sum(axis=1)
    ux = sq[0] * (b[1] - c[1]) + sq[1] * (c[1] - a[1]) + sq[2] * (a[1] - b[1])
    uy = sq[0] * (c[0] - b[0]) + sq[1] * (a[0] - c[0]) + sq[2] * (b[0] - a[0])
    return np.array([ux, uy]) / d


def _faces(points: np.ndarray, nn: float) -> list[tuple[set[int], np.ndarray]]:
    """Delaunay faces of ``points`` ``(k, 2)``: ``(vertex indices, circumcentre)``, triangles
    with circumcentres within ``MERGE_FRACTION * nn`` merged into one face, flat ones (on the
    hull of the images) left out."""
    from scipy.spatial import Delaunay

    tri = Delaunay(points)
    faces: list[tuple[set[int], np.ndarray]] = []
    for simplex in tri.simplices:
        centre = _circumcentre(points[simplex])
        if centre is None:
            continue
        for vertices, other in faces:
            if np.linalg.norm(other - centre) < MERGE_FRACTION * nn:
                vertices.update(simplex.tolist())
                break
        else:
            faces.append((set(simplex.tolist()), centre))
    return faces


def surface_sites(atoms: Atoms, metal_mask: np.ndarray,
                  layers: np.ndarray | None = None) -> list[Site]:
    """The adsorption sites over the in-plane cell of a slab, from its top two metal layers.

    Args:
        atoms: the slab (with or without adsorbate), ``pbc`` in-plane, normal along z.
        metal_mask: ``(n_atoms,)`` bool, the surface atoms (metal) of ``atoms``.
        layers: ``(n_metal,)`` layer of each metal atom (default :func:`metal_layers` of
            ``atoms``); pass the start structure's so that a strongly distorted minimum keeps
            its atoms in their layers.

    Returns:
        One :class:`Site` per symmetry copy in the cell (e.g. fcc(111) 3x3: 9 ``ontop``,
        27 ``bridge``, 9 ``fcc``, 9 ``hcp``), ``xy`` wrapped into the cell.
    """
    sites, inside, _ = _sites(atoms, metal_mask, layers)
    return [s for s, keep in zip(sites, inside, strict=True) if keep]


def _sites(atoms: Atoms, metal_mask: np.ndarray,
           layers: np.ndarray | None) -> tuple[list[Site], np.ndarray, np.ndarray]:
    """Sites over the 5x5 periodic images around the cell, ``(n_sites,)`` bool: the site
    lies in the cell, and the in-plane cell matrix ``(2, 2)`` (columns a, b)."""
    idx = np.flatnonzero(metal_mask)
    layers = metal_layers(atoms, metal_mask) if layers is None else np.asarray(layers)
    if layers.size == 0 or layers.max() < 1:
        n = 0 if layers.size == 0 else int(layers.max()) + 1
        raise InputError(f"need two metal layers to classify sites; got {n}")
    cell = atoms.cell.array
    ab = np.array([cell[0, :2], cell[1, :2]]).T
    top = _wrap(atoms.positions[idx[layers == layers.max()], :2], ab)
    second = atoms.positions[idx[layers == layers.max() - 1], :2]
    shifts = [i * ab[:, 0] + j * ab[:, 1] for i in range(-2, 3) for j in range(-2, 3)]
    images = np.concatenate([top + s for s in shifts])
    dist = np.linalg.norm(top[:, None] - images[None], axis=-1)
    nn = float(dist[dist > 1e-6].min())
    faces = _faces(images, nn)
    edges: dict[tuple[int, int], float] = {}
    for vertices, centre in faces:
        ring = sorted(vertices, key=lambda k: np.arctan2(*(images[k] - centre)[::-1]))
        for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
            edges[(min(a, b), max(a, b))] = float(np.linalg.norm(images[a] - images[b]))
    # the kinds of bridge are read off the edges in the cell (far images border the hull)
    lengths = np.array([d for (a, b), d in edges.items()
                        if _in_cell((images[a] + images[b]) / 2, ab)])
    two_kinds = bool(lengths.size) and lengths.max() > LONG_BRIDGE_RATIO * lengths.min()

    sites = [Site(ONTOP, xy) for xy in images]
    for (a, b), length in edges.items():
        name = BRIDGE
        if two_kinds:
            name = LONG_BRIDGE if length > LONG_BRIDGE_RATIO * lengths.min() else SHORT_BRIDGE
        sites.append(Site(name, (images[a] + images[b]) / 2))
    for vertices, _ in faces:
        xy = images[sorted(vertices)].mean(axis=0)
        name = HOLLOW
        if len(vertices) == 3:
            below = lateral_distances(xy, second, cell).min() < nn / (2 * np.sqrt(3))
            name = HCP if below else FCC
        sites.append(Site(name, xy))
    return sites, _in_cell(np.array([s.xy for s in sites]), ab), ab


def _in_cell(xy: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """``(k,)`` bool (or a bool for one point): ``xy`` ``(k, 2)`` lies in the in-plane cell
    spanned by the columns of ``ab``."""
    frac = np.linalg.solve(ab, np.asarray(xy).T)
    return np.all((frac >= -1e-9) & (frac < 1 - 1e-9), axis=0)


def classify_site(atoms: Atoms, anchor: int, metal_mask: np.ndarray,
                  layers: np.ndarray | None = None) -> tuple[str, float]:
    """The site of atom ``anchor`` (the adsorbate's binding atom) on a slab.

    Args:
        atoms: slab + adsorbate, ``pbc`` in-plane, normal along z.
        anchor: index of the binding atom in ``atoms``.
        metal_mask: ``(n_atoms,)`` bool, the slab's surface atoms.
        layers: as in :func:`surface_sites`.

    Returns:
        ``(site, height)``: the nearest site of :func:`surface_sites` in the surface plane
        (minimum image), or ``"desorbed"`` above :data:`DESORBED_HEIGHT`; the height (Å) of
        the anchor over the mean top metal layer.
    """
    heights = surface_heights(atoms)
    idx = np.flatnonzero(metal_mask)
    layers = metal_layers(atoms, metal_mask) if layers is None else np.asarray(layers)
    height = float(heights[anchor] - heights[idx[layers == layers.max()]].mean())
    if height > DESORBED_HEIGHT:
        return DESORBED, height
    sites, _, ab = _sites(atoms, metal_mask, layers)
    xy = _wrap(atoms.positions[anchor, :2], ab)[0]
    d = np.linalg.norm(np.array([s.xy for s in sites]) - xy, axis=1)
    return sites[int(np.argmin(d))].name, height


def nearest_site(xy: np.ndarray, sites: list[Site], cell: np.ndarray) -> str:
    """Name of the site among ``sites`` closest to ``xy`` ``(2,)`` Å in the surface plane
    (minimum image in ``cell`` ``(3, 3)``); for a site list without geometry of its own
    (pymatgen's sites in ``tdn adsorb``)."""
    d = lateral_distances(np.asarray(xy), np.array([s.xy for s in sites]), cell)
    return sites[int(np.argmin(d))].name
