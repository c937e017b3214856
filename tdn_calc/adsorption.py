"""Adsorption energies on slabs: enumerate sites, relax everything with one model, report.

Reference scheme (documented in docs/cli.md): :data:`tdn_calc.evaluation.references.
MOLECULES_O2_N2` (``molecules-O2-N2``)::

    E_ads = E(slab + adsorbate) - E(slab) - sum_g c_g E(g)

with every energy from the same model, each structure relaxed. The gas-phase references g
with coefficients c_g: an adsorbate that is itself a stable molecule (CO, NO, CO2, H2O, NH3,
CH4, H2, O2, N2) is referenced to that molecule; otherwise each element is referenced to
H = 1/2 H2, O = 1/2 O2, N = 1/2 N2, C = CH4 - 2 H2, S = H2S - H2 (ASE's name: SH2); e.g.
OH = 1/2 O2 + 1/2 H2.
Negative E_ads means binding. A model without spin treats O2 as whatever its training data
did; read absolute O-containing values with that in mind. Sites and their names are those of
:mod:`tdn_calc.evaluation.sites`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import molecule

from .errors import InputError
from .evaluation.references import FORMULA, MOLECULES_O2_N2, formula_key, reference_terms
from .evaluation.sites import Site, classify_site, nearest_site
from .relax.options import DEFAULT_BATCH_SIZE

MOLECULE_REFERENCES = MOLECULES_O2_N2.molecules
ELEMENT_REFERENCES = MOLECULES_O2_N2.elements
SURFACES = ("fcc111", "fcc100", "fcc110", "bcc100", "bcc110", "bcc111", "hcp0001")
#: initial height (Å) of the binding atom above the top layer, by site kind
HEIGHTS = {"ontop": 1.9, "bridge": 1.6}
HOLLOW_HEIGHT = 1.3
_BINDING_ORDER = ("C", "N", "S", "P", "O")


def build_slab(spec: str, vacuum: float = 10.0) -> Atoms:
    """A slab from ``surface:Element:AxBxL`` (e.g. ``fcc111:Pt:3x3x4``), built by ASE with
    its site information; ``pbc = [True, True, False]``."""
    import ase.build

    parts = spec.split(":")
    if len(parts) != 3 or parts[0] not in SURFACES:
        raise InputError(
            f"slab spec {spec!r} must look like 'fcc111:Pt:3x3x4' (surfaces: "
            f"{', '.join(SURFACES)}) or be a structure file"
        )
    surface, element, size = parts
    try:
        dims = tuple(int(x) for x in size.lower().split("x"))
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError
    except ValueError as exc:
        raise InputError(f"slab size {size!r} must be AxBxL with positive integers") from exc
    try:
        return getattr(ase.build, surface)(element, size=dims, vacuum=vacuum)
    except Exception as exc:
        raise InputError(f"cannot build {surface} of {element}: {exc}") from exc


def load_slab(spec_or_path: str | os.PathLike, vacuum: float = 10.0) -> Atoms:
    """A slab from a structure file (pbc forced to ``[True, True, False]``) or a spec."""
    path = Path(spec_or_path)
    if path.is_file():
        from ase.io import read

        slab = read(path)
        slab.pbc = [True, True, False]
        return slab
    return build_slab(str(spec_or_path), vacuum)


def build_adsorbate(name_or_path: str | os.PathLike) -> Atoms:
    """An adsorbate from a chemical symbol (``O``), an ASE g2 molecule name (``CO``, ``OH``)
    or a structure file; oriented with its binding atom (first of C, N, S, P, O present,
    else atom 0) at index 0 and the rest of the molecule pointing up (+z)."""
    from ase.data import chemical_symbols

    name = str(name_or_path)
    if Path(name).is_file():
        from ase.io import read

        ads = read(name)
    elif name in chemical_symbols[1:]:
        ads = Atoms(name, positions=[[0.0, 0.0, 0.0]])
    else:
        try:
            ads = molecule(name)
        except KeyError as exc:
            raise InputError(
                f"unknown adsorbate {name!r}; give an element symbol, an ASE molecule name "
                "(CO, OH, H2O, NH3, CH3, ...) or a structure file"
            ) from exc
    ads.pbc, ads.cell = False, None
    symbols = ads.get_chemical_symbols()
    bind = next((symbols.index(s) for s in _BINDING_ORDER if s in symbols), 0)
    order = [bind, *[k for k in range(len(ads)) if k != bind]]
    ads = ads[order]
    ads.translate(-ads.positions[0])
    if len(ads) > 1:
        axis = ads.positions[1:].mean(axis=0)
        if np.linalg.norm(axis) > 1e-6:
            ads.rotate(axis, "z")
    return ads


def placement_height(site: Site) -> float:
    """Initial height (Å) of the binding atom over the top layer at ``site``, by its kind."""
    return HEIGHTS.get(site.name.split("_")[0], HOLLOW_HEIGHT)


def find_sites(slab: Atoms) -> list[Site]:
    """Sites from ASE's ``adsorbate_info`` (slabs built by :func:`build_slab`), else from
    pymatgen's ``AdsorbateSiteFinder`` (symmetry-distinct ontop/bridge/hollow sites)."""
    info = slab.info.get("adsorbate_info")
    if info and "sites" in info:
        cell2d = np.asarray(info.get("cell", slab.cell.array[:2, :2]))
        return [Site(n, np.dot(np.asarray(s, float), cell2d)) for n, s in info["sites"].items()]
    from pymatgen.analysis.adsorption import AdsorbateSiteFinder

    from .interop import to_pymatgen

    finder = AdsorbateSiteFinder(to_pymatgen(slab))
    found = finder.find_adsorption_sites(positions=["ontop", "bridge", "hollow"])
    sites = []
    for kind in ("ontop", "bridge", "hollow"):
        coords = found.get(kind, [])
        for k, c in enumerate(coords):
            sites.append(Site(kind if len(coords) == 1 else f"{kind}_{k}", np.asarray(c[:2])))
    if not sites:
        raise InputError("no adsorption sites found on this slab (is the surface normal z?)")
    return sites


