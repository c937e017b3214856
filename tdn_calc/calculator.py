"""`TDNCalculator`: a TDN model as an ASE calculator."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.geometry import wrap_positions
from ase.stress import full_3x3_to_voigt_6_stress

from .atomic_graph import AtomicGraph
from .checkpoint import load_model
from .device import available_memory, resolve_device, resolve_dtype
from .errors import InputError, TDNError
from .graph import arrays_to_graph_with_distances
from .registry import select_model_for
from .uncertainty import ChemistryNovelty, for_loaded_model, uncertain_atoms
from .validation import (
    DEFAULT_MIN_DISTANCE,
    check_finite_positions,
    check_lattice_lengths,
    check_pair_distances,
    validate_structure,
)

#: bytes of estimated need below which the calculator does not ask how much memory is free
_ALWAYS_FITS = 64 * 2**20
#: structures (elements, cell, pbc) whose checks and atomic-numbers tensor are remembered
_RECENT = 8


class TDNCalculator(Calculator):
    """Energy, forces and stress of a TDN model for ``ase.Atoms``.

    Args:
        model: a ``TDNModel``; a checkpoint path; a registered model name or alias; or
            ``None``/``"auto"`` to pick the first registered model that supports the
            elements of the structure (chosen at the first calculation).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
            The device in use is ``calc.device``.
        dtype: ``"float32"`` or ``"float64"``; ``None`` keeps the dtype of a model object and
            uses float32 for a loaded one. A model object is moved to ``device``/``dtype``
            in place.
        min_distance: refuse structures with two atoms closer than this, Å (0 disables).
        manifest: registry manifest used to resolve names (default: the shipped one).
        max_memory: bytes the model may use for one structure (default: 90% of the memory
            available on ``device`` at each calculation). A structure whose estimated need
            (:func:`estimate_memory`) is larger raises :class:`~tdn_calc.errors.InputError`
            before anything is allocated, as does running out of memory in the model.
        compile: run the model through ``torch.compile`` (:meth:`TDNModel.compile_inference`):
            the first call of each kind of structure compiles (seconds to minutes), later
            calls of small structures are up to about twice as fast; any failure falls back
            to eager PyTorch with a one-time warning. Worth it for long MD or many relaxations.
        extrapolation: when the model card holds a training-set summary
            (:mod:`tdn_calc.extrapolation`), also compute per-atom extrapolation scores
            (one extra forward pass without gradients).
        uncertainty: per-atom chemistry-novelty scores (:mod:`tdn_calc.uncertainty`):
            ``True`` uses the registered model's summary (manifest ``"uncertainty"``; a
            checkpoint path with a registered model's sha256 counts as that model; none for a
            model object), ``False`` disables them, or give a
            :class:`~tdn_calc.uncertainty.ChemistryNovelty` or the path of its JSON.
        uncertainty_threshold: the score above which an atom is uncertain; default: the
            registered model's (its manifest ``"uncertainty"`` record), or 1.0 for a summary
            given explicitly. The one in use is ``calc.uncertainty_threshold``.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator` (``label``, ...).

    Results (float64): ``energy``/``free_energy`` (eV), ``energies`` ``[n_atoms]`` (eV),
    ``forces`` ``[n_atoms, 3]`` (eV/Å) and, for cells periodic in all three directions,
    ``stress`` as Voigt ``(xx, yy, zz, yz, xz, xy)`` in eV/Å^3. Forces and stress are exact
    derivatives of the energy. Bad structures raise :class:`~tdn_calc.errors.InputError`.
    With a training-set summary in the model card: ``extrapolation`` ``[n_atoms]`` (score > 1:
    the atom's environment lies outside 99.9% of the training atoms) and
    ``extrapolation_too_close`` ``[n_atoms]`` bool (closer to a neighbour than any pair of
    those elements in training). With a chemistry-novelty summary: ``uncertainty``
    ``[n_atoms]`` (score > ``calc.uncertainty_threshold``: the atom's neighbour chemistry is
    unlike any training atom's; the model's numbers there are untested). With either score:
    ``uncertain`` ``[n_atoms]`` bool, any of the three conditions.
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")

    def __init__(
        self,
        model: torch.nn.Module | str | os.PathLike | None = "auto",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        min_distance: float = DEFAULT_MIN_DISTANCE,
        manifest: str | os.PathLike | None = None,
        max_memory: int | None = None,
        extrapolation: bool = True,
        compile: bool = False,
        uncertainty: bool | str | os.PathLike | ChemistryNovelty = True,
        uncertainty_threshold: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.compile = bool(compile)
        self.extrapolation = bool(extrapolation)
        self._uncertainty_wanted = uncertainty is True
        self._threshold_given = uncertainty_threshold
        self.novelty: ChemistryNovelty | None = None
        self.uncertainty_threshold: float | None = uncertainty_threshold
        if isinstance(uncertainty, ChemistryNovelty):
            self.novelty = uncertainty
        elif uncertainty not in (True, False, None):
            self.novelty = ChemistryNovelty.load(uncertainty)
        if self.novelty is not None and self.uncertainty_threshold is None:
            self.uncertainty_threshold = 1.0
        self._distribution: tuple[int, object] | None = None
        self.device = resolve_device(device)
        self.min_distance = float(min_distance)
        self.max_memory = max_memory
        self._manifest = manifest
        self._auto = model is None or (isinstance(model, str) and model.lower() == "auto")
        self.model: torch.nn.Module | None = None
        self.model_name: str | None = None
        if isinstance(model, torch.nn.Module):
            self.dtype = resolve_dtype(dtype) if dtype else next(model.parameters()).dtype
            self.model = model.to(device=self.device, dtype=self.dtype).eval()
            self._model_ready()
        else:
            self.dtype = resolve_dtype(dtype or "float32")
            if not self._auto:
                self._load(str(model))

    def _load(self, name_or_path: str) -> None:
        self.model = load_model(
            name_or_path, device=self.device, dtype=self.dtype, manifest=self._manifest
        )
        self.model_name = name_or_path
        self._model_ready()

    def _model_ready(self) -> None:
        """After a model is set: its registered chemistry-novelty summary and threshold
        (:func:`~tdn_calc.uncertainty.for_loaded_model`, the lookup the relaxation job uses
        too; an explicit ``uncertainty_threshold`` wins), then compiled inference if asked."""
        if self._uncertainty_wanted:
            found = for_loaded_model(self.model, self._manifest)
            self.novelty, threshold = found if found else (None, None)
            self.uncertainty_threshold = (threshold if self._threshold_given is None
                                          else self._threshold_given)  # fmt: skip
        if self.compile and hasattr(self.model, "compile_inference"):
            self.model.compile_inference()

    def _model_for(self, numbers: np.ndarray) -> torch.nn.Module:
        """The model to use; in auto mode (re)select one covering ``numbers``."""
        if self._auto and (self.model is None or not set(numbers) <= set(self.model.elements)):
            self._load(select_model_for(np.unique(numbers).tolist(), self._manifest))
        return self.model

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; pbc={atoms.pbc.tolist()}"
            )
        numbers = atoms.numbers
        model = self._model_for(numbers)
        graph, distances = self._graph(atoms, model)
        self._check_memory(graph, model)
        dist = self._training_distribution(model)
        try:
            out = model(
                graph,
                compute_forces=True,
                compute_stress=periodic,
                return_features=dist is not None,
            )
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise InputError(
                f"ran out of memory on {self.device} for {len(numbers)} atoms and "
                f"{graph.edge_index.shape[1]} edges ({exc}); use a smaller structure, a "
                "device with more memory, or float32"
            ) from exc
        energy = float(out["energy"][0])
        if not (np.isfinite(energy) and bool(out["forces"].isfinite().all())):
            raise TDNError(
                f"the model returned a non-finite energy ({energy}) or forces for this "
                f"{atoms.get_chemical_formula()} structure; its weights may be corrupt "
                "(check the checkpoint's sha256) or the structure is far outside its training data"
            )
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": _numpy(out["energies"]),
            "forces": _numpy(out["forces"]),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(_numpy(out["stress"][0]))
        if dist is not None:
            from .extrapolation import score_graph

            scores = score_graph(model, dist, graph, out["node_features"], distances)
            self.results["extrapolation"] = scores.scores
            self.results["extrapolation_too_close"] = scores.too_close
        if self.novelty is not None:
            if self.novelty.cutoff > model.cutoff:
                raise InputError(f"the uncertainty summary's cutoff {self.novelty.cutoff} Å "
                                 f"exceeds the model's {model.cutoff} Å")
            full = model.config.max_neighbors is None  # else the graph may miss neighbours
            self.results["uncertainty"] = (self.novelty.score_graph(graph, distances) if full
                                           else self.novelty.score_atoms(atoms))  # fmt: skip
        flags = uncertain_atoms(self.results, self.uncertainty_threshold)
        if flags is not None:
            self.results["uncertain"] = flags

    def _graph(self, atoms: Atoms, model: torch.nn.Module) -> tuple[AtomicGraph, np.ndarray]:
        """Validate ``atoms`` and build its graph and ``[E]`` edge lengths (Å) with one
        neighbour list: when it lists every pair closer than ``min_distance`` (the usual
        case: a cutoff above it and no neighbour cap), the minimum-distance check reads its
        distances instead of building a second list."""
        numbers, pbc, cell = atoms.numbers, atoms.pbc, atoms.cell.array
        shared = model.config.max_neighbors is None and self.min_distance <= model.cutoff
        # the element and cell checks passed for the recent structures (elements, cell, pbc):
        # when only the positions changed (a relaxation, MD), they are skipped and the
        # structure's atomic-numbers tensor is reused, too
        key = (numbers.tobytes(), cell.tobytes(), pbc.tobytes(), self.min_distance, shared,
               self.dtype, self.device)  # fmt: skip
        recent = self.__dict__.setdefault("_recent_structures", {})  # key -> (model, numbers)
        known = recent.get(key)
        if known is not None and known[0] is model:
            check_finite_positions(atoms.positions, numbers)
        else:
            known = None
            validate_structure(
                numbers,
                atoms.positions,
                cell,
                pbc,
                supported_elements=model.elements,
                min_distance=0.0 if shared else self.min_distance,
            )
            if shared and self.min_distance > 0:
                check_lattice_lengths(cell, pbc, self.min_distance)
        graph, distances = arrays_to_graph_with_distances(
            [(numbers, _local_positions(atoms), cell, pbc)],
            model.cutoff,
            dtype=self.dtype,
            device=self.device,
            max_neighbors=model.config.max_neighbors,
        )
        if known is None:
            if len(recent) >= _RECENT:
                del recent[next(iter(recent))]
            recent[key] = (model, graph.atomic_numbers)
        else:
            graph = replace(graph, atomic_numbers=known[1])
        if shared:
            i, j = graph.edge_index.cpu().numpy()
            check_pair_distances(i, j, distances, numbers, self.min_distance)
        return graph, distances

    def _training_distribution(self, model: torch.nn.Module):
        """The model card's training-set summary (parsed once per model), or ``None``."""
        if not self.extrapolation:
            return None
        if self._distribution is None or self._distribution[0] != id(model):
            from .extrapolation import from_card

            self._distribution = (id(model), from_card(getattr(model, "card", None)))
        return self._distribution[1]

    def _check_memory(self, graph: AtomicGraph, model: torch.nn.Module) -> None:
        """Refuse a structure whose estimated memory need exceeds the limit."""
        n_atoms, n_edges = graph.atomic_numbers.shape[0], graph.edge_index.shape[1]
        need = estimate_memory(model.config, n_atoms, n_edges, self.dtype)
        limit = self.max_memory
        if limit is None:
            if need <= _ALWAYS_FITS:  # not worth a system query on every call
                return
            limit = int(0.9 * available_memory(self.device))
        if need > limit:
            raise InputError(
                f"structure too large: {n_atoms} atoms with {n_edges} edges within the "
                f"{model.cutoff} Å cutoff need about {need / 2**30:.2f} GiB for energy and "
                f"forces, more than the {limit / 2**30:.2f} GiB allowed on {self.device}; split "
                "the structure, use a device with more memory, or raise max_memory"
            )


def estimate_memory(config, n_atoms: int, n_edges: int, dtype: torch.dtype) -> int:
    """Rough upper bound (bytes) of the memory of one energy + forces evaluation: per edge
    ``800 + 6 * (lmax + 1)^2 * channels * num_layers`` numbers (fitted to measured peaks of
    several model sizes, 20-45% above them), per atom ten times that of an edge's features."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    features = (config.lmax + 1) ** 2 * config.channels * config.num_layers
    return int(itemsize * (n_edges * (800 + 6 * features) + n_atoms * 10 * features))


def _local_positions(atoms: Atoms) -> np.ndarray:
    """``[n_atoms, 3]`` positions (Å, float64) wrapped into the cell along periodic directions
    and shifted to centre them at the origin: the same interatomic vectors, but small numbers,
    so that a float32 model loses no precision on structures far from the origin."""
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if atoms.pbc.any():  # non-periodic lattice vectors are replaced by orthogonal ones
        cell = np.where(atoms.pbc[:, None], atoms.cell.array, 0.0)
        positions = wrap_positions(positions, cell, pbc=atoms.pbc, eps=0.0)
    return positions - 0.5 * (positions.min(axis=0) + positions.max(axis=0))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def calculator_on_model_device(model: torch.nn.Module, **kwargs) -> TDNCalculator:
    """A :class:`TDNCalculator` of ``model`` on the device the model already sits on (the
    calculator's ``"auto"`` would move a shared model in place, e.g. to the GPU under a job
    that asked for the CPU); ``kwargs`` go to the calculator."""
    return TDNCalculator(model, device=next(model.parameters()).device, **kwargs)
