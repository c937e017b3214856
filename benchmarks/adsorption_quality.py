"""Adsorption quality of a TDN catalysis model judged by its teacher (issues 6, 8 and 22).

For every slab+adsorbate trajectory of a split part (``--split val`` to choose a model,
``test`` to report one) of a catalysis data set built by
:mod:`tdn_calc.datagen.catalysis.build` — the ``coverage2`` recipe
(``datasets/catalysis2-sevennet0``: ten metals, facets 111/100/110/211/0001, bimetallic top
layers, 25 adsorbates, one or two per cell) or the first, (111)-only one
(``datasets/catalysis-sevennet0``) — bulk, gas and clean-slab trajectories left out:

1. the start is the trajectory's first relaxation frame, the teacher's own minimum its last
   relaxation frame (energy stored in the data);
2. the start is relaxed with the TDN model (:func:`tdn_calc.relax.relax`, same fixed atoms,
   default optimizer the one the data builder used), then the teacher (``--teacher``, default
   the data set's own, SevenNet-0, from :func:`tdn_calc.teachers.get_teacher`) computes a
   single point on the TDN minimum;
3. ``d_teacher`` = teacher energy at the TDN minimum - teacher energy at its own minimum (eV):
   the acceptance figure (target median |d| <= 0.05 eV), the same as the difference of the two
   adsorption energies, so it needs no reference;
4. adsorption energies follow :mod:`tdn_calc.evaluation.references`' scheme
   ``molecules-O2-N2`` (``tdn adsorb``'s),
   ``E_ads = E(slab+ads) - E(clean slab) - sum_g c_g E(g)`` with gas references from
   :func:`tdn_calc.evaluation.reference_terms` (CO, H2O as themselves; H = 1/2 H2,
   O = 1/2 O2, N = 1/2 N2, C = CH4 - 2 H2, so OH = 1/2 O2 + 1/2 H2, CH3 = CH4 - 1/2 H2;
   two co-adsorbed species: the sum of both). The references are the data set's own
   trajectories: the clean slab of the same surface (metal, facet, in-plane repeats x layers,
   alloy, dopant and lateral strain must match; the same number of fixed layers preferred,
   else the nearest:
   ``slab_fixed_layers_match``) and each gas molecule, the lowest converged replica; the
   teacher's energy is its stored minimum, TDN's its own relaxation from the same start.
   Without a matching clean slab or gas molecule in the data the row has no adsorption
   energies (``e_ads_*``, ``d_model`` None) but all else. ``d_model`` = TDN's own E_ads -
   teacher's own.

Did the model land in the teacher's minimum (``landed``)? All three of:

* same state: every adsorbate still bound to the slab or desorbed as in the teacher's
  minimum, and the same bonds inside and between the adsorbates (nothing dissociated or
  recombined that the teacher did not), with the bond criteria of
  :mod:`tdn_calc.evaluation.anomalies` (adsorbate-slab contact < 1.5 x, bonds < 1.2 x the sum
  of covalent radii); the anomalies of both minima relative to the start are in the row;
* same site (``same_site``), for each adsorbate's binding (anchor) atom. On the facets the
  library's classifier names (:func:`tdn_calc.evaluation.classify_site`: 111, 0001, 100,
  110) the site names must match (ontop/bridge/shortbridge/longbridge/fcc/hcp/hollow/
  desorbed, the slab's own atoms, dopants included, as the surface). Where it has no names
  (211: a stepped surface) the generic rule decides, and on bimetallic surfaces both must
  hold (a dopant makes same-named sites inequivalent). Generic rule (``same_site_generic``,
  recorded for every system): the anchors of the two minima lie within 0.5 Å of each other
  laterally and in height above the top layer after one surface translation, i.e. an
  in-plane shift between top-layer atoms that maps the whole start slab onto itself,
  elements included (so equivalent sites of a periodic surface count as one, sites next to a
  dopant do not), or both anchors are desorbed (> 4 Å above the top layer). On 211 the site
  strings describe the anchor's contact atoms (the nearest slab atoms up to the largest gap
  in distance within 1.3 x the nearest): ``2-fold[Pt0,Pt0]``, the digit the atom's row
  counted from the top (0 = step edge);
* ``|d_teacher| <= 0.05 eV``.

Figures per facet, metal, adsorbate family (``family`` of ``trajectories.jsonl``: H, O, C,
CO, CO2, N, NO, ``coads`` for two adsorbates, ``alloy`` for bimetallic surfaces, ``strained``
for laterally strained slabs) and overall:
landed fraction (of all systems planned: refused and failed ones count as not landed, and
of the evaluated ones), same-site and same-state fractions, median |d_teacher|, and the
misses with their start sites (as labelled in the data and as classified); also apart for the
systems whose stored teacher relaxation converged and the others. The coverage2 builder stops
the teacher at 60 steps, and an unconverged end is no minimum to land in: the teacher
continues such a relaxation to ``--fmax`` first (same optimizer, up to 300 more steps, once
per system, clean-slab references too; ``teacher_continued_steps`` in each row), unless
``--stored-teacher-ends`` asks for the stored ends as they are. A model that does
not cover a system's elements (the shipped tdn-catalysis has no Ru, Co, Rh, Ir) is not run on
it: the row is ``refused``, counted per metal. ``--max-systems N`` evaluates a stratified
sample (facet x family strata taken in turn, each time the stratum whose facet and family
have been drawn least, inside a stratum the least-drawn metal; ties by ``--seed``), so any
prefix of the order is balanced too.

A second, looser site figure also counts a different site that the teacher itself puts at
least 0.05 eV *lower* than its own minimum (``d_teacher <= -0.05``): there the teacher's
relaxation stopped on a higher stationary point and the model went on to a better one. The
figures are also given for the systems with no replica (another start of the same system) in
the training part ("unseen") and the others ("seen"). Exit status 0 when the median
|d_teacher| and the same-site fraction (>= 90 %) targets are met, 1 otherwise.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/adsorption_quality.py \
        --model runs/tdn-catalysis-v7/best.safetensors --data datasets/catalysis2-sevennet0 \
        --split val --split-file runs/tdn-catalysis-v7/split.json --max-systems 60 \
        --out /tmp/aq.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json
from ase import Atoms
from ase.constraints import FixAtoms

from tdn_calc.data.split import load_split, system_of
from tdn_calc.errors import InputError
from tdn_calc.evaluation import (
    MOLECULES_O2_N2,
    adsorption_energy,
    anomalies,
    canonical_site,
    classify_site,
    error_stats,
    metal_layers,
    reference_terms,
)
from tdn_calc.evaluation.anomalies import ADSORBATE_SLAB_MULT, BOND_MULT, bond_set
from tdn_calc.evaluation.flagging import (
    auroc,
    calibrate,
    calibrate_rule,
    flag_rows,
    is_bad,
    rates,
    rates_rule,
    row_scores,
    targets_met,
)
from tdn_calc.evaluation.sites import DESORBED, DESORBED_HEIGHT, LAYER_TOLERANCE
from tdn_calc.slab import fixed_mask

TARGET_ADS_EV = 0.05  # eV, median |d_teacher| target and the per-system tolerance counted
TARGET_SITE_FRACTION = 0.90
SCHEME = MOLECULES_O2_N2
NAMED_FACETS = ("111", "0001", "100", "110")  # facets classify_site has names for
SITE_TOLERANCE = 0.5  # Å, the generic rule: anchors this close laterally match
MAP_TOLERANCE = 0.6  # Å, a translation maps a start-slab atom onto another this close
CONTACT_WINDOW = 1.3  # x the nearest slab atom: contact candidates of a site description
GROUPINGS = ("facet", "metal", "family")
#: how many more teacher steps an unconverged stored teacher relaxation may take here
TEACHER_CONTINUE_STEPS = 300
#: eV: a relaxation run again by ``--rescore`` must end this close to the recorded energy
RESCORE_TOLERANCE_EV = 1e-3
#: the row fields ``--rescore`` measures anew (:meth:`Evaluator.checks_at_minimum`, less the
#: teacher's interior-force ones): dropped first, so none survives from the earlier run
RESCORED_FIELDS = ("committee_force_max", "committee_force_max_by_element", "uncertainty_max",
                   "uncertainty_max_by_element", "n_uncertain_atoms", "uncertain",
                   "adsorbate_curvature", "curvature_calls")
MISS_FIELDS = (
    "label",
    "start_site",
    "start_site_found",
    "teacher_site",
    "tdn_site",
    "d_teacher",
    "teacher_converged",
    "teacher_anomalies",
    "tdn_anomalies",
)


# ---------------------------------------------------------------- records
def facet_of(rec: dict[str, Any]) -> str:
    """The facet of a trajectory record: its ``facet`` field, else read off a label such
    as ``Pt111/CO/fcc/r0`` (the first recipe's, all 111)."""
    if rec.get("facet"):
        return str(rec["facet"])
    m = re.match(r"^[A-Z][a-z]?(\d{3,4})", str(rec.get("label", "")))
    return m.group(1) if m else "?"


def adsorbate_names(rec: dict[str, Any]) -> list[str]:
    """The adsorbates of a record (``"CO+H"`` -> ``["CO", "H"]``), in the order placed."""
    return [a for a in str(rec.get("adsorbate") or "").split("+") if a]


def family_of(rec: dict[str, Any]) -> str:
    """The adsorbate family of a record: its ``family`` field, else the library's family of
    its (first) adsorbate."""
    if rec.get("family"):
        return str(rec["family"])
    from tdn_calc.datagen.catalysis.adsorbates import get_adsorbate

    names = adsorbate_names(rec)
    return get_adsorbate(names[0]).family if names else "?"


def templates(rec: dict[str, Any]) -> list[Atoms]:
    """The adsorbates' templates, binding atom first (as the builders append them)."""
    from tdn_calc.datagen.catalysis.adsorbates import get_adsorbate

    return [get_adsorbate(a).template() for a in adsorbate_names(rec)]


def describe(rec: dict[str, Any]) -> dict[str, Any]:
    """The fields of a system every row carries (refused and failed ones too)."""
    return {
        "label": rec["label"],
        "metal": rec.get("metal", ""),
        "facet": facet_of(rec),
        "family": family_of(rec),
        "adsorbate": rec.get("adsorbate", ""),
        "alloy": rec.get("alloy", ""),
        "dopant": rec.get("dopant", ""),
        "start_site": "+".join(_canonical(s) for s in str(rec.get("site", "")).split("+")),
    }


def _canonical(site: str) -> str:
    """The vocabulary's name of a data-set site (``top`` -> ``ontop``), else as it is
    (``step_bridge``, ``random``, ``dopant``)."""
    try:
        return canonical_site(site)
    except InputError:
        return site


# ---------------------------------------------------------------- sampling
def stratified_sample(
    labels: Sequence[str], meta: dict[str, dict], n: int | None, seed: int = 0
) -> list[str]:
    """``n`` of ``labels`` (all when ``n`` is None or not smaller), in a balanced order:
    strata facet x family are taken in turn (each stratum once before any twice), each time
    the one whose facet and family have been drawn least, ties broken by a ``seed``-ed random
    key; inside a stratum the system of the least-drawn metal, ties by a seeded shuffle."""
    if n is None or n >= len(labels):
        return list(labels)
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[str]] = {}
    for label in sorted(labels):
        rec = meta[label]
        groups.setdefault((facet_of(rec), family_of(rec)), []).append(label)
    keys = sorted(groups)
    tie = dict(zip(keys, rng.random(len(keys)), strict=True))
    for k in keys:
        groups[k] = [groups[k][i] for i in rng.permutation(len(groups[k]))]
    taken: Counter = Counter()
    drawn: dict[str, Counter] = {"facet": Counter(), "family": Counter(), "metal": Counter()}
    out: list[str] = []
    while len(out) < max(n, 0):
        k = min(
            (k for k in keys if groups[k]),
            key=lambda k: (taken[k], drawn["facet"][k[0]] + drawn["family"][k[1]], tie[k]),
        )
        queue = groups[k]
        pick = min(
            range(len(queue)), key=lambda i: (drawn["metal"][meta[queue[i]].get("metal", "")], i)
        )
        label = queue.pop(pick)
        taken[k] += 1
        drawn["facet"][k[0]] += 1
        drawn["family"][k[1]] += 1
        drawn["metal"][meta[label].get("metal", "")] += 1
        out.append(label)
    return out


