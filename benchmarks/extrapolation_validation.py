"""Do the per-atom extrapolation scores (issue 10) flag what they should?

For a model whose card holds a training-set summary (``tdn models summarize``):

(a) the fraction of atoms and of structures flagged (score > 1 or a distance violation) on
    frames of the model's test split: should be almost nothing;
(b) the same fractions on out-of-domain sets built from test-split structures: compressed
    (positions, and the cell of periodic ones, scaled by 0.85 and 0.75), strongly rattled
    (Gaussian σ 0.3 Å, seeded), hydrogens stripped (about half; an even number for a GFN2-xTB
    reference, which runs closed-shell), two molecules pushed into contact at 1.2 Å
    (molecules), and benzene 2.1 Å over the bare slab (slabs, when the model has C and H); a
    test structure with one atom of a metal the model lacks (an organic molecule next to Cu
    for an organic model) must be refused with ``UnsupportedElementError`` (reported);
(c) the Spearman rank correlation between an atom's score and its force error
    ``|F_model - F_ref|`` (eV/Å) against the data set's reference method (GFN2-xTB via the
    data builder's tblite calculator, SevenNet-0, or EMT), pooled over all sets, per set, and
    per structure (largest score vs largest atom error). Test-split references are the
    stored labels; out-of-domain ones are computed.

Writes ``benchmarks/results/extrapolation_<model>.json`` (atomically) and prints a table::

    python benchmarks/extrapolation_validation.py --model M.safetensors \\
        --data datasets/organic-gfn2 --split-file runs/RUN/split.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.data import atomic_numbers

from tdn_calc.calculator import TDNCalculator
from tdn_calc.checkpoint import load_model
from tdn_calc.data.dataset import H5Dataset, sample_atoms
from tdn_calc.errors import InputError, TDNError, UnsupportedElementError
from tdn_calc.evaluation.metrics import spearman
from tdn_calc.extrapolation import from_card
from tdn_calc.fileio import atomic_write
from tdn_calc.train.evaluate import select_frames, supported_frames

HERE = Path(__file__).resolve().parent
ORGANIC = {1, 6, 7, 8, 9, 15, 16, 17, 35}
FOREIGN_METALS = ("Cu", "Pt", "Fe", "Au")  # the first one the model lacks is tried
CONTACT_GAP = 1.2  # Å, closest distance of the two molecules of the contact set
ADSORPTION_HEIGHT = 2.1  # Å, benzene plane over the top metal layer


# --- out-of-domain structures ---------------------------------------------------------------
def compressed(atoms: Atoms, scale: float) -> Atoms:
    """``atoms`` shrunk by ``scale``: the cell (with the atoms) when periodic, else the
    positions about their centroid."""
    out = atoms.copy()
    if out.pbc.any():
        out.set_cell(out.cell.array * scale, scale_atoms=True)
    else:
        centre = out.positions.mean(axis=0)
        out.positions = centre + scale * (out.positions - centre)
    return out


def rattled(atoms: Atoms, sigma: float, rng: np.random.Generator) -> Atoms:
    """``atoms`` with Gaussian noise of ``sigma`` Å on every coordinate."""
    out = atoms.copy()
    out.positions = out.positions + rng.normal(0.0, sigma, out.positions.shape)
    return out


def stripped_hydrogens(atoms: Atoms, rng: np.random.Generator,
                       closed_shell: bool = True) -> Atoms | None:
    """``atoms`` without about half of its H atoms, at least one; with ``closed_shell`` an
    even number, at least 2 (so a closed-shell reference such as GFN2-xTB here still
    applies). ``None`` when there are too few H."""
    hydrogens = np.flatnonzero(atoms.numbers == 1)
    if hydrogens.size < (2 if closed_shell else 1):
        return None
    k = 2 * max(1, hydrogens.size // 4) if closed_shell else max(1, hydrogens.size // 2)
    out = atoms.copy()
    del out[sorted(rng.choice(hydrogens, k, replace=False).tolist())]
    return out


def in_contact(a: Atoms, b: Atoms, gap: float, rng: np.random.Generator) -> Atoms | None:
    """Molecules ``a`` and ``b`` (non-periodic) side by side along a random direction, their
    closest atoms ``gap`` Å apart; ``None`` for periodic inputs."""
    if a.pbc.any() or b.pbc.any():
        return None
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    pa = a.positions - a.positions.mean(axis=0)
    pb = b.positions - b.positions.mean(axis=0)

    def closest(t: float) -> float:
        return float(np.linalg.norm(pa[:, None] - (pb[None] + t * u), axis=-1).min())

    lo, hi = 0.0, 100.0
    for _ in range(60):  # bisection: closest(lo) < gap <= closest(hi)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if closest(mid) < gap else (lo, mid)
    return Atoms(numbers=np.concatenate([a.numbers, b.numbers]),
                 positions=np.concatenate([pa, pb + hi * u]))  # fmt: skip


def benzene_on_slab(slab: Atoms, elements: set[int]) -> Atoms | None:
    """Benzene lying flat ``ADSORPTION_HEIGHT`` Å over the top layer of ``slab`` (periodic in
    x and y only) with its adsorbate removed; ``None`` when ``slab`` is not a slab or the
    model lacks C or H."""
    if not (slab.pbc[0] and slab.pbc[1] and not slab.pbc[2]) or not {1, 6} <= elements:
        return None
    out = slab[[z not in ORGANIC for z in slab.numbers]]
    if len(out) == 0:
        return None
    benzene = molecule("C6H6")  # in the xy plane
    centre = 0.5 * (out.cell[0] + out.cell[1])
    centre[2] = out.positions[:, 2].max() + ADSORPTION_HEIGHT
    out += Atoms(benzene.numbers, benzene.positions - benzene.positions.mean(axis=0) + centre)
    return out


def next_to_metal(atoms: Atoms, elements: set[int]) -> Atoms | None:
    """``atoms`` with one atom of a metal the model lacks 2.0 Å beyond its outermost atom;
    ``None`` when the model has all of :data:`FOREIGN_METALS`."""
    missing = [m for m in FOREIGN_METALS if atomic_numbers[m] not in elements]
    if not missing:
        return None
    out = atoms.copy()
    centre = out.positions.mean(axis=0)
    far = out.positions[np.argmax(np.linalg.norm(out.positions - centre, axis=1))]
    direction = (far - centre) / max(float(np.linalg.norm(far - centre)), 1e-9)
    out += Atoms(missing[0], [far + 2.0 * direction])
    return out


def ood_sets(bases: list[Atoms], elements: set[int], seed: int,
             closed_shell: bool = True) -> dict[str, list[Atoms]]:
    """The out-of-domain sets built from ``bases`` (inapplicable ones are left out of a set;
    a set may end up empty); ``closed_shell``: strip H in pairs."""
    rng = np.random.default_rng(seed)
    pairs = zip(bases, bases[1:] + bases[:1], strict=True)
    sets = {
        "compressed x0.85": [compressed(a, 0.85) for a in bases],
        "compressed x0.75": [compressed(a, 0.75) for a in bases],
        "rattled 0.3 A": [rattled(a, 0.3, rng) for a in bases],
        "H stripped": [stripped_hydrogens(a, rng, closed_shell) for a in bases],
        f"contact {CONTACT_GAP} A": [in_contact(a, b, CONTACT_GAP, rng) for a, b in pairs],
        "benzene on slab": [benzene_on_slab(a, elements) for a in bases],
    }
    return {name: [a for a in found if a is not None] for name, found in sets.items()}


# --- reference and scoring ------------------------------------------------------------------
def reference_calculator(method: str):
    """An ASE calculator for the data set's ``reference_method`` (GFN2-xTB, SevenNet-0, EMT),
    built by the data builders' own factories."""
    key = method.lower()
    if "gfn2" in key:
        from tdn_calc.datagen.molecules.label import BuildSettings, gfn2_calculator

        return gfn2_calculator(BuildSettings())
    from tdn_calc.teachers import get_teacher

    if "sevennet" in key:
        return get_teacher("sevenn-0")
    if "emt" in key:
        return get_teacher("emt")
    raise InputError(f"no reference calculator for the data set's method {method!r}; "
                     "known: GFN2-xTB, SevenNet-0, EMT (or pass --no-reference)")  # fmt: skip


