"""Catalysis systems for distilled reference data: fcc(111) slabs with adsorbates, strained
bulk cells and gas-phase molecules, plus the teacher-relaxed lattice constants they use.

Every system is named by a :class:`SystemSpec` whose ``label`` (``"Pt111/CO/fcc/r0"``,
``"Pt111/clean/r0"``, ``"bulk/Cu/strain+2%/r0"``, ``"gas/CO/r0"``) also seeds its random
start perturbation, so a build is deterministic and each replica ``rN`` differs.
Lengths in Å, energies in eV. Relaxation and the build driver live in
:mod:`tdn_calc.datagen.catalysis.build`.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, reference_states
from ase.eos import EquationOfState

from ...errors import ConfigError, InputError
from ...fileio import atomic_write

METALS = ("Pt", "Pd", "Ni", "Cu", "Ag", "Au")
ADSORBATES = ("H", "O", "N", "C", "OH", "CO", "CH3", "H2O")
SITES = ("top", "bridge", "fcc", "hcp")
GAS_MOLECULES = ("H2", "O2", "N2", "CO", "H2O", "CH4", "NH3", "OH", "CH3")
BULK_STRAINS = (-0.04, -0.02, 0.0, 0.02, 0.04)
KINDS = ("slab", "bulk", "gas")

_ASE_SITE = {"top": "ontop", "bridge": "bridge", "fcc": "fcc", "hcp": "hcp"}
# metal–anchor bond length (Å) that sets the start height over each site
_BOND = {"H": 1.80, "O": 2.05, "N": 2.00, "C": 1.95, "OH": 2.10, "CO": 1.90, "CH3": 2.10,
         "H2O": 2.30}
_MIN_HEIGHT = 0.9  # Å, so that small adsorbates do not start inside a wide hollow


@dataclass(frozen=True)
class SystemSpec:
    """One system to relax. ``kind`` is "slab", "bulk" or "gas"; unused fields are ""/0."""

    label: str
    kind: str
    metal: str = ""
    adsorbate: str = ""
    site: str = ""
    strain: float = 0.0
    replica: int = 0


@dataclass(frozen=True)
class CatalysisConfig:
    """What to build and how to perturb it (lengths Å, angles degrees).

    ``replicas`` copies of every base system are built, each from its own seeded start;
    the default 7 gives 7 × (6 × (8 × 4 + 1) + 6 × 5 + 9) = 1,659 trajectories.
    """

    metals: tuple[str, ...] = METALS
    adsorbates: tuple[str, ...] = ADSORBATES
    sites: tuple[str, ...] = SITES
    gas_molecules: tuple[str, ...] = GAS_MOLECULES
    bulk_strains: tuple[float, ...] = BULK_STRAINS
    replicas: int = 7
    seed: int = 0
    slab_size: tuple[int, int, int] = (3, 3, 4)
    slab_tag: str = ""  # appended to "Pt111" in slab labels, e.g. "-3x3x6" for thicker slabs
    fixed_layers: int = 2
    vacuum: float = 10.0
    bulk_repeat: int = 2  # conventional cubic cell repeated n×n×n (32 atoms for n = 2)
    gas_box: float = 12.0
    perturb: float = 0.05  # Gaussian σ of the start rattle on free atoms
    lateral_jitter: float = 0.15  # uniform ± shift of an adsorbate in the surface plane
    max_tilt: float = 10.0  # random tilt of molecular adsorbates
    shear: float = 0.005  # σ of the random symmetric strain added to bulk cells
    # relaxation by the teacher and the frames kept
    optimizer: str = "BFGS"  # BFGS, FIRE or LBFGS (ase.optimize)
    fmax: float = 0.05  # eV/Å
    max_steps: int = 200
    subsample: int = 1  # keep every n-th relaxation frame (the first and last always)
    n_rattle: int = 3  # rattled copies of the final structure
    rattle_sigma: tuple[float, float] = (0.05, 0.15)  # σ drawn uniformly from this range

    # the recipe interface of catalysis_build.build_catalysis (coverage.CoverageConfig too)
    source = "tdn-calc catalysis builder: fcc(111) slabs with adsorbates, strained bulk, gas"

    def enumerate(self) -> list[SystemSpec]:
        return enumerate_systems(self)

    def build(self, spec: SystemSpec, lattice: dict[str, float]) -> Atoms:
        return build_system(spec, lattice, self)

    def spin(self, spec: SystemSpec) -> int:
        return spin_of(spec)

    def lattice_constants(self, path: Path, teacher: str, calc_factory) -> dict[str, float]:
        return load_lattice_constants(path, teacher, self.metals, calc_factory)

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("metals", self.metals, METALS),
            ("adsorbates", self.adsorbates, ADSORBATES),
            ("sites", self.sites, SITES),
        ):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"unknown {name} {bad}; allowed: {', '.join(allowed)}")
        for gas in self.gas_molecules:
            try:
                molecule(gas)
            except KeyError as err:
                raise ConfigError(f"unknown gas molecule {gas!r} (ASE g2 names)") from err
        if self.replicas < 1:
            raise ConfigError(f"replicas must be >= 1; got {self.replicas}")
        if self.optimizer not in ("BFGS", "FIRE", "LBFGS"):
            raise ConfigError(f"optimizer must be BFGS, FIRE or LBFGS; got {self.optimizer!r}")
        if self.subsample < 1 or self.n_rattle < 0 or self.max_steps < 0 or self.fmax <= 0:
            raise ConfigError(
                "need subsample >= 1, n_rattle >= 0, max_steps >= 0 and fmax > 0; got "
                f"{self.subsample}, {self.n_rattle}, {self.max_steps}, {self.fmax}"
            )
        lo, hi = self.rattle_sigma
        if not 0 <= lo <= hi:
            raise ConfigError(f"rattle_sigma must be (low, high) with 0 <= low <= high; got "
                              f"{self.rattle_sigma}")
        if not 0 <= self.fixed_layers < self.slab_size[2]:
            raise ConfigError(
                f"fixed_layers must be in 0..{self.slab_size[2] - 1}; got {self.fixed_layers}"
            )


def _strain_tag(strain: float) -> str:
    return f"strain{strain * 100:+.0f}%"


def enumerate_systems(config: CatalysisConfig) -> list[SystemSpec]:
    """All systems of a build, replica by replica (all base systems of r0 first)."""
    specs: list[SystemSpec] = []
    for r in range(config.replicas):
        for metal in config.metals:
            tag = f"{metal}111{config.slab_tag}"
            specs.append(SystemSpec(f"{tag}/clean/r{r}", "slab", metal, replica=r))
            for ads in config.adsorbates:
                for site in config.sites:
                    specs.append(SystemSpec(f"{tag}/{ads}/{site}/r{r}", "slab", metal,
                                            ads, site, replica=r))
        for metal in config.metals:
            for strain in config.bulk_strains:
                specs.append(SystemSpec(f"bulk/{metal}/{_strain_tag(strain)}/r{r}", "bulk",
                                        metal, strain=strain, replica=r))
        for gas in config.gas_molecules:
            specs.append(SystemSpec(f"gas/{gas}/r{r}", "gas", adsorbate=gas, replica=r))
    return specs


def system_rng(seed: int, label: str) -> np.random.Generator:
    """The random generator of one system: depends only on the build seed and the label."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