def place(slab: Atoms, adsorbate: Atoms, site: Site, height: float | None = None) -> Atoms:
    """``slab`` + ``adsorbate`` with its binding atom ``height`` Å (default by site kind)
    above the highest slab atom at ``site.xy``; slab constraints are kept."""
    out = slab.copy()
    ads = adsorbate.copy()
    z = slab.positions[:, 2].max() + (placement_height(site) if height is None else height)
    ads.translate(np.array([site.xy[0], site.xy[1], z]) - ads.positions[0])
    out.extend(ads)
    return out


def site_reader(slab: Atoms, placed: list[tuple[Site, Atoms]]):
    """``f(relaxed Atoms) -> site name`` of the adsorbate's binding atom (index ``len(slab)``).

    :func:`tdn_calc.evaluation.sites.classify_site` on the relaxed geometry when it names
    every placed start as its site (the facets it supports, with ASE's site names), else the
    nearest of the placed sites (pymatgen's ``ontop_0`` ... names).
    """
    n_slab = len(slab)
    mask = np.arange(n_slab + 1) < n_slab
    try:
        layers = None
        if placed:
            from .evaluation.sites import metal_layers

            layers = metal_layers(placed[0][1][: n_slab + 1], mask)
        geometric = all(classify_site(a[: n_slab + 1], n_slab, mask, layers)[0] == s.name
                        for s, a in placed)
    except (InputError, ValueError, ImportError):
        geometric = False
    if geometric:
        return lambda atoms: classify_site(atoms[: n_slab + 1], n_slab, mask, layers)[0]
    sites = [s for s, _ in placed]
    return lambda atoms: nearest_site(atoms.positions[n_slab, :2], sites, slab.cell.array)


@dataclass
class SiteResult:
    """One site: total energy (eV), adsorption energy (eV), relaxation status, and the site
    the binding atom ended closest to."""

    site: str
    energy: float
    adsorption_energy: float
    converged: bool
    n_steps: int
    fmax: float
    final_site: str
    atoms: Atoms | None = field(default=None, repr=False)


@dataclass
class AdsorptionResult:
    """Everything :func:`adsorption_energies` computed (energies in eV)."""

    adsorbate: str
    slab: str
    slab_energy: float
    references: dict[str, float]
    reference_terms: dict[str, float]
    sites: list[SiteResult]
    others_converged: bool = True
    others: list[Atoms] = field(default_factory=list, repr=False)

    @property
    def converged(self) -> bool:
        """Every relaxation (slab, sites, references) converged."""
        return self.others_converged and all(s.converged for s in self.sites)

    @property
    def most_stable(self) -> SiteResult:
        return min(self.sites, key=lambda s: s.adsorption_energy)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("others", None)
        for s in out["sites"]:
            s.pop("atoms", None)
        out["most_stable"] = self.most_stable.site
        out["scheme"] = FORMULA
        out["reference_scheme"] = MOLECULES_O2_N2.name
        return out