@dataclass
class Scored:
    """One structure: ``scores`` ``[n]``, ``too_close`` ``[n]`` bool, ``force_error``
    ``[n]`` eV/Å (NaN without a reference)."""

    formula: str
    scores: np.ndarray
    too_close: np.ndarray
    force_error: np.ndarray

    @property
    def flagged_atoms(self) -> np.ndarray:
        return (self.scores > 1.0) | self.too_close


@dataclass
class SetResult:
    """All structures of one set, and the ones refused (reason per structure)."""

    structures: list[Scored] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    reference_failed: int = 0


def score_structure(calc: TDNCalculator, atoms: Atoms, reference) -> Scored:
    """Model forces and scores of ``atoms``; ``reference``: an ASE calculator, a ``[n, 3]``
    array of reference forces (eV/Å), or ``None``. Raises what the calculator raises."""
    work = atoms.copy()
    work.calc = calc
    forces = work.get_forces()
    results = calc.results
    if "extrapolation" not in results:
        raise InputError("the model card has no training-set summary; run "
                         "`tdn models summarize CHECKPOINT DATA -o OUT` first")  # fmt: skip
    ref: np.ndarray | None = None
    if isinstance(reference, np.ndarray):
        ref = reference
    elif reference is not None:
        with contextlib.suppress(Exception):  # SCF failures of strongly distorted inputs
            probe = atoms.copy()
            probe.calc = reference
            ref = probe.get_forces()
    error = (np.linalg.norm(forces - ref, axis=1) if ref is not None
             else np.full(len(atoms), np.nan))  # fmt: skip
    return Scored(atoms.get_chemical_formula(), np.asarray(results["extrapolation"]),
                  np.asarray(results["extrapolation_too_close"]), error)  # fmt: skip