# ---------------------------------------------------------------- adsorbates and sites
def adsorbate_template(name: str) -> Atoms:
    """Adsorbate with its binding atom (index 0) at the origin, the rest pointing to +z.

    CO and CH3 bind through C, OH and H2O through O; H2O lies nearly flat (bisector 15°
    above the surface plane).
    """
    if name in ("H", "O", "N", "C"):
        return Atoms(name, positions=[[0.0, 0.0, 0.0]])
    if name == "OH":
        return Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    if name == "CO":
        return Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.15]])
    if name == "CH3":
        phis = np.radians([0.0, 120.0, 240.0])
        hs = [[1.03 * math.cos(p), 1.03 * math.sin(p), 0.36] for p in phis]
        return Atoms("CH3", positions=[[0, 0, 0], *hs])
    if name == "H2O":
        tilt, half = math.radians(15.0), math.radians(104.5 / 2)
        b = np.array([math.cos(tilt), 0.0, math.sin(tilt)])
        n = np.array([0.0, 1.0, 0.0])
        h1, h2 = 0.97 * (math.cos(half) * b + math.sin(half) * n), 0.97 * (
            math.cos(half) * b - math.sin(half) * n)
        return Atoms("OH2", positions=[[0, 0, 0], h1, h2])
    raise InputError(f"unknown adsorbate {name!r}; allowed: {', '.join(ADSORBATES)}")


def site_height(adsorbate: str, site: str, nn_distance: float) -> float:
    """Start height (Å) of the binding atom over the top-layer plane at ``site``."""
    lateral = {"top": 0.0, "bridge": nn_distance / 2, "fcc": nn_distance / math.sqrt(3),
               "hcp": nn_distance / math.sqrt(3)}[site]
    bond = _BOND[adsorbate]
    return max(math.sqrt(max(bond**2 - lateral**2, 0.0)), _MIN_HEIGHT)


