"""Drive the molecule builder: candidates -> workers -> shards, resumable and seeded.

Workers (a ``multiprocessing`` pool, or the calling process when ``workers == 1``) each run
:func:`tdn_calc.datagen.molecules.label.label_molecule` with their own tblite calculator;
only the parent writes. Molecules already in the shards, or listed in ``failures.jsonl``, are
skipped, so re-running the same command continues an interrupted build.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data.shards import ShardedWriter
from ...errors import InputError
from ...fileio import atomic_write
from ...interrupts import raise_if_interrupted
from ..workers import worker_signals
from .label import REFERENCE_METHOD, BuildSettings, MoleculeResult, label_molecule
from .systems import load_candidates

log = logging.getLogger(__name__)

DEFAULT_SOURCES = ("nci", "freesolv", "solubility")
FAILURES_FILE = "failures.jsonl"
SUMMARY_FILE = "build_summary.json"


@dataclass
class BuildSummary:
    """Counts of one build run (``*_total`` include earlier runs into the same directory)."""

    candidates: int = 0
    filter_removed: dict = field(default_factory=dict)
    molecules_done: int = 0
    frames: int = 0
    frames_by_kind: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    not_converged: int = 0
    skipped_frames: int = 0
    capped_frames: int = 0
    molecules_total: int = 0
    seconds: float = 0.0

    @property
    def molecules_per_hour(self) -> float:
        return 3600.0 * self.molecules_done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["molecules_per_hour"] = round(self.molecules_per_hour, 1)
        d["frames_per_molecule"] = round(self.frames / max(self.molecules_done, 1), 2)
        return d


def _work(args: tuple[str, int, BuildSettings]) -> MoleculeResult:
    smiles, seed, settings = args
    try:
        return label_molecule(smiles, seed, settings)
    except Exception as exc:  # keep the pool alive whatever a molecule does
        return MoleculeResult(identifier=smiles, failure="error",
                              detail=f"{type(exc).__name__}: {exc}"[:200])


def _read_failures(outdir: Path) -> set[str]:
    path = outdir / FAILURES_FILE
    if not path.exists():
        return set()
    out = set()
    with open(path) as fh:
        for line in fh:
            try:
                out.add(json.loads(line)["identifier"])
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill; that molecule is simply retried
    return out


def _check_settings(outdir: Path, found: dict | None, attrs: dict) -> None:
    for key in ("build_settings", "seed"):
        old = None if found is None else found.get(key)
        if old is not None and str(old) != str(attrs[key]):
            raise InputError(
                f"{outdir} was built with {key}={old}; this run asks for {attrs[key]}. "
                "Use the same options to resume, or a new --out directory."
            )


def build_molecules(
    outdir: str | os.PathLike,
    *,
    n_molecules: int,
    seed: int = 0,
    workers: int = 1,
    max_heavy: int = 15,
    settings: BuildSettings | None = None,
    shard_size: int = 250,
    sources: tuple[str, ...] = DEFAULT_SOURCES,
    smiles: list[str] | None = None,
    progress: bool = True,
) -> BuildSummary:
    """Label up to ``n_molecules`` molecules in ``outdir`` (counting ones already there).

    Candidates are filtered (:mod:`tdn_calc.datagen.molecules.systems`), shuffled with
    ``seed`` and processed in that order; ``smiles`` replaces the built-in sources (tests,
    custom sets).
    """
    if n_molecules < 1 or workers < 1:
        raise InputError(f"n_molecules and workers must be >= 1; got {n_molecules}, {workers}")
    settings = settings or BuildSettings()
    outdir = Path(outdir)
    t0 = time.perf_counter()
    cands = load_candidates(sources, max_heavy=max_heavy, smiles=smiles)
    order = [cands.smiles[i] for i in np.random.default_rng(seed).permutation(len(cands.smiles))]
    attrs = {
        "reference_method": REFERENCE_METHOD,
        "source": "tdn-calc molecule builder: RDKit ETKDG conformers of "
        + (", ".join(sources) if smiles is None else "a user SMILES list")
        + f" (<= {max_heavy} heavy atoms) relaxed with GFN2-xTB",
        "build_settings": json.dumps(settings.to_dict(), sort_keys=True),
        "seed": int(seed),
        "charge_convention": "charge = net charge (e); spin = number of unpaired electrons",
    }
    summary = BuildSummary(candidates=len(order), filter_removed=dict(cands.removed))
    failures, kinds = Counter(), Counter()
    with ShardedWriter(outdir, attrs, shard_size=shard_size) as writer:
        _check_settings(outdir, writer.existing_attrs, attrs)
        failed_before = _read_failures(outdir)
        done_before = writer.done
        need = n_molecules - len(done_before & set(order))
        todo = [s for s in order if s not in done_before and s not in failed_before]
        log.info("%d candidates, %d done, %d failed earlier, %d to do", len(order),
                 len(done_before), len(failed_before), min(need, len(todo)))
        if need > 0 and todo:
            results = _results(todo, seed, settings, workers)
            bar = _bar(min(need, len(todo)), progress)
            try:
                with open(outdir / FAILURES_FILE, "a") as ffail:
                    for res in results:
                        raise_if_interrupted()
                        if res.failure is not None:
                            failures[res.failure] += 1
                            ffail.write(json.dumps({"identifier": res.identifier,
                                                    "reason": res.failure,
                                                    "detail": res.detail}) + "\n")
                            ffail.flush()
                            os.fsync(ffail.fileno())
                            continue
                        writer.append_trajectory(res.identifier, res.frames, charge=0, spin=0)
                        summary.molecules_done += 1
                        summary.frames += len(res.frames)
                        kinds.update(int(fr.kind) for fr in res.frames)
                        summary.not_converged += int(not res.converged)
                        summary.skipped_frames += res.skipped_frames
                        summary.capped_frames += res.capped_frames
                        bar.update(1)
                        bar.set_postfix(frames=summary.frames, failed=sum(failures.values()))
                        if summary.molecules_done >= need:
                            break
            finally:
                bar.close()
                close = getattr(results, "close", None)
                if close is not None:
                    close()
        summary.molecules_total = len(writer.done)
    summary.failures = dict(failures)
    summary.frames_by_kind = {str(k): v for k, v in sorted(kinds.items())}
    summary.seconds = time.perf_counter() - t0
    _write_json(outdir / SUMMARY_FILE, summary.to_dict())
    return summary


def _results(todo: list[str], seed: int, settings: BuildSettings, workers: int):
    args = ((s, seed, settings) for s in todo)
    if workers == 1:
        return map(_work, args)
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)

    def gen():
        try:
            yield from pool.imap(_work, args, chunksize=1)
        finally:
            pool.terminate()
            pool.join()

    return gen()


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    worker_signals()


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="mol", smoothing=0.05, mininterval=5.0)


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