def run_set(calc: TDNCalculator, structures: list[Atoms], references: list) -> SetResult:
    """Score every structure; a structure the calculator refuses is counted with its reason."""
    out = SetResult()
    for atoms, ref in zip(structures, references, strict=True):
        try:
            scored = score_structure(calc, atoms, ref)
        except UnsupportedElementError as exc:
            out.refused.append(f"{type(exc).__name__}: {exc}")
            continue
        except InputError as exc:
            if "training-set summary" in str(exc):
                raise
            out.refused.append(f"{type(exc).__name__}: {exc}")
            continue
        out.reference_failed += int(ref is not None and np.isnan(scored.force_error).all())
        out.structures.append(scored)
    return out


# --- statistics -----------------------------------------------------------------------------
def set_metrics(result: SetResult) -> dict:
    """Fractions flagged, score quantiles, force errors (meV/Å) and correlations of a set."""
    s = result.structures
    n_refused = len(result.refused)
    metrics: dict = {"n_structures": len(s) + n_refused, "n_scored": len(s),
                     "n_refused": n_refused, "refused": result.refused[:3],
                     "n_reference_failed": result.reference_failed}  # fmt: skip
    if not s:
        return metrics
    scores = np.concatenate([x.scores for x in s])
    flagged = np.concatenate([x.flagged_atoms for x in s])
    close = np.concatenate([x.too_close for x in s])
    error = np.concatenate([x.force_error for x in s])
    max_error = np.array([np.max(x.force_error) for x in s])

    def mean_mev(values: np.ndarray, average: Callable = np.mean) -> float | None:
        values = values[np.isfinite(values)]
        return 1000 * float(average(values)) if values.size else None

    metrics.update(
        n_atoms=int(scores.size),
        frac_atoms_flagged=float(flagged.mean()),
        frac_atoms_score_above_1=float((scores > 1).mean()),
        frac_atoms_too_close=float(close.mean()),
        frac_structures_flagged=float(np.mean([x.flagged_atoms.any() for x in s])),
        score_median=float(np.median(scores)),
        score_p99=float(np.quantile(scores, 0.99)),
        score_max=float(scores.max()),
        force_error_mean_meV_A=mean_mev(error),
        force_error_median_meV_A=mean_mev(error, np.median),
        force_error_flagged_meV_A=mean_mev(error[flagged]),
        force_error_unflagged_meV_A=mean_mev(error[~flagged]),
        spearman_atoms=spearman(scores, error),
        spearman_structures=spearman(np.array([x.scores.max() for x in s]), max_error),
    )
    return metrics


def pooled_metrics(results: dict[str, SetResult]) -> dict:
    """:func:`set_metrics` over every scored structure of every set."""
    pooled = SetResult()
    for r in results.values():
        pooled.structures += r.structures
    out = set_metrics(pooled)
    return {k: out[k] for k in ("n_scored", "n_atoms", "spearman_atoms", "spearman_structures",
                                "force_error_flagged_meV_A", "force_error_unflagged_meV_A")
            if k in out}  # fmt: skip