# ---------------------------------------------------------------- references
_SURFACE_KEYS = ("metal", "facet", "size", "alloy", "dopant")


def slab_strain(rec: dict[str, Any]) -> float:
    """The lateral strain of a slab record (``strain``: the coverage2 recipe's strained
    slabs, ``Pt111-3x3x4f2-s-1.5/...``); 0 for the others and records without one."""
    return float(rec.get("strain") or 0.0)


def clean_slab_label(meta: dict[str, dict], rec: dict[str, Any]) -> tuple[str | None, bool]:
    """The clean slab of ``rec``'s surface: converged, no adsorbate, the same metal, facet,
    size, alloy, dopant (fields a record lacks, as in the first recipe, match when both
    lack them) and lateral strain (a missing one is 0: a strained slab's reference is the
    clean slab at the same strain, never the unstrained one); of those with the same number
    of fixed layers, else the nearest, the lowest teacher energy. ``(label or None, fixed
    layers match)``."""
    strain = slab_strain(rec)
    found = [
        r
        for r in meta.values()
        if r.get("kind") == "slab"
        and not r.get("adsorbate")
        and r.get("converged")
        and all(r.get(k) == rec.get(k) for k in _SURFACE_KEYS)
        and abs(slab_strain(r) - strain) < 1e-9
    ]
    if not found:
        return None, False

    def fixed_gap(r: dict[str, Any]) -> int:
        return abs(int(r.get("fixed_layers") or 0) - int(rec.get("fixed_layers") or 0))

    best = min(found, key=lambda r: (fixed_gap(r), r["final_energy"]))
    return best["label"], fixed_gap(best) == 0


def gas_label(meta: dict[str, dict], gas: str) -> str | None:
    """The converged gas trajectory of molecule ``gas`` (``gas/CO/r0`` or ``molecule/CO/r0``)
    with the lowest teacher energy, or None."""
    found = [
        r
        for r in meta.values()
        if r.get("kind") == "gas" and r.get("adsorbate") == gas and r.get("converged")
    ]
    return min(found, key=lambda r: r["final_energy"])["label"] if found else None


def adsorbate_terms(rec: dict[str, Any]) -> dict[str, float]:
    """Gas references ``{gas: coefficient}`` of the adsorbates of ``rec`` (summed)."""
    terms: Counter = Counter()
    for t in templates(rec):
        terms.update(reference_terms(t, SCHEME))
    return {g: float(c) for g, c in terms.items() if abs(c) > 1e-12}


# ---------------------------------------------------------------- sites and states
def _ab(atoms: Atoms) -> np.ndarray:
    """``(2, 2)`` in-plane cell, columns a and b."""
    cell = atoms.cell.array
    return np.array([cell[0, :2], cell[1, :2]]).T