def _random_axis(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def build_slab(spec: SystemSpec, a: float, config: CatalysisConfig) -> Atoms:
    """fcc(111) slab, pbc [T, T, F], bottom ``fixed_layers`` fixed, optional adsorbate."""
    rng = system_rng(config.seed, spec.label)
    nx, ny, nz = config.slab_size
    slab = fcc111(spec.metal, size=(nx, ny, nz), a=a, vacuum=config.vacuum)
    fixed = slab.get_tags() > nz - config.fixed_layers  # tag 1 = top layer
    if spec.adsorbate:
        ads = adsorbate_template(spec.adsorbate)
        if len(ads) > 1:
            phi = rng.uniform(0.0, 2 * math.pi)
            ads.rotate(rng.uniform(0.0, config.max_tilt), (math.cos(phi), math.sin(phi), 0.0),
                       center=(0, 0, 0))
            ads.rotate(rng.uniform(0.0, 360.0), "z", center=(0, 0, 0))
        height = site_height(spec.adsorbate, spec.site, a / math.sqrt(2))
        add_adsorbate(slab, ads, height + rng.uniform(-0.05, 0.05),
                      position=_ASE_SITE[spec.site], offset=(1, 1), mol_index=0)
        slab.positions[-len(ads):, :2] += rng.uniform(-1, 1, 2) * config.lateral_jitter
        fixed = np.concatenate([fixed, np.zeros(len(ads), dtype=bool)])
        slab.center(vacuum=config.vacuum, axis=2)
    slab.positions[~fixed] += rng.normal(0.0, config.perturb, (int((~fixed).sum()), 3))
    slab.set_constraint(FixAtoms(mask=fixed))
    slab.pbc = (True, True, False)
    return slab


def build_bulk(spec: SystemSpec, a: float, config: CatalysisConfig) -> Atoms:
    """Cubic fcc supercell, strained by ``spec.strain`` plus a small random shear, rattled."""
    rng = system_rng(config.seed, spec.label)
    atoms = bulk(spec.metal, "fcc", a=a, cubic=True).repeat(config.bulk_repeat)
    eps = rng.normal(0.0, config.shear, (3, 3))
    deform = (1.0 + spec.strain) * np.eye(3) + (eps + eps.T) / 2
    atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    atoms.positions += rng.normal(0.0, config.perturb, atoms.positions.shape)
    return atoms


def build_gas(spec: SystemSpec, config: CatalysisConfig) -> Atoms:
    """Molecule from ASE's g2 set, randomly rotated, centred in a box, pbc False."""
    rng = system_rng(config.seed, spec.label)
    mol = molecule(spec.adsorbate)
    mol.set_initial_magnetic_moments(None)
    mol.rotate(rng.uniform(0.0, 360.0), _random_axis(rng), center="COP")
    mol.positions += rng.normal(0.0, config.perturb, mol.positions.shape)
    mol.cell = np.eye(3) * config.gas_box
    mol.center()
    mol.pbc = False
    return mol


def build_system(spec: SystemSpec, lattice: dict[str, float], config: CatalysisConfig) -> Atoms:
    """Start geometry of ``spec``; ``lattice`` maps metal → fcc lattice constant (Å)."""
    if spec.kind == "gas":
        return build_gas(spec, config)
    if spec.metal not in lattice:
        raise InputError(f"no lattice constant for {spec.metal!r}; have {sorted(lattice)}")
    if spec.kind == "slab":
        return build_slab(spec, lattice[spec.metal], config)
    if spec.kind == "bulk":
        return build_bulk(spec, lattice[spec.metal], config)
    raise InputError(f"unknown system kind {spec.kind!r}; allowed: {', '.join(KINDS)}")


def spin_of(spec: SystemSpec) -> int:
    """Unpaired electrons: from ASE's g2 moments for gas molecules (O2 2, OH 1), else 0."""
    if spec.kind != "gas":
        return 0
    return round(float(molecule(spec.adsorbate).get_initial_magnetic_moments().sum()))


# ---------------------------------------------------------------- lattice constants
def fit_lattice_constant(metal: str, calc, *, span: float = 0.04, n_points: int = 9) -> float:
    """fcc lattice constant (Å) minimising ``calc``'s energy: Birch–Murnaghan fit of E(V)
    on a one-atom primitive cell, over ±``span`` around the reference, re-centred once."""
    a0 = reference_states[atomic_numbers[metal]]["a"]
    for _ in range(2):
        scales = np.linspace(1 - span, 1 + span, n_points)
        volumes, energies = [], []
        for s in scales:
            atoms = bulk(metal, "fcc", a=a0 * s)
            atoms.calc = calc
            volumes.append(atoms.get_volume())
            energies.append(atoms.get_potential_energy())
        v0, _, _ = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
        a_fit = float((4.0 * v0) ** (1.0 / 3.0))
        if abs(a_fit / a0 - 1) < 0.75 * span:
            return a_fit
        a0 = a_fit
    return a_fit


def load_lattice_constants(
    path: Path, teacher: str, metals: Sequence[str], calc_factory: Callable[[], object]
) -> dict[str, float]:
    """Lattice constants of ``metals`` for ``teacher``, cached in the JSON file ``path``
    (``{teacher: {metal: a}}``); missing ones are fitted with ``calc_factory()``."""
    cache: dict[str, dict[str, float]] = {}
    if path.exists():
        cache = json.loads(path.read_text())
    known = cache.setdefault(teacher, {})
    missing = [m for m in metals if m not in known]
    if missing:
        calc = calc_factory()
        for metal in missing:
            known[metal] = fit_lattice_constant(metal, calc)
        with atomic_write(path, "w") as fh:
            fh.write(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return {m: float(known[m]) for m in metals}