# --- driver ---------------------------------------------------------------------------------
def frame_atoms(dataset: H5Dataset, index: int) -> tuple[Atoms, np.ndarray]:
    """Frame ``index`` of ``dataset`` as ``Atoms`` and its reference forces ``[n, 3]`` eV/Å."""
    s = dataset[index]
    return sample_atoms(s), s["forces"]


def pick_frames(dataset: H5Dataset, indices: np.ndarray, n_test: int, n_ood: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(test frames, base frames)``: ``n_test`` random frames of ``indices`` and one random
    frame from each of ``n_ood`` random trajectories among them."""
    rng = np.random.default_rng(seed)
    test = np.sort(rng.choice(indices, min(n_test, indices.size), replace=False))
    trajs = rng.permutation(np.unique(dataset.traj[indices]))[:n_ood]
    bases = [int(rng.choice(indices[dataset.traj[indices] == t])) for t in trajs]
    return test, np.asarray(bases, dtype=np.int64)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch and BLAS/OpenMP thread (tblite spins on a busy CPU otherwise)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(old)


def validate(model_name: str, data: str, *, split_file: str | None = None, n_test: int = 200,
             n_ood: int = 10, seed: int = 0, device: str = "cpu", dtype: str = "float32",
             reference: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run (a)-(c) of the module docstring; returns the report (see :func:`main`)."""
    model = load_model(model_name, device=device, dtype=dtype)
    card = getattr(model, "card", {}) or {}
    dist = from_card(card)
    if dist is None:
        raise InputError(f"{model_name} has no training-set summary in its card; run "
                         f"`tdn models summarize {model_name} DATA -o OUT` first")  # fmt: skip
    elements = {int(z) for z in model.config.elements}
    dataset = H5Dataset(data)
    indices, used_split = select_frames(dataset, "test", split_file, card)
    indices, skipped = supported_frames(dataset, indices, model.config.elements)
    if indices.size == 0:
        raise InputError(f"the test split of {data} has no frames with the model's elements")
    test_idx, base_idx = pick_frames(dataset, indices, n_test, n_ood, seed)
    calc = TDNCalculator(model, device=device)
    ref_calc = reference_calculator(dataset.reference_method) if reference else None

    results: dict[str, SetResult] = {}
    test = [frame_atoms(dataset, int(k)) for k in test_idx]
    log(f"test split: scoring {len(test)} frames")
    results["test split"] = run_set(calc, [a for a, _ in test], [f for _, f in test])
    bases = [frame_atoms(dataset, int(k))[0] for k in base_idx]
    closed_shell = "gfn2" in dataset.reference_method.lower()
    for name, structures in ood_sets(bases, elements, seed, closed_shell).items():
        log(f"{name}: {len(structures)} structures")
        results[name] = run_set(calc, structures, [ref_calc] * len(structures))
    foreign = [a for a in (next_to_metal(b, elements) for b in bases[:1]) if a is not None]
    metal = run_set(calc, foreign, [None] * len(foreign)) if foreign else None

    return {
        "model": str(model_name),
        "model_name": card.get("name"),
        "data": str(data),
        "reference_method": dataset.reference_method,
        "reference_computed_for_ood": bool(reference),
        "split_file": used_split,
        **skipped,
        "summary": {"n_frames": dist.n_frames, "quantile": dist.quantile,
                    "shrinkage": dist.shrinkage},
        "seed": seed,
        "dtype": dtype,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sets": {name: set_metrics(r) for name, r in results.items()},
        "pooled": pooled_metrics(results),
        "pooled_ood": pooled_metrics({k: v for k, v in results.items() if k != "test split"}),
        "next_to_foreign_metal": metal_report(foreign, metal),
    }


def metal_report(foreign: list[Atoms], metal: SetResult | None) -> dict:
    """What the calculator did with a test structure next to a metal the model lacks."""
    if metal is None:
        return {"applicable": False,
                "note": f"the model has all of {list(FOREIGN_METALS)}; see 'benzene on slab'"}
    return {"applicable": True, "n_structures": len(foreign), "n_refused": len(metal.refused),
            "errors": metal.refused}


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) \
        else format(value, spec)