def _mic(dxy: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """In-plane displacements ``(..., 2)`` to their minimum images."""
    frac = np.einsum("ij,...j->...i", np.linalg.inv(ab), dxy)
    return np.einsum("ij,...j->...i", ab, frac - np.round(frac))


def top_heights(atoms: Atoms, n_slab: int, layers: np.ndarray) -> np.ndarray:
    """Heights (Å, :func:`tdn_calc.slab.surface_heights`) of all atoms above the mean top
    layer of the slab (its first ``n_slab`` atoms; ``layers`` from the start)."""
    from tdn_calc.slab import surface_heights

    h = surface_heights(atoms)
    return h - h[:n_slab][layers == layers.max()].mean()


def surface_translations(start: Atoms, n_slab: int) -> np.ndarray:
    """``(k, 2)`` in-plane shifts (Å) between top-layer atoms of the start slab that map
    every slab atom onto one of the same element, laterally within :data:`MAP_TOLERANCE`
    and in height within half of it: the symmetry translations of the surface, zero
    included (each the mean of its matched atom shifts, so the start's random
    perturbations average out)."""
    from tdn_calc.slab import layer_indices, surface_heights

    xy, z = start.positions[:n_slab, :2], start.numbers[:n_slab]
    h = surface_heights(start)[:n_slab]
    layers = layer_indices(h, LAYER_TOLERANCE)
    top = np.flatnonzero(layers == layers.max())
    ab = _ab(start)
    same = (z[:, None] == z[None, :]) & (np.abs(h[:, None] - h[None, :]) < MAP_TOLERANCE / 2)
    out = []
    for j in top[z[top] == z[top[0]]]:
        t = _mic(xy[j] - xy[top[0]], ab)
        # [k, m]: shift of atom k onto atom m minus t, minimum image (a shift of half the
        # cell is the same either way round)
        rest = _mic(xy[None, :, :] - xy[:, None, :] - t, ab)
        d = np.linalg.norm(rest, axis=-1)
        d[~same] = np.inf
        nearest = np.argmin(d, axis=1)
        if np.all(d[np.arange(len(xy)), nearest] < MAP_TOLERANCE):
            out.append(t + rest[np.arange(len(xy)), nearest].mean(axis=0))
    return np.array(out).reshape(-1, 2)


def same_place(
    a: Atoms,
    b: Atoms,
    anchors: Sequence[int],
    n_slab: int,
    layers: np.ndarray,
    translations: np.ndarray,
) -> bool:
    """The generic site rule: each anchor desorbed (more than ``DESORBED_HEIGHT`` above the
    top layer) in both ``a`` and ``b`` or in neither, and the bound ones of ``b`` within
    :data:`SITE_TOLERANCE` laterally (minimum image) of those of ``a`` after one of the
    surface ``translations`` (heights are free, as for the named sites)."""
    idx = list(anchors)
    up_a = top_heights(a, n_slab, layers)[idx] > DESORBED_HEIGHT
    up_b = top_heights(b, n_slab, layers)[idx] > DESORBED_HEIGHT
    if np.any(up_a != up_b):
        return False
    if np.all(up_a):
        return True
    bound = [k for k, up in zip(idx, up_a, strict=True) if not up]
    dxy = b.positions[bound, :2] - a.positions[bound, :2]
    d = np.linalg.norm(_mic(dxy[None, :, :] - translations[:, None, :], _ab(a)), axis=-1)
    return bool(np.any(np.all(d < SITE_TOLERANCE, axis=1)))


def contact_site(atoms: Atoms, anchor: int, n_slab: int, layers: np.ndarray) -> str:
    """A facet-independent description of the site of ``anchor``: its contact atoms, the
    nearest slab atoms up to the largest gap in distance among those within
    :data:`CONTACT_WINDOW` x the nearest, as ``3-fold[Pt0,Pt0,Pt1]`` (element and row or
    layer counted from the top), or ``desorbed``."""
    if top_heights(atoms, n_slab, layers)[anchor] > DESORBED_HEIGHT:
        return DESORBED
    d = atoms.get_distances(anchor, np.arange(n_slab), mic=True)
    order = np.argsort(d)
    ds = d[order]
    k = max(1, int(np.sum(ds <= CONTACT_WINDOW * ds[0])))
    if k < len(ds):
        k = int(np.argmax(ds[1 : k + 1] / ds[:k])) + 1
    symbols = atoms.get_chemical_symbols()
    top = layers.max()
    names = sorted(f"{symbols[j]}{top - layers[j]}" for j in order[:k])
    return f"{k}-fold[{','.join(names)}]"


def site_names(
    minima: dict[str, Atoms], anchors: Sequence[int], n_slab: int, layers: np.ndarray, named: bool
) -> dict[str, str]:
    """The site of each anchor in each structure of ``minima``, ``+``-joined: the library
    classifier's name (``named``) or :func:`contact_site`'s description."""
    mask = np.arange(len(next(iter(minima.values())))) < n_slab
    out = {}
    for who, atoms in minima.items():
        parts = [
            classify_site(atoms, a, mask, layers)[0]
            if named
            else contact_site(atoms, a, n_slab, layers)
            for a in anchors
        ]
        out[who] = "+".join(parts)
    return out


def state(atoms: Atoms, n_slab: int, groups: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The bonding state of the adsorbates (index ``groups``) on the slab (first ``n_slab``
    atoms): each adsorbate bound to the slab or not (contact < 1.5 x covalent radii) and the
    bonds among adsorbate atoms (< 1.2 x), as :mod:`tdn_calc.evaluation.anomalies` counts
    them."""
    ads = {k for g in groups for k in g}
    inside = sorted(p for p in bond_set(atoms, BOND_MULT) if p[0] in ads and p[1] in ads)
    contacts = bond_set(atoms, ADSORBATE_SLAB_MULT)
    bound = [
        any((i in g and j < n_slab) or (j in g and i < n_slab) for i, j in contacts)
        for g in map(set, groups)
    ]
    return {"bound": bound, "bonds": [list(p) for p in inside]}


# ---------------------------------------------------------------- data
def frame_atoms(dataset, index: int, fixed: list[int]) -> Atoms:
    """Frame ``index`` of an :class:`~tdn_calc.data.dataset.H5Dataset` as Atoms, with
    ``FixAtoms`` on the ``fixed`` indices."""
    from tdn_calc.data.dataset import sample_atoms

    atoms = sample_atoms(dataset[index])
    if fixed:
        atoms.set_constraint(FixAtoms(indices=fixed))
    return atoms


def relax_ends(dataset, label: str) -> tuple[int, int]:
    """Frame indices of the first (start) and last (teacher minimum) relaxation frames of
    trajectory ``label``."""
    from tdn_calc.data.frames import FrameKind

    idx = dataset.frames_of([label])
    relax = idx[dataset.frame_kind[idx] == FrameKind.RELAX]
    if relax.size == 0:
        raise InputError(f"trajectory {label!r} has no relaxation frames in {dataset.path}")
    return int(relax[0]), int(relax[-1])


@dataclass
class Reference:
    """A clean slab or gas molecule: teacher and TDN minimum energies (eV)."""

    label: str
    teacher_energy: float
    tdn_energy: float
    tdn_converged: bool
    tdn_relax_s: float


# ---------------------------------------------------------------- evaluation
class Evaluator:
    """Relaxes with the TDN calculator, evaluates with the teacher, caches references.

    ``elements``: atomic numbers the model covers (None: all); a system with others is
    refused. ``recompute_teacher``: the teacher's energies at its own minima are computed
    again (a teacher other than the data set's), not read from the data.
    """

    def __init__(
        self,
        dataset,
        meta: dict[str, dict],
        calc,
        teacher,
        relax_kwargs: dict,
        elements: Sequence[int] | None = None,
        recompute_teacher: bool = False,
        second=None,
        continue_teacher: bool = True,
        curvature_threshold: float | None = None,
    ):
        self.dataset, self.meta, self.calc, self.teacher = dataset, meta, calc, teacher
        self.second = second  # another model: a committee of two, evaluated at the minimum
        # the adsorbate's softest mode at the minimum, by a plain calculator of the model
        from tdn_calc.calculator import calculator_on_model_device
        from tdn_calc.soft_modes import threshold_for_loaded_model

        model = getattr(calc, "model", None)
        self.plain = None if model is None else calculator_on_model_device(
            model, extrapolation=False, uncertainty=False)
        self.curvature_threshold = curvature_threshold if curvature_threshold is not None \
            else None if model is None else threshold_for_loaded_model(model)
        self.relax_kwargs = relax_kwargs
        self.elements = None if elements is None else {int(z) for z in elements}
        self.recompute_teacher = recompute_teacher
        self.continue_teacher = continue_teacher
        self._continued: dict[str, Atoms] = {}
        self.references: dict[str, Reference] = {}

    def _relax(self, label: str) -> tuple[Any, Atoms, Atoms]:
        """TDN relaxation of ``label``'s start: ``(RelaxResult, start, teacher minimum)``."""
        from tdn_calc.relax import relax

        start, teacher_min = self._ends(label)
        result = relax(start, self.calc, warn=False, **self.relax_kwargs)
        return result, start, teacher_min

    def _ends(self, label: str, continued: bool = True) -> tuple[Atoms, Atoms]:
        first, last = relax_ends(self.dataset, label)
        fixed = self.meta[label]["fixed_atoms"]
        start, teacher_min = (
            frame_atoms(self.dataset, first, fixed),
            frame_atoms(self.dataset, last, fixed),
        )
        teacher_min.info["stored_energy"] = float(self.dataset.energy[last])
        if continued and self.continue_teacher and not self.meta[label].get("converged", True):
            teacher_min = self._continued_minimum(label, teacher_min)
        return start, teacher_min

    def _continued_minimum(self, label: str, stopped: Atoms) -> Atoms:
        """The teacher's own relaxation of ``label``, which the data builder stopped at its
        step cap short of ``fmax``, continued by the teacher to ``fmax`` (same optimizer, at
        most :data:`TEACHER_CONTINUE_STEPS` more steps; once per label): an unconverged end
        is no minimum to land in. ``info``: ``stored_energy`` (the teacher's energy there)
        and ``teacher_continued_steps``."""
        if label not in self._continued:
            from tdn_calc.relax import relax

            result = relax(stopped, self.teacher, fmax=self.relax_kwargs["fmax"],
                           steps=TEACHER_CONTINUE_STEPS,
                           optimizer=self.relax_kwargs["optimizer"], warn=False)
            done = result.atoms.copy()
            done.info.update(stored_energy=float(result.energy),
                             teacher_continued_steps=int(result.n_steps),
                             teacher_continued_converged=bool(result.converged))
            self._continued[label] = done
        return self._continued[label].copy()

    def _teacher_energy(self, atoms: Atoms) -> float:
        """The teacher's energy at its own minimum ``atoms``: stored, or computed again."""
        if not self.recompute_teacher:
            return float(atoms.info["stored_energy"])
        at = atoms.copy()
        at.calc = self.teacher
        return float(at.get_potential_energy())

    def reference(self, label: str) -> Reference:
        if label not in self.references:
            result, _, teacher_min = self._relax(label)
            self.references[label] = Reference(
                label,
                self._teacher_energy(teacher_min),
                result.energy,
                result.converged,
                result.wall_time,
            )
        return self.references[label]

    def teacher_check(self, label: str) -> dict[str, Any]:
        """The teacher's energy of the stored teacher minimum of ``label`` against the stored
        one (eV): a different teacher version or precision shows up here."""
        teacher_min = self._ends(label, continued=False)[1]  # the data as stored
        teacher_min.calc = self.teacher
        stored = float(teacher_min.info["stored_energy"])
        energy = float(teacher_min.get_potential_energy())
        return {"label": label, "stored": stored, "recomputed": energy, "diff": energy - stored}

    def missing_elements(self, label: str, terms: dict[str, float]) -> list[str]:
        """Elements of ``label`` (its atoms and gas references) the model lacks."""
        from ase.build import molecule
        from ase.data import chemical_symbols

        if self.elements is None:
            return []
        first, _ = relax_ends(self.dataset, label)
        numbers = set(frame_atoms(self.dataset, first, []).numbers.tolist())
        for g in terms:
            numbers |= set(molecule(g).numbers.tolist())
        return [chemical_symbols[z] for z in sorted(numbers - self.elements)]

    def checks_at_minimum(self, atoms: Atoms, teacher_forces: np.ndarray | None,
                          converged: bool = True) -> dict[str, Any]:
        """At the TDN minimum ``atoms``: ``n_layers`` and ``interior_force_error_max``
        (eV/Å, the largest |F_TDN - F_teacher| on free metal atoms below the top layer); the
        uncertainty as ``tdn-relax`` computes it at a minimum: ``uncertainty_max`` (the
        largest per-atom chemistry-novelty score), with a committee partner
        (:mod:`tdn_calc.committee`: the model card's, or ``--second-model``)
        ``committee_force_max`` (eV/Å, the largest force difference of the two; by element
        in ``committee_force_max_by_element``, the novelty score too),
        ``adsorbate_curvature`` (eV/Å², the adsorbate's softest mode, :mod:`tdn_calc.soft_modes`;
        recorded also without a threshold, then it never flags; as in ``tdn-relax``, only
        where the TDN relaxation ``converged``), and ``n_uncertain_atoms``
        and ``uncertain`` (any atom flagged, :func:`~tdn_calc.uncertainty.uncertain_atoms`);
        none without a novelty summary. ``teacher_forces`` ``None``: no interior-force
        fields (the rescoring of :meth:`rescored`, which keeps the recorded ones)."""
        from tdn_calc.committee import ARRAY_KEY as COMMITTEE_ARRAY
        from tdn_calc.committee import add_committee_scores
        from tdn_calc.soft_modes import ARRAY_KEY as CURVATURE_ARRAY
        from tdn_calc.soft_modes import add_curvature_scores
        from tdn_calc.uncertainty import uncertain_atoms

        work = atoms.copy()
        work.calc = self.calc
        forces = work.get_forces()  # the scores come with every call
        scores = dict(self.calc.results)
        out: dict[str, Any] = ({} if teacher_forces is None
                               else interior_force_error(atoms, forces, teacher_forces))
        committee_threshold = add_committee_scores(scores, atoms, forces, self.second)
        if committee_threshold is not None:
            out["committee_force_max"] = float(scores[COMMITTEE_ARRAY].max())
            out["committee_force_max_by_element"] = max_by_element(
                atoms, scores[COMMITTEE_ARRAY])
        curvature_threshold = None
        if self.plain is not None and converged:
            curvature_threshold = add_curvature_scores(
                scores, atoms, self.plain,
                -math.inf if self.curvature_threshold is None else self.curvature_threshold)
        if curvature_threshold is not None:
            out["adsorbate_curvature"] = float(np.nanmin(scores[CURVATURE_ARRAY]))
            # its cost: 6 model calls per adsorbate atom
            out["curvature_calls"] = 6 * int(np.isfinite(scores[CURVATURE_ARRAY]).sum())
        if getattr(self.calc, "novelty", None) is None:
            return out
        flagged = uncertain_atoms(scores, self.calc.uncertainty_threshold, committee_threshold,
                                  curvature_threshold)
        return {**out, "uncertainty_max": float(np.max(scores["uncertainty"])),
                "uncertainty_max_by_element": max_by_element(atoms, scores["uncertainty"]),
                "n_uncertain_atoms": int(flagged.sum()), "uncertain": bool(flagged.any())}

    def rescored(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` of an earlier report of this model with its uncertainty fields (novelty,
        committee partner, soft mode: :meth:`checks_at_minimum`) measured again at the TDN
        minimum, relaxed again from the same start with the same settings: a new partner is
        compared on the same relaxations without the teacher's calls. The relaxation is
        deterministic; its energy must match the row's to :data:`RESCORE_TOLERANCE_EV`, else
        :class:`InputError` (another model, or other settings). The teacher's fields (``bad``,
        energies, forces, interior errors) are kept as they are."""
        from tdn_calc.relax import relax

        start, _ = self._ends(row["label"], continued=False)
        result = relax(start, self.calc, warn=False, **self.relax_kwargs)
        gap = abs(result.energy - row["tdn_energy"])
        if gap > RESCORE_TOLERANCE_EV:
            raise InputError(f"{row['label']}: relaxed again, the model's energy differs from "
                             f"the report's by {gap:.2g} eV: not the model or the settings of "
                             "that report")
        flags = self.checks_at_minimum(result.atoms, None, result.converged)
        kept = {k: v for k, v in row.items() if k not in RESCORED_FIELDS}
        return {**kept, **flags, "tdn_relax_s": result.wall_time, "rescored": True}

    def system(self, label: str) -> dict[str, Any]:
        """One row: energies (eV), errors, states, sites, ``landed``, timings; or a refused
        row (``refused``: True, ``missing_elements``) for elements the model lacks."""
        t_row = time.perf_counter()
        rec = self.meta[label]
        row: dict[str, Any] = describe(rec)
        terms = adsorbate_terms(rec)
        missing = self.missing_elements(label, terms)
        if missing:
            return {
                **row,
                "status": "refused",
                "refused": True,
                "missing_elements": missing,
                "landed": False,
            }
        # references: the data set's own clean slab of this surface and gas molecules
        slab_label, fixed_match = clean_slab_label(self.meta, rec)
        gas_labels = {g: gas_label(self.meta, g) for g in terms}
        slab = self.reference(slab_label) if slab_label else None
        gases = {g: self.reference(lab) for g, lab in gas_labels.items() if lab}
        have_refs = slab is not None and len(gases) == len(terms)

        result, start, teacher_min = self._relax(label)
        t0 = time.perf_counter()
        at_tdn = result.atoms.copy()
        at_tdn.calc = self.teacher
        e_teacher_at_tdn = float(at_tdn.get_potential_energy())
        teacher_forces = at_tdn.get_forces()
        teacher_fmax = float(np.linalg.norm(teacher_forces, axis=1).max())
        sp_s = time.perf_counter() - t0
        e_teacher = self._teacher_energy(teacher_min)
        d_teacher = e_teacher_at_tdn - e_teacher
        flags = self.checks_at_minimum(result.atoms, teacher_forces, result.converged)
        if "uncertainty_max" in flags:
            flags["bad"] = is_bad(teacher_fmax, d_teacher)

        # the adsorbates follow the slab, binding atom first, in the order of the label
        sizes = [len(t) for t in templates(rec)]
        n_slab = len(start) - sum(sizes)
        bounds = np.cumsum([n_slab, *sizes])
        groups = [list(range(int(a), int(b))) for a, b in itertools.pairwise(bounds)]
        anchors = [g[0] for g in groups]
        expected = [t.get_chemical_symbols()[0] for t in templates(rec)]
        if [start.get_chemical_symbols()[a] for a in anchors] != expected:
            raise InputError(f"{label}: atoms {anchors} are not the binding atoms {expected}")
        # layer membership as built, kept for every minimum
        layers = metal_layers(start, np.arange(len(start)) < n_slab)
        minima = {"start": start, "teacher": teacher_min, "tdn": result.atoms}

        named = row["facet"] in NAMED_FACETS
        try:
            sites = site_names(minima, anchors, n_slab, layers, named)
        except InputError:  # e.g. a single metal layer: no names
            named = False
            sites = site_names(minima, anchors, n_slab, layers, named)
        heights = {
            who: float(top_heights(atoms, n_slab, layers)[anchors[0]])
            for who, atoms in minima.items()
        }
        translations = surface_translations(start, n_slab)
        generic = same_place(teacher_min, result.atoms, anchors, n_slab, layers, translations)
        same_named = sites["teacher"] == sites["tdn"] if named else None
        if not named:
            same_site, rule = generic, "generic"
        elif row["alloy"] or row["dopant"]:
            same_site, rule = bool(same_named and generic), "named+generic"
        else:
            same_site, rule = bool(same_named), "named"

        states = {who: state(atoms, n_slab, groups) for who, atoms in minima.items()}
        same_state = states["teacher"] == states["tdn"]
        ads_idx = [k for g in groups for k in g]
        found = {who: anomalies(start, minima[who], ads_idx) for who in ("teacher", "tdn")}
        landed = bool(same_state and same_site and abs(d_teacher) <= TARGET_ADS_EV)

        e_ads: dict[str, float | None] = {"teacher": None, "at_tdn": None, "tdn": None}
        if have_refs:
            t_gas = {g: r.teacher_energy for g, r in gases.items()}
            m_gas = {g: r.tdn_energy for g, r in gases.items()}
            e_ads = {
                "teacher": adsorption_energy(e_teacher, slab.teacher_energy, t_gas, terms),
                "at_tdn": adsorption_energy(e_teacher_at_tdn, slab.teacher_energy, t_gas, terms),
                "tdn": adsorption_energy(result.energy, slab.tdn_energy, m_gas, terms),
            }
        shift = np.linalg.norm(
            _mic(
                result.atoms.positions[anchors[0], :2] - teacher_min.positions[anchors[0], :2],
                _ab(start),
            )
        )
        return {
            **row,
            "status": "evaluated",
            "start_site_found": sites["start"],
            "teacher_converged": bool(rec["converged"]),
            "teacher_n_steps": rec["n_steps"],
            "teacher_continued_steps": teacher_min.info.get("teacher_continued_steps", 0),
            "teacher_continued_converged": teacher_min.info.get("teacher_continued_converged"),
            "tdn_converged": result.converged,
            "tdn_n_steps": result.n_steps,
            "tdn_fmax": result.fmax,
            "tdn_reason": result.reason,
            "teacher_energy": e_teacher,
            "teacher_energy_at_tdn_min": e_teacher_at_tdn,
            "teacher_fmax_at_tdn_min": teacher_fmax,
            "tdn_energy": result.energy,
            "e_ads_teacher": e_ads["teacher"],
            "e_ads_teacher_at_tdn_min": e_ads["at_tdn"],
            "e_ads_tdn": e_ads["tdn"],
            "d_teacher": d_teacher,
            "d_model": None if e_ads["tdn"] is None else e_ads["tdn"] - e_ads["teacher"],
            "teacher_site": sites["teacher"],
            "tdn_site": sites["tdn"],
            "site_rule": rule,
            "same_site": same_site,
            "same_site_named": same_named,
            "same_site_generic": generic,
            "n_surface_translations": len(translations),
            "teacher_state": states["teacher"],
            "tdn_state": states["tdn"],
            "same_state": same_state,
            "teacher_anomalies": found["teacher"],
            "tdn_anomalies": found["tdn"],
            "same_minimum": bool(same_site and same_state and abs(d_teacher) <= TARGET_ADS_EV),
            "landed": landed,
            "teacher_height": heights["teacher"],
            "tdn_height": heights["tdn"],
            "anchor_lateral_shift": float(shift),
            "references": {
                "slab": slab.label if slab else None,
                "slab_fixed_layers_match": fixed_match if slab else None,
                "gas": {g: r.label for g, r in gases.items()},
                "missing_gas": sorted(set(terms) - set(gases)),
                "terms": terms,
                "scheme": SCHEME.name,
            },
            **flags,
            "tdn_relax_s": result.wall_time,
            "teacher_sp_s": sp_s,
            "seconds": time.perf_counter() - t_row,  # with references relaxed the first time
        }


# ---------------------------------------------------------------- summaries
def _fraction(flags: Sequence[Any]) -> float:
    return float(np.mean([bool(f) for f in flags])) if flags else math.nan


def _evaluated(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "error" not in r and not r.get("refused")]


def _numbers(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def group_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Landed fractions (of all ``rows``: refused and failed count as not landed; and of
    the evaluated ones), same site / state, median |d_teacher| and the misses of ``rows``."""
    done = _evaluated(rows)
    d = np.abs(_numbers(done, "d_teacher"))
    n_landed = sum(bool(r.get("landed")) for r in rows)
    return {
        "n": len(rows),
        "n_evaluated": len(done),
        "n_refused": sum(bool(r.get("refused")) for r in rows),
        "n_failed": sum("error" in r for r in rows),
        "n_landed": n_landed,
        "landed_fraction": n_landed / len(rows) if rows else math.nan,
        "landed_fraction_evaluated": n_landed / len(done) if done else math.nan,
        "same_site_fraction": _fraction([r["same_site"] for r in done]),
        "same_state_fraction": _fraction([r.get("same_state", True) for r in done]),
        "median_abs_d_teacher": float(np.median(d)) if d.size else math.nan,
        "misses": [r["label"] for r in done if not r.get("landed")],
    }


def by_group(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """:func:`group_summary` per value of ``key`` (``facet``, ``metal``, ``family``)."""
    values = sorted({str(r.get(key, "?")) for r in rows})
    return {v: group_summary([r for r in rows if str(r.get(key, "?")) == v]) for v in values}


def why_missed(row: dict[str, Any]) -> list[str]:
    """What kept an evaluated row from landing: ``state``, ``site``, ``energy``."""
    out = []
    if not row.get("same_state", True):
        out.append("state")
    if not row["same_site"]:
        out.append("site")
    if abs(row["d_teacher"]) > TARGET_ADS_EV:
        out.append("energy")
    return out


def novelty_subsets(done: list[dict[str, Any]]) -> dict[str, Any]:
    """``d_teacher`` statistics and same-site fraction of the systems never seen in training
    (``unseen``: no replica of the system in the split's training part) and of the others
    (``seen``: another start of the same system was trained on), when rows say which."""
    out: dict[str, Any] = {}
    for name, seen in (("unseen", False), ("seen", True)):
        part = [r for r in done if r.get("system_in_training") is seen]
        out[name] = {
            "n": len(part),
            "d_teacher": error_stats([r["d_teacher"] for r in part], TARGET_ADS_EV),
            "site_fraction_same": _fraction([r["same_site"] for r in part]),
            "landed_fraction": _fraction([r.get("landed") for r in part]),
        }
    return out


def same_or_lower_site(row: dict[str, Any]) -> bool:
    """The TDN minimum is on the teacher's site, or the teacher itself rates it at least the
    tolerance lower than its own minimum (whose relaxation then stopped too early)."""
    return bool(row["same_site"]) or row["d_teacher"] <= -TARGET_ADS_EV


def interior_force_error(atoms: Atoms, forces: np.ndarray, teacher_forces: np.ndarray
                         ) -> dict[str, Any]:
    """``{"n_layers", "interior_force_error_max"}``: metal layers of the slab and the largest
    force error (eV/Å) on its free metal atoms below the top layer (None when it has none)."""
    from tdn_calc.slab import layer_indices, surface_heights

    metal = ~np.isin(atoms.numbers, [1, 6, 7, 8])
    layer = np.full(len(atoms), -1)
    layer[metal] = layer_indices(surface_heights(atoms)[metal])
    inner = metal & ~fixed_mask(atoms) & (layer < layer.max())
    err = np.linalg.norm(np.asarray(forces) - teacher_forces, axis=1)
    return {"n_layers": int(layer.max()) + 1,
            "interior_force_error_max": float(err[inner].max()) if inner.any() else None}


def by_layers(done: list[dict[str, Any]]) -> dict[str, Any]:
    """Per slab thickness: the median and largest interior force error (eV/Å); not (211),
    whose atoms do not stack in flat layers."""
    out = {}
    done = [r for r in done if r.get("facet") != "211"]
    for n in sorted({r["n_layers"] for r in done if r.get("n_layers")}):
        errs = [r["interior_force_error_max"] for r in done
                if r.get("n_layers") == n and r.get("interior_force_error_max") is not None]
        if errs:
            out[str(n)] = {"n": len(errs), "median": float(np.median(errs)),
                           "max": float(np.max(errs)),
                           "within_0.1": float(np.mean(np.array(errs) <= 0.1))}
    return out


def committee_partner(model, name: str | None, threshold: float | None):
    """The committee partner of the run (:class:`tdn_calc.committee.CommitteePartner`):
    ``name`` (``--second-model``) with ``threshold`` (eV/Å; ``None``: the card's when the
    card names the same partner, else infinite: recorded, never flags), else the model
    card's partner (its threshold unless ``threshold``), else ``None``."""
    from tdn_calc.committee import CommitteePartner, partner_for_loaded_model

    card = partner_for_loaded_model(model)
    if name is None:
        if card is not None and threshold is not None:  # a copy: the card's stays as it is
            card = dataclasses.replace(card, force_threshold=threshold)
        return card
    if threshold is None:
        threshold = card.force_threshold if card is not None and card.name == name else math.inf
    return CommitteePartner(name, threshold)


def flagging_summary(done: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How the uncertainty flag separates bad relaxations (teacher fmax at the TDN minimum
    > 0.5 eV/Å or teacher energy > 0.2 eV above its own minimum) from landed ones (the trust
    issue's targets, :mod:`tdn_calc.evaluation.flagging`): at the calculator's threshold
    (``uncertain``), AUROC of the largest per-atom score, and the threshold this set would
    calibrate (choose it on a validation split, report on test). None without scores."""
    rows = flag_rows(done)
    if not rows:
        return None
    scores = np.array([r["uncertainty_max"] for r in rows])
    bad = np.array([bool(r["bad"]) for r in rows])
    flagged = np.array([bool(r["uncertain"]) for r in rows])
    at_model = rates(flagged.astype(float), bad, 0.5)
    calibrated = calibrate(scores, bad)
    return {
        "n_bad": int(bad.sum()),
        "n_landed": int((~bad).sum()),
        "n_neither": sum("uncertainty_max" in r for r in done) - len(rows),
        "at_model_threshold": {**at_model, "targets_met": targets_met(at_model)},
        "auroc": auroc(scores, bad),
        "threshold_this_set": calibrated,
        "at_threshold_this_set": rates(scores, bad, calibrated),
        "missed_bad": [r["label"] for r in rows if r["bad"] and not r["uncertain"]],
        "flagged_landed": [r["label"] for r in rows if not r["bad"] and r["uncertain"]],
        **committee_summary(rows, bad),
        **curvature_summary(rows, bad),
    }


def curvature_summary(rows: list[dict[str, Any]], bad: np.ndarray) -> dict[str, Any]:
    """For the adsorbate's softest curvature at the minimum (:mod:`tdn_calc.soft_modes`,
    flagged *below* its threshold): its AUROC (softer = more suspect) and the threshold this
    set would calibrate alone (eV/Å²); empty when no row records it."""
    (softness,) = row_scores(rows, ["curvature"])
    has = ~np.isnan(softness)  # recorded (a non-finite curvature is +inf softness)
    if not has.any():
        return {}
    softness, bad = softness[has], np.asarray(bad)[has]
    t = calibrate(softness, bad)
    calls = [(r["curvature_calls"], r["tdn_n_steps"] + 1) for r in rows
             if "curvature_calls" in r and "tdn_n_steps" in r]
    cost = {} if not calls else {  # extra model calls against the relaxation's own
        "calls_mean": float(np.mean([c for c, _ in calls])),
        "relaxation_calls_mean": float(np.mean([n for _, n in calls])),
        "extra_fraction": float(sum(c for c, _ in calls) / sum(n for _, n in calls))}
    return {"curvature": {"n_without": int((~has).sum()), **cost, "auroc": auroc(softness, bad),
                          "threshold_this_set": -t,
                          "at_threshold_this_set": rates(softness, bad, t)}}


def committee_summary(rows: list[dict[str, Any]], bad: np.ndarray) -> dict[str, Any]:
    """For the committee partner's force disagreement at the minimum: its AUROC and the
    threshold this set would calibrate alone, and the pair of thresholds this set would
    calibrate for the product's rule (novelty score or disagreement above its threshold,
    :func:`~tdn_calc.evaluation.flagging.calibrate_rule`); empty without a partner."""
    has = np.array(["committee_force_max" in r for r in rows], dtype=bool)
    if not has.any():
        return {}
    rows, bad = [r for r in rows if "committee_force_max" in r], np.asarray(bad)[has]
    gap = np.array([r["committee_force_max"] for r in rows])
    novelty = np.array([r["uncertainty_max"] for r in rows])
    t = calibrate(gap, bad)
    pair = calibrate_rule([novelty, gap], bad)
    return {
        "committee": {"n_without": int((~has).sum()),  # the partner lacks their elements
                      "auroc": auroc(gap, bad), "threshold_this_set": t,
                      "at_threshold_this_set": rates(gap, bad, t),
                      "pair_thresholds_this_set": list(pair),
                      "at_pair_thresholds_this_set": rates_rule([novelty, gap], bad, pair)},
    }


def summarize(rows: list[dict[str, Any]], total: int) -> dict[str, Any]:
    """Summary of evaluated ``rows`` (of ``total`` systems planned): errors, sites, landing
    overall and per facet, metal and family, refusals, misses, timings."""
    done = _evaluated(rows)
    refused = [r for r in rows if r.get("refused")]
    teacher = error_stats([r["d_teacher"] for r in done], TARGET_ADS_EV)
    site_fraction = _fraction([r["same_site"] for r in done])
    overall = group_summary(rows)
    relax_s, sp_s = _numbers(done, "tdn_relax_s"), _numbers(done, "teacher_sp_s")
    seconds = _numbers(done, "seconds")
    return {
        "n_planned": total,
        "n_evaluated": len(done),
        "n_failed": overall["n_failed"],
        "n_refused": len(refused),
        "n_landed": overall["n_landed"],
        "landed_fraction": overall["landed_fraction"],
        "landed_fraction_evaluated": overall["landed_fraction_evaluated"],
        "same_state_fraction": overall["same_state_fraction"],
        "median_abs_d_teacher": overall["median_abs_d_teacher"],
        "n_tdn_converged": sum(bool(r["tdn_converged"]) for r in done),
        "n_teacher_converged": sum(bool(r["teacher_converged"]) for r in done),
        "d_teacher": teacher,
        "d_model": error_stats(_numbers(done, "d_model"), TARGET_ADS_EV),
        "n_without_references": sum(r.get("d_model") is None for r in done),
        "site_fraction_same": site_fraction,
        "site_fraction_same_generic": _fraction([r.get("same_site_generic") for r in done]),
        "by_system_novelty": novelty_subsets(done),
        "site_fraction_same_or_teacher_lower": _fraction([same_or_lower_site(r) for r in done]),
        **{f"by_{key}": by_group(rows, key) for key in GROUPINGS},
        "by_teacher_convergence": {  # an unconverged teacher stopped short of its minimum
            name: group_summary([r for r in done if bool(r["teacher_converged"]) is flag])
            for name, flag in (("converged", True), ("unconverged", False))
        },
        "misses": [
            {**{k: r.get(k) for k in MISS_FIELDS}, "why": why_missed(r)}
            for r in done
            if not r.get("landed")
        ],
        "refused_by_metal": dict(sorted(Counter(r["metal"] for r in refused).items())),
        "refused_elements": sorted({e for r in refused for e in r["missing_elements"]}),
        "failed": [{"label": r["label"], "error": r["error"]} for r in rows if "error" in r],
        "site_mismatches": [
            {k: r[k] for k in ("label", "start_site", "teacher_site", "tdn_site", "d_teacher")}
            for r in done
            if not r["same_site"]
        ],
        "target_ads_met": bool(done) and teacher["median_abs"] <= TARGET_ADS_EV,
        "target_site_met": bool(done) and site_fraction >= TARGET_SITE_FRACTION,
        "flagging": flagging_summary(done),
        "interior_forces_by_layers": by_layers(done),
        "seconds_tdn_relax_mean": float(np.mean(relax_s)) if relax_s else math.nan,
        "seconds_teacher_sp_mean": float(np.mean(sp_s)) if sp_s else math.nan,
        "seconds_per_system_mean": float(np.mean(seconds)) if seconds else math.nan,
    }


def _stats_row(what: str, s: dict[str, Any]) -> str:
    """One markdown table row of :func:`error_stats` output."""
    return (
        f"| {what} | {s['median_abs']:.3f} | {s['mean_abs']:.3f} | {s['max_abs']:.3f} | "
        f"{100 * s['fraction_within']:.0f} % | {s['n']} |"
    )


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f} %"


def _group_table(what: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        f"\n| {what} | systems | landed | landed (evaluated) | same site | same state | "
        "median \\|d_teacher\\| eV | refused | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in groups.items():
        med = g["median_abs_d_teacher"]
        lines.append(
            f"| {name} | {g['n']} | {_pct(g['landed_fraction'])} | "
            f"{_pct(g['landed_fraction_evaluated'])} | {_pct(g['same_site_fraction'])} | "
            f"{_pct(g['same_state_fraction'])} | {'–' if med != med else f'{med:.3f}'} | "
            f"{g['n_refused']} | {g['n_failed']} |"
        )
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """Markdown tables of :func:`summarize`'s output."""
    lines = ["| figure | median | mean | max | within 0.05 eV | n |", "|---|---|---|---|---|---|"]
    for key, what in (
        ("d_teacher", "teacher E at TDN min - at teacher's own min (eV)"),
        ("d_model", "TDN's own E_ads - teacher's own (eV)"),
    ):
        s = summary[key]
        if s.get("n"):
            lines.append(_stats_row(what, s))
    for name, part in summary.get("by_system_novelty", {}).items():
        if part["d_teacher"].get("n"):
            lines.append(
                _stats_row(
                    f"systems {name} in training (other replicas): d_teacher (eV), same site "
                    f"{100 * part['site_fraction_same']:.0f} %",
                    part["d_teacher"],
                )
            )
    n_planned = summary.get("n_planned", summary["n_evaluated"])
    landed = _pct(summary.get("landed_fraction", math.nan))
    landed_done = _pct(summary.get("landed_fraction_evaluated", math.nan))
    lines.append(
        f"\nlanded in the teacher's minimum (same state, same site, |d_teacher| <= "
        f"{TARGET_ADS_EV} eV): {summary.get('n_landed', 0)} of {n_planned} ({landed}; of "
        f"the {summary['n_evaluated']} evaluated {landed_done}); refused "
        f"{summary.get('n_refused', 0)} {summary.get('refused_by_metal', {})}; failed "
        f"{summary['n_failed']}"
    )
    lines.append(
        f"same final site: {_pct(summary['site_fraction_same'])} of "
        f"{summary['n_evaluated']} (target >= {100 * TARGET_SITE_FRACTION:.0f} %); "
        f"same site or one the teacher puts >= {TARGET_ADS_EV} eV lower than its own "
        f"minimum: {_pct(summary['site_fraction_same_or_teacher_lower'])}; "
        f"TDN relaxations converged {summary['n_tdn_converged']}/{summary['n_evaluated']}"
    )
    for key in GROUPINGS:
        if summary.get(f"by_{key}"):
            lines += _group_table(key, summary[f"by_{key}"])
    if summary.get("by_teacher_convergence"):
        lines += _group_table("teacher's relaxation", summary["by_teacher_convergence"])
    misses = summary.get("misses")
    if misses is None:  # a summary without landing figures
        misses = [{**m, "why": ["site"]} for m in summary.get("site_mismatches", [])]
    if misses:
        lines.append("\nmisses:")
    for m in misses:
        found = m.get("start_site_found")
        lines.append(
            f"- {m['label']}: started {m['start_site']}"
            + (f" (found {found})" if found else "")
            + f", teacher {m['teacher_site']}"
            + ("" if m.get("teacher_converged", True) else " (not converged)")
            + f", TDN {m['tdn_site']} "
            f"(d_teacher {m['d_teacher']:+.3f} eV; {', '.join(m['why']) or '?'})"
        )
    for f in summary.get("failed", []):
        lines.append(f"- failed {f['label']}: {f['error']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- selection, output
def adsorbate_systems(
    dataset, meta: dict[str, dict], split: str, split_file: str | None, card: dict
) -> tuple[list[str], str | None]:
    """Sorted labels of the slab+adsorbate trajectories of ``split`` (no clean slab, gas or
    bulk) and the split file used (found as :func:`tdn_calc.train.evaluate.select_frames`
    finds it)."""
    from tdn_calc.train.evaluate import select_frames

    indices, used = select_frames(dataset, split, split_file, card)
    keep = [
        lab
        for lab in dataset.identifiers_of(indices)
        if meta.get(lab, {}).get("kind") == "slab" and meta[lab].get("adsorbate")
    ]
    return sorted(keep), used


def trained_systems(split_file: str | None) -> set[str] | None:
    """Systems (identifiers without their replica tag) with a trajectory in the training part
    of ``split_file``; None without a split file."""
    if not split_file:
        return None
    return {system_of(i) for i in load_split(split_file).train}


def default_out(model: str) -> Path:
    """``benchmarks/results/adsorption_quality_<tag>.json`` (tag: registry name, or
    ``<dir>-<stem>`` of a checkpoint path, as for the organic relaxation benchmark)."""
    from relax_quality_organic import model_tag

    results = Path(__file__).resolve().parent / "results"
    return results / f"adsorption_quality_{model_tag(model)}.json"


def progress_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return row["error"]
    if row.get("refused"):
        return f"refused (the model has no {', '.join(row['missing_elements'])})"
    d_model = "–" if row["d_model"] is None else f"{row['d_model']:+.3f} eV"
    return (
        f"{'landed' if row['landed'] else 'missed'}: d_teacher {row['d_teacher']:+.3f} eV, "
        f"d_model {d_model}, site {row['teacher_site']}/{row['tdn_site']}"
        f"{'' if row['same_state'] else ', state changed'}, TDN {row['tdn_relax_s']:.1f} s "
        f"({row['tdn_n_steps']} steps), teacher {row['teacher_sp_s']:.1f} s, row "
        f"{row['seconds']:.1f} s"
    )


def max_by_element(atoms: Atoms, values: np.ndarray) -> dict[str, float]:
    """The largest of the per-atom ``values`` ([n_atoms]) on each element of ``atoms``."""
    symbols = np.array(atoms.get_chemical_symbols())
    return {str(e): float(np.max(values[symbols == e])) for e in np.unique(symbols)}


def committee_record(partner) -> dict[str, Any] | None:
    """A report's ``committee``: the partner's name and threshold (eV/Å; None: recorded,
    never flags), or None without a partner."""
    if partner is None:
        return None
    threshold = partner.force_threshold
    return {"model": partner.name,
            "force_threshold": threshold if math.isfinite(threshold) else None}


def rescore(ev: Evaluator, previous: dict[str, Any], info: dict[str, Any], source: str,
            out: Path) -> int:
    """``--rescore``: the report ``previous`` (read from ``source``) with every evaluated row
    measured again by :meth:`Evaluator.rescored` (``ev``'s partner and thresholds), written to
    ``out`` after each row. The model file must be the report's (same sha256)."""
    from tdn_calc.relax.outputs import versions

    if info.get("sha256") != previous["model"].get("sha256"):
        raise InputError(f"--rescore: {source} was made with another model file "
                         f"(sha256 {str(previous['model'].get('sha256'))[:8]}, this --model "
                         f"{str(info.get('sha256'))[:8]})")
    report = {**previous, "rescored_from": str(source), "versions": versions(),
              "committee": committee_record(ev.second),
              "curvature_threshold": ev.curvature_threshold, "rows": []}
    t_start = time.perf_counter()
    for k, row in enumerate(previous["rows"]):
        if row.get("status") == "evaluated":
            row = ev.rescored(row)
        record_row(report, row, ev, out, k, len(previous["rows"]), "seconds_rescore", t_start)
    print(f"wrote {out}")
    return 0


def record_row(report: dict[str, Any], row: dict[str, Any], ev: Evaluator, out: Path, k: int,
               n_rows: int, seconds_key: str, t_start: float) -> None:
    """Add ``row`` (the ``k``-th of ``n_rows``) to ``report``, update its summary, threshold
    and ``seconds_key`` (s since ``t_start``), write it to ``out`` and print a progress
    line: after each system, so a long run keeps what it did."""
    report["rows"].append(row)
    report["summary"] = summarize(report["rows"], n_rows)
    report["uncertainty_threshold"] = getattr(ev.calc, "uncertainty_threshold", None)
    report[seconds_key] = time.perf_counter() - t_start
    write_json(out, report, indent=1, default=float)
    print(f"[{k + 1}/{n_rows}] {row.get('label')}: {progress_line(row)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tdn-catalysis", help="registry name or .safetensors")
    p.add_argument("--data", default="datasets/catalysis2-sevennet0")
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test", "all"),
        help="val to choose a model, test to report one",
    )
    p.add_argument(
        "--split-file",
        default=None,
        help="default: the model card's, else split-seed42.json beside the data",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="teacher of the single points (tdn "
        "teachers list); default: the data set's own (build_config.json), else "
        "sevenn-0. Another one than the data's also recomputes its own minima",
    )
    p.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--optimizer", default=None, help="default: the data builder's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--max-systems",
        type=int,
        default=None,
        help="a stratified sample (facet x family) of this many systems",
    )
    p.add_argument("--seed", type=int, default=0, help="of the stratified sample")
    p.add_argument("--systems", default=None, help="comma-separated labels (default: all)")
    p.add_argument(
        "--uncertainty",
        default=None,
        help="chemistry-novelty summary (JSON) for a model file without a registered one; "
        "rows then record the scores and the summary their flagging figures",
    )
    p.add_argument("--uncertainty-threshold", type=float, default=None,
                   help="default: the summary's registered threshold, else 1.0")
    p.add_argument("--second-model", default=None,
                   help="committee partner (name or file) instead of the model card's: rows "
                   "record the largest force difference of the two at each TDN minimum")
    p.add_argument("--stored-teacher-ends", action="store_true",
                   help="judge against the stored teacher relaxations as they are, also those "
                   "the data builder stopped at its step cap (default: the teacher continues "
                   "those to --fmax first)")
    p.add_argument("--committee-threshold", type=float, default=None,
                   help="eV/Å; default: the card's, else none (recorded, never flags)")
    p.add_argument("--curvature-threshold", type=float, default=None,
                   help="eV/Å², the adsorbate's softest mode below it flags (tdn_calc."
                   "soft_modes); default: the card's, else none (recorded, never flags)")
    p.add_argument("--rescore", default=None, metavar="REPORT",
                   help="an earlier report of the same --model file: relax its evaluated "
                   "systems again (its data and settings) and measure the uncertainty fields "
                   "anew, e.g. with another --second-model, keeping the teacher's figures "
                   "(no teacher calls); --split, --systems and the sample are the report's")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    previous = None
    if args.rescore:
        previous = json.loads(Path(args.rescore).read_text(encoding="utf-8"))
        args.data, args.split = previous["data"], previous["split"]
        args.split_file, args.systems = previous["split_file"], None
        args.device, args.dtype = previous["model"]["device"], previous["model"]["dtype"]

    import torch

    from tdn_calc.calculator import TDNCalculator
    from tdn_calc.data.dataset import H5Dataset
    from tdn_calc.datagen.catalysis.build import read_metadata
    from tdn_calc.relax.inputs import load_job_model
    from tdn_calc.relax.outputs import versions
    from tdn_calc.teachers import canonical_teacher_name, get_teacher

    torch.set_num_threads(args.threads)
    recipe_path = Path(args.data) / "build_config.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.exists() else {}
    model, info = load_job_model(args.model, [], args.device, args.dtype)
    dataset = H5Dataset(args.data)
    present = set(dataset.identifiers)  # a shard still being written is not readable yet
    meta = {label: m for label, m in read_metadata(args.data).items() if label in present}
    labels, used_split = adsorbate_systems(
        dataset, meta, args.split, args.split_file, getattr(model, "card", {}) or {}
    )
    n_split = len(labels)
    if args.systems:
        wanted = args.systems.split(",")
        unknown = sorted(set(wanted) - set(labels))
        if unknown:
            raise InputError(f"{unknown} are not slab+adsorbate systems of the {args.split} split")
        labels = wanted
    labels = stratified_sample(labels, meta, args.max_systems, args.seed)
    trained = trained_systems(used_split)
    data_teacher = recipe.get("teacher", "sevenn-0")
    teacher_name = args.teacher or data_teacher
    recompute = canonical_teacher_name(teacher_name) != canonical_teacher_name(data_teacher)
    if recompute:
        print(
            f"teacher {teacher_name} is not the data set's ({data_teacher}): its energies at "
            "the stored minima are computed again, which are not its own minima",
            file=sys.stderr,
        )
    relax_kwargs = {
        "fmax": args.fmax,
        "steps": args.steps,
        "optimizer": args.optimizer or recipe.get("optimizer", "FIRE"),
    } if previous is None else previous["settings"]
    ev = Evaluator(
        dataset,
        meta,
        TDNCalculator(model, uncertainty=args.uncertainty or True,
                      uncertainty_threshold=args.uncertainty_threshold),
        get_teacher(teacher_name, "cpu") if previous is None else None,  # rescore: no teacher
        relax_kwargs,
        elements=model.elements,
        recompute_teacher=recompute,
        continue_teacher=not args.stored_teacher_ends,
        second=committee_partner(model, args.second_model, args.committee_threshold),
        curvature_threshold=args.curvature_threshold,
    )
    out = Path(args.out) if args.out else default_out(args.model)
    if previous is not None:
        return rescore(ev, previous, info, args.rescore, out)
    report: dict[str, Any] = {
        "benchmark": "adsorption_quality",
        "model": info,
        "data": str(args.data),
        "recipe": recipe.get("recipe", "catalysis"),
        "reference_method": dataset.reference_method,
        "teacher": teacher_name,
        "teacher_recomputes_own_minima": recompute,
        "split": args.split,
        "split_file": used_split,
        "n_systems_in_split": n_split,
        "sample": {"max_systems": args.max_systems, "seed": args.seed, "strata": "facet x family"},
        "settings": relax_kwargs,
        "teacher_minima": "stored" if args.stored_teacher_ends else
        f"stored; unconverged ones continued by the teacher (up to {TEACHER_CONTINUE_STEPS} steps)",
        "uncertainty_threshold": None,  # the calculator's, once its model has loaded
        "committee": committee_record(ev.second),
        "curvature_threshold": ev.curvature_threshold,
        "versions": versions(),
        "scheme": "E_ads = E(slab+ads) - E(clean slab) - "
        "sum_g c_g E(g), tdn_calc.evaluation.reference_terms",
        "reference_scheme": SCHEME.name,
        "landed_rule": "same state, same site, |d_teacher| <= 0.05 eV (module docstring)",
        "rows": [],
    }
    if labels:
        report["teacher_check"] = check = ev.teacher_check(labels[0])
        print(
            f"teacher check on {check['label']}: recomputed - stored = "
            f"{1000 * check['diff']:+.2f} meV",
            flush=True,
        )
    t_start = time.perf_counter()
    for k, label in enumerate(labels):
        try:
            row = ev.system(label)
        except Exception as exc:  # recorded, the run goes on
            row = {
                **describe(meta[label]),
                "status": "failed",
                "landed": False,
                "error": f"{type(exc).__name__}: {exc}",
            }
        if trained is not None:
            row["system_in_training"] = system_of(label) in trained
        report["references"] = {p: vars(r) for p, r in ev.references.items()}
        record_row(report, row, ev, out, k, len(labels), "seconds", t_start)
    if not labels:
        print("no slab+adsorbate systems in this split", file=sys.stderr)
        return 1
    print(markdown(report["summary"]))
    print(f"wrote {out}")
    summary = report["summary"]
    return 0 if summary["target_ads_met"] and summary["target_site_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
