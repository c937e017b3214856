"""GFN2-xTB frames for one small molecule: a "PubChemQCR-mini" trajectory.

Per molecule (everything seeded by :func:`molecule_seed`):

1. RDKit ETKDGv3 conformer with hydrogens, plus Gaussian noise (``perturb_sigma`` Å per
   Cartesian component).
2. BFGS relaxation with GFN2-xTB (tblite) to ``fmax`` eV/Å in at most ``max_steps`` steps;
   every ``subsample``-th step is kept, and always the first and the last (the minimum).
3. Around the last geometry: rattled copies (each sigma in ``rattle_sigmas``,
   ``rattles_per_sigma`` times) and uniformly scaled copies about the centroid
   (``strain_scales``).
4. A "bad start": the conformer with ``bad_start_sigma`` Å noise, relaxed for
   ``bad_start_steps`` steps, every ``bad_start_every``-th step kept.

All frames carry the GFN2-xTB energy (eV) and forces (eV/Å) of their own geometry.
tblite's ``energy`` equals its ``free_energy`` for these closed-shell molecules. Frames whose
largest per-atom force exceeds ``max_force`` (atoms nearly on top of each other) are dropped.

Noise levels were chosen from measured GFN2 forces (largest per-atom |F| at the minimum plus
Gaussian noise, median / max over 12 samples of 4 molecules): sigma 0.02 Å -> 3.5 / 5 eV/Å,
0.05 -> 8 / 9, 0.08 -> 19 / 25, 0.1 -> 19 / 56, 0.2 -> 87 / 560, 0.3 -> 170 / 950. Hence
rattles of 0.01-0.08 Å and a 0.15 Å bad start, with the 50 eV/Å cap for its first steps.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ...data.frames import Frame, FrameKind

REFERENCE_METHOD = "GFN2-xTB (tblite)"


@dataclass(frozen=True)
class BuildSettings:
    """Knobs of the per-molecule recipe (distances Å, forces eV/Å)."""

    fmax: float = 0.01
    max_steps: int = 300
    subsample: int = 5
    perturb_sigma: float = 0.05
    rattle_sigmas: tuple[float, ...] = (0.01, 0.03, 0.05, 0.08)
    rattles_per_sigma: int = 2
    strain_scales: tuple[float, ...] = (0.96, 0.98, 1.02, 1.04)
    bad_start_sigma: float = 0.15
    bad_start_steps: int = 40
    bad_start_every: int = 8
    max_force: float = 50.0
    method: str = "GFN2-xTB"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MoleculeResult:
    """What a worker sends back: frames, or the reason it failed."""

    identifier: str
    frames: list[Frame] = field(default_factory=list)
    failure: str | None = None
    detail: str = ""
    relax_steps: int = 0
    converged: bool = False
    skipped_frames: int = 0  # rattled/strained/bad-start frames whose SCF failed
    capped_frames: int = 0  # frames dropped for a per-atom force above max_force


def molecule_seed(seed: int, identifier: str) -> int:
    """A 31-bit seed from the global ``seed`` and the molecule's identifier."""
    digest = hashlib.sha256(f"{seed}|{identifier}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def embed(smiles: str, seed: int):
    """``(atomic_numbers [n], positions [n, 3] Å)`` of one ETKDGv3 conformer, or None."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            return None
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return numbers, mol.GetConformer().GetPositions()


def gfn2_calculator(settings: BuildSettings):
    from tblite.ase import TBLite

    return TBLite(method=settings.method, charge=0, multiplicity=1, verbosity=0)


def single_point(atoms, kind: int, step: int) -> Frame:
    energy = atoms.get_potential_energy()
    return Frame(atoms.numbers, atoms.positions.copy(), energy, atoms.get_forces().copy(),
                 kind=kind, step=step)


def relax_frames(atoms, fmax: float, steps: int, every: int,
                 kind: int) -> tuple[list[Frame], int, bool]:
    """BFGS keeping steps 0, every, 2*every, ... and the last; -> (frames, steps, converged)."""
    from ase.optimize import BFGS

    opt = BFGS(atoms, logfile=None)
    kept: list[Frame] = []
    last: Frame | None = None
    flags = [False]
    n = 0
    for n, flag in enumerate(opt.irun(fmax=fmax, steps=steps)):
        flags.append(flag)
        # at each yield the calculator holds the results of the current positions
        last = single_point(atoms, kind, n)
        if n % every == 0:
            kept.append(last)
    if last is not None and kept[-1] is not last:
        kept.append(last)
    return kept, n, bool(flags[-1])


def label_molecule(smiles: str, seed: int, settings: BuildSettings) -> MoleculeResult:
    """All frames of one molecule (see module docstring). Never raises for chemistry
    failures: they come back as ``MoleculeResult.failure`` ("embed_failed", "scf_failed").

    tblite runs single-threaded here: its OpenMP threads, spinning on a busy CPU, made a
    molecule 20x slower in a process that had already loaded OpenMP (e.g. through torch),
    where setting ``OMP_NUM_THREADS`` no longer helps.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: then OMP_NUM_THREADS=1 must be set before start-up
        return _label_molecule(smiles, seed, settings)
    with threadpool_limits(limits=1):
        return _label_molecule(smiles, seed, settings)


def _label_molecule(smiles: str, seed: int, settings: BuildSettings) -> MoleculeResult:
    from ase import Atoms

    result = MoleculeResult(identifier=smiles)
    mseed = molecule_seed(seed, smiles)
    rng = np.random.default_rng(mseed)
    conf = embed(smiles, mseed)
    if conf is None:
        result.failure = "embed_failed"
        return result
    numbers, start = conf
    calc = gfn2_calculator(settings)
    try:
        atoms = Atoms(numbers=numbers,
                      positions=start + rng.normal(0.0, settings.perturb_sigma, start.shape))
        atoms.calc = calc
        frames, result.relax_steps, result.converged = relax_frames(
            atoms, settings.fmax, settings.max_steps, max(1, settings.subsample), FrameKind.RELAX
        )
    except Exception as exc:  # tblite raises CalculationFailed / RuntimeError on SCF failure
        result.failure = "scf_failed"
        result.detail = f"{type(exc).__name__}: {exc}"[:200]
        return result
    minimum = atoms.positions.copy()

    def extra(positions: np.ndarray, kind: int, step: int) -> None:
        probe = Atoms(numbers=numbers, positions=positions)
        probe.calc = calc
        try:
            frames.append(single_point(probe, kind, step))
        except Exception:  # an SCF failure or non-finite label loses just this frame
            result.skipped_frames += 1

    step = 0
    for sigma in settings.rattle_sigmas:
        for _ in range(settings.rattles_per_sigma):
            extra(minimum + rng.normal(0.0, sigma, minimum.shape), FrameKind.RATTLED, step)
            step += 1
    centroid = minimum.mean(axis=0)
    for step, scale in enumerate(settings.strain_scales):
        extra(centroid + scale * (minimum - centroid), FrameKind.STRAINED, step)
    if settings.bad_start_steps > 0:
        try:
            bad = Atoms(numbers=numbers,
                        positions=start + rng.normal(0.0, settings.bad_start_sigma, start.shape))
            bad.calc = calc
            bad_frames, _, _ = relax_frames(bad, settings.fmax, settings.bad_start_steps,
                                      max(1, settings.bad_start_every), FrameKind.BAD_START)
            frames.extend(bad_frames)
        except Exception:
            result.skipped_frames += 1
    keep = [np.linalg.norm(fr.forces, axis=1).max() <= settings.max_force for fr in frames]
    result.frames = [fr for fr, ok in zip(frames, keep, strict=True) if ok]
    result.capped_frames = len(frames) - len(result.frames)
    return result