def table(report: dict) -> str:
    """The per-set table printed by :func:`main`: structures, refused, atoms, % of atoms and
    of structures flagged, median and largest score, median and mean atom force error
    ``|dF|`` (meV/Å) and the per-atom Spearman rho of score vs ``|dF|``."""
    head = (f"{'set':<18} {'struct':>6} {'refused':>7} {'atoms':>6} {'%atoms':>7} "
            f"{'%struct':>7} {'med':>6} {'max':>8} {'|dF| med':>9} {'mean':>9} {'rho':>6}")
    lines = [head, "-" * len(head)]
    for name, m in report["sets"].items():
        atoms_pct = _fmt(100 * m["frac_atoms_flagged"], ".1f") if "n_atoms" in m else "-"
        struct_pct = _fmt(100 * m["frac_structures_flagged"], ".0f") if "n_atoms" in m else "-"
        lines.append(
            f"{name:<18} {m['n_structures']:>6} {m['n_refused']:>7} {m.get('n_atoms', 0):>6} "
            f"{atoms_pct:>7} {struct_pct:>7} "
            f"{_fmt(m.get('score_median'), '.2f'):>6} {_fmt(m.get('score_max'), '.3g'):>8} "
            f"{_fmt(m.get('force_error_median_meV_A'), '.0f'):>9} "
            f"{_fmt(m.get('force_error_mean_meV_A'), '.3g'):>9} "
            f"{_fmt(m.get('spearman_atoms'), '.2f'):>6}")
    for key in ("pooled", "pooled_ood"):
        p = report[key]
        lines.append(
            f"{key}: Spearman(score, |dF|) atoms {_fmt(p.get('spearman_atoms'), '.3f')} "
            f"(n={p.get('n_atoms', 0)}), structures {_fmt(p.get('spearman_structures'), '.3f')} "
            f"(n={p.get('n_scored', 0)}); mean |dF| flagged "
            f"{_fmt(p.get('force_error_flagged_meV_A'), '.0f')} vs unflagged "
            f"{_fmt(p.get('force_error_unflagged_meV_A'), '.0f')} meV/A")
    metal = report["next_to_foreign_metal"]
    if metal["applicable"]:
        first = metal["errors"][0] if metal["errors"] else "NOT refused"
        lines.append(f"structure + foreign metal: {metal['n_refused']}/{metal['n_structures']} "
                     f"refused: {first}")
    return "\n".join(lines)


def default_name(model: str) -> str:
    """``model`` without directory and ``.safetensors``."""
    return Path(model).name.removesuffix(".safetensors")


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring and ``--help``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint (or name) with a summary")
    p.add_argument("--data", required=True, help="the model's HDF5 data set")
    p.add_argument("--split-file", default=None, help="default: the model card's split file")
    p.add_argument("--n-test", type=int, default=200, help="test-split frames to score")
    p.add_argument("--n-ood", type=int, default=10, help="base structures per OOD set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--no-reference", action="store_true",
                   help="skip the reference calculations (no force errors for OOD sets)")
    p.add_argument("--name", default=None, help="model name in the output file name")
    p.add_argument("-o", "--output", default=None,
                   help="default: benchmarks/results/extrapolation_<name>.json")
    args = p.parse_args(argv)
    if args.n_test < 1 or args.n_ood < 2:
        p.error(f"need --n-test >= 1 and --n-ood >= 2; got {args.n_test}, {args.n_ood}")
    name = args.name or default_name(args.model)
    output = Path(args.output or HERE / "results" / f"extrapolation_{name}.json")
    for path in (args.model, args.data, args.split_file):
        if path and Path(path).exists() and Path(path).resolve() == output.resolve():
            p.error(f"output {output} is an input")
    try:
        with one_thread():
            report = validate(args.model, args.data, split_file=args.split_file,
                              n_test=args.n_test, n_ood=args.n_ood, seed=args.seed,
                              device=args.device, dtype=args.dtype,
                              reference=not args.no_reference,
                              log=lambda s: print(s, file=sys.stderr, flush=True))  # fmt: skip
    except TDNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["command"] = " ".join(["python", "benchmarks/extrapolation_validation.py",
                                  *(argv if argv is not None else sys.argv[1:])])  # fmt: skip
    with atomic_write(output, "w") as fh:
        json.dump(finite_or_none(report), fh, indent=1, allow_nan=False)
    print(table(report))
    print(f"wrote {output}")
    return 0


def finite_or_none(value):
    """``value`` with every non-finite float (NaN: nothing to average) replaced by ``None``,
    recursively, so the JSON is strict."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    raise SystemExit(main())