def adsorption_energies(
    slab: Atoms,
    adsorbate: Atoms,
    relax_many,
    *,
    sites: list[str] | None = None,
    slab_label: str = "slab",
) -> AdsorptionResult:
    """Relax the slab, the slab with ``adsorbate`` on every site, and the gas references.

    Args:
        slab: the clean slab (constraints such as fixed bottom layers are kept).
        adsorbate: from :func:`build_adsorbate` (binding atom first).
        relax_many: ``f(list[Atoms]) -> list[RelaxResult]`` that relaxes structures with one
            model (e.g. the batched relaxation on a TDN model, or ``relax`` with an ASE
            calculator).
        sites: restrict to these site names (default: all found).
        slab_label: name of the slab for the report.
    """
    found = find_sites(slab)
    if sites:
        unknown = sorted(set(sites) - {s.name for s in found})
        if unknown:
            raise InputError(
                f"unknown sites {unknown}; this slab has {', '.join(s.name for s in found)}"
            )
        found = [s for s in found if s.name in sites]
    terms = reference_terms(adsorbate)
    gases = [molecule(g) for g in terms]
    placed = [(s, place(slab, adsorbate, s)) for s in found]
    final_site = site_reader(slab, placed)
    systems = [slab, *[a for _, a in placed], *gases]
    results = relax_many(systems)
    slab_energy = results[0].energy
    refs = {g: r.energy for g, r in zip(terms, results[1 + len(found) :], strict=True)}
    reference = sum(c * refs[g] for g, c in terms.items())
    rows = []
    for s, r in zip(found, results[1 : 1 + len(found)], strict=True):
        rows.append(
            SiteResult(
                site=s.name,
                energy=r.energy,
                adsorption_energy=r.energy - slab_energy - reference,
                converged=r.converged,
                n_steps=r.n_steps,
                fmax=r.fmax,
                final_site=final_site(r.atoms),
                atoms=r.atoms,
            )
        )
    others = [results[0], *results[1 + len(found) :]]
    for r, label in zip(others, ["slab", *terms], strict=True):
        r.atoms.info["role"] = label
    return AdsorptionResult(
        adsorbate=formula_key(adsorbate),
        slab=slab_label,
        slab_energy=slab_energy,
        references=refs,
        reference_terms=terms,
        sites=rows,
        others_converged=all(r.converged for r in others),
        others=[r.atoms for r in others],
    )


def make_relaxer(
    model: str,
    structures: list[Atoms],
    *,
    device: str = "auto",
    dtype: str = "float32",
    fmax: float = 0.05,
    steps: int = 500,
    batch_size: int = DEFAULT_BATCH_SIZE,
):
    """``(relax_many, model_info)`` for :func:`adsorption_energies`: batched relaxation
    (``optimizer="auto"``: BFGS for up to 300 atoms, else FIRE) on a TDN
    model (checkpoint path, registered name or ``"auto"`` for the elements of
    ``structures``), or ASE's EMT one by one for ``model="emt"`` (demonstrations/tests)."""
    import warnings

    from .relax.result import ConvergenceWarning
    from .relax.single import relax

    def quiet(f):
        def wrapped(atoms_list):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return f(atoms_list)

        return wrapped

    if model.lower() == "emt":
        from ase.calculators.emt import EMT

        info = {"name": "EMT (ASE effective medium theory)"}
        return quiet(lambda L: [relax(a, EMT(), fmax=fmax, steps=steps) for a in L]), info
    from .device import resolve_device
    from .relax.inputs import load_job_model
    from .relax.queue import batch_relax

    tdn, info = load_job_model(model, structures, str(resolve_device(device)), dtype)
    return quiet(
        lambda L: batch_relax(L, tdn, fmax=fmax, steps=steps, batch_size=batch_size)
    ), info


def plot(result: AdsorptionResult, path: str | os.PathLike) -> None:
    """Bar chart of the adsorption energy per site (PNG, matplotlib Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_write

    names = [s.site for s in result.sites]
    values = [s.adsorption_energy for s in result.sites]
    best = result.most_stable.site
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.5))
    colors = ["tab:green" if n == best else "tab:blue" for n in names]
    bars = ax.bar(names, values, color=colors)
    for bar, s in zip(bars, result.sites, strict=True):
        moved = "" if s.final_site == s.site else f"\n→{s.final_site}"
        label = f"{s.adsorption_energy:.2f}{moved}"
        va = "bottom" if s.adsorption_energy >= 0 else "top"
        xy = (bar.get_x() + bar.get_width() / 2, bar.get_height())
        ax.annotate(label, xy, ha="center", va=va, fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("adsorption energy / eV")
    ax.set_title(f"{result.adsorbate} on {result.slab} (most stable: {best})")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
