"""`TDNModel`: energy, forces and stress of batched atomic graphs."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import torch
from e3nn import o3
from torch import nn

from ..atomic_graph import AtomicGraph
from ..errors import TDNError, UnsupportedElementError
from . import fast_inference
from .attention import EdgeGeometry, GraphAttention, gather
from .config import TDNConfig
from .float64_buffers import Float64BufferMixin
from .layers import DegreeLayerNorm, DegreeLinear, FeedForward
from .radial import RadialWeights, polynomial_envelope


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``."""

    def __init__(self, config: TDNConfig) -> None:
        super().__init__()
        self.norm_attention = DegreeLayerNorm(config.lmax, config.channels, config.norm_eps)
        self.attention = GraphAttention(config)
        self.norm_ffn = DegreeLayerNorm(config.lmax, config.channels, config.norm_eps)
        self.ffn = FeedForward(config.lmax, config.channels, config.ffn_multiplier)

    def forward(self, x: torch.Tensor, edges: EdgeGeometry, radial: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm_attention(x), edges, radial)
        return x + self.ffn(self.norm_ffn(x))


class DegreeEmbedding(nn.Module):
    """Initial equivariant features from the neighbourhood: ``[N, C] -> [N, d, C]``.

    ``x_i = W (sum_j Y_ij (w(r_ij) * h_j)) / sqrt(avg_num_neighbors)`` with ``h_j`` the
    element embedding of the neighbour.
    """

    def __init__(self, config: TDNConfig) -> None:
        super().__init__()
        self.linear = DegreeLinear(config.lmax, config.channels, config.channels)
        self.norm = 1.0 / math.sqrt(config.avg_num_neighbors)

    def forward(self, h: torch.Tensor, edges: EdgeGeometry, radial: torch.Tensor) -> torch.Tensor:
        """``h``: ``[N, C]`` element embeddings; ``radial``: ``[E, C]`` radial weights."""
        w = radial * gather(h, edges.neighbour)  # [E, C]
        messages = edges.sh.unsqueeze(-1) * w.unsqueeze(1)  # [E, d, C]
        shape = (h.shape[0], edges.sh.shape[1], h.shape[1])
        summed = torch.zeros(shape, dtype=h.dtype, device=h.device).index_add(
            0, edges.centre, messages
        )
        return self.linear(summed * self.norm)


class TDNModel(Float64BufferMixin):
    """Tensor Decomposition Network interatomic potential.

    The energy is a sum of per-atom energies ``E_i = E0[Z_i] + scale * f(x_i) + shift``;
    forces ``F = -dE/dx`` and stress ``(1/V) dE/d(strain)`` are exact derivatives, so they are
    exactly conservative: from autograd in training, and for inference from the hand-written
    backward pass of :mod:`~tdn_calc.nn.fast_inference` where it applies (same numbers to
    round-off, no autograd graph; ``fast_inference = False`` turns it off).
    """

    #: inference (``training=False``) through :func:`fast_inference.energy_forces` when
    #: :func:`fast_inference.supports` the model; ``False``: always autograd
    fast_inference: bool = True

    def __init__(self, config: TDNConfig) -> None:
        super().__init__()
        self.config = config
        c, lmax = config.channels, config.lmax
        z_to_index = torch.full((119,), -1, dtype=torch.long)
        z_to_index[torch.tensor(config.elements)] = torch.arange(len(config.elements))
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        self.spherical_harmonics = o3.SphericalHarmonics(
            o3.Irreps.spherical_harmonics(lmax), normalize=True, normalization="component"
        )
        self.embedding = nn.Embedding(len(config.elements), c)
        # one radial network serves every layer: [E] -> [E, C + num_layers * 2C]
        self.radial = RadialWeights(
            config.cutoff,
            config.num_radial,
            config.radial_hidden,
            c * (1 + 2 * config.num_layers),
            config.envelope_exponent,
        )
        self.degree_embedding = DegreeEmbedding(config)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.norm_out = DegreeLayerNorm(lmax, c, config.norm_eps)
        self.head = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))
        energies = config.atomic_energies or [0.0] * len(config.elements)
        # float64 whatever the model's dtype: total energies keep ~1e-6 eV resolution
        self.register_float64_buffer("atomic_energies", torch.tensor(energies))
        self.scale = nn.Parameter(torch.tensor(float(config.energy_scale)))
        self.shift = nn.Parameter(torch.tensor(float(config.energy_shift)))

    @property
    def elements(self) -> list[int]:
        return list(self.config.elements)

    @property
    def cutoff(self) -> float:
        return float(self.config.cutoff)

    def _species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """:meth:`species_index`, remembered for the last few ``atomic_numbers`` tensors (the
        calculator passes the same one while a structure's elements stay the same)."""
        recent = self.__dict__.setdefault("_recent_species", {})
        cached = recent.get(id(atomic_numbers))
        if (
            cached is not None
            and cached[0] is atomic_numbers
            and cached[1] == atomic_numbers._version
            and cached[2] is self.z_to_index
        ):
            return cached[3]
        species = self.species_index(atomic_numbers)
        if len(recent) >= 8:
            del recent[next(iter(recent))]
        recent[id(atomic_numbers)] = (atomic_numbers, atomic_numbers._version,
                                      self.z_to_index, species)  # fmt: skip
        return species

    def species_index(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """``[N]`` index into ``config.elements``; raises for elements the model lacks."""
        index = self.z_to_index[atomic_numbers.clamp(0, 118)]
        bad = (index < 0) | (atomic_numbers < 1) | (atomic_numbers > 118)
        if bool(bad.any()):
            z = sorted(set(atomic_numbers[bad].tolist()))
            raise UnsupportedElementError(
                f"atomic numbers {z} are not supported by this model; it knows {self.elements}"
            )
        return index

    def _edge_geometry(
        self, positions, cell, edge_index, shifts, system_idx, periodic: bool
    ) -> EdgeGeometry:
        i, j = edge_index[0], edge_index[1]
        vectors = gather(positions, j) - gather(positions, i)
        if periodic:  # non-periodic graphs have zero shifts: no offsets to add
            vectors = vectors + torch.einsum("ek,ekl->el", shifts, cell[system_idx[i]])
        distance = torch.linalg.vector_norm(vectors, dim=-1)
        sh = self.spherical_harmonics(vectors)
        envelope = polynomial_envelope(distance, self.cutoff, self.config.envelope_exponent)
        return EdgeGeometry(i, j, distance, sh, envelope)

    def node_features(
        self, graph: AtomicGraph, positions=None, cell=None, species=None
    ) -> torch.Tensor:
        """Final normalised features ``[N, d, C]`` (their scalars feed the energy head).
        ``species``: :meth:`species_index` of the graph's atoms when the caller has it."""
        positions = graph.positions if positions is None else positions
        cell = graph.cell if cell is None else cell
        species = self.species_index(graph.atomic_numbers) if species is None else species
        return self._features(positions, cell, species, *_topology(graph))

    def _features(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor,
        system_idx: torch.Tensor,
        periodic: bool,
    ) -> torch.Tensor:
        """:meth:`node_features` on plain tensors (what :meth:`compile_inference` compiles)."""
        edges = self._edge_geometry(positions, cell, edge_index, shifts, system_idx, periodic)
        radial = self.radial(edges.distance, edges.envelope).split(
            [self.config.channels] + [2 * self.config.channels] * self.config.num_layers, dim=-1
        )
        h = self.embedding(species)
        x = self.degree_embedding(h, edges, radial[0])
        x = torch.cat([x[:, :1, :] + h.unsqueeze(1), x[:, 1:, :]], dim=1)
        for block, block_radial in zip(self.blocks, radial[1:], strict=True):
            x = block(x, edges, block_radial)
        return self.norm_out(x)

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        training: bool = False,
        return_features: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energies and their derivatives.

        Returns a dict with ``"energy"`` ``[S]`` eV, ``"energies"`` ``[N]`` eV per atom (both
        float64 whatever the model's dtype: reference energies are added in float64),
        ``"forces"`` ``[N, 3]`` eV/Å (if ``compute_forces``) and ``"stress"`` ``[S, 3, 3]``
        eV/Å^3 (if ``compute_stress``; ASE sign convention, zero for systems without a
        3D cell). ``training=True`` keeps the autograd graph so a force/stress loss can be
        back-propagated. ``return_features=True`` adds ``"node_features"`` ``[N, C]``: the
        last-layer invariant (l = 0) features that feed the energy head, detached.
        """
        species = self._species(graph.atomic_numbers)
        owner, compiled = self.__dict__.get("_compiled_features") or (None, None)
        if owner != id(self):  # a stale copy's compiled network
            compiled = None
        if (
            compiled is None
            and not training
            and (compute_forces or compute_stress)
            and self.fast_inference
            and fast_inference.supports(self)
        ):
            out = fast_inference.energy_forces(
                self, graph, species, compute_stress, return_features
            )
            if not compute_forces:
                del out["forces"]
            return out
        if compiled is not None and not training:
            try:
                return self._evaluate(
                    graph, species, compiled, compute_forces, compute_stress, training,
                    return_features,
                )  # fmt: skip
            except (TDNError, MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as exc:  # any failure of the compiler or its code: go eager
                self.__dict__["_compiled_features"] = None
                warnings.warn(
                    f"compiled inference failed ({type(exc).__name__}: {exc}); this model "
                    "runs eager PyTorch from now on",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self._evaluate(
            graph, species, self._features, compute_forces, compute_stress, training,
            return_features,
        )  # fmt: skip

    def compile_inference(self, enabled: bool = True) -> bool:
        """Run inference (``forward(training=False)``) through ``torch.compile`` of the
        feature network (forward and backward), falling back to eager PyTorch with a one-time
        warning if compiling or running it fails. Training never uses it. The first call
        of each new kind of input (periodic or not, ...) compiles, which takes from seconds
        to minutes; later calls are faster on small structures. Returns whether it is on."""
        self.__dict__["_compiled_features"] = None
        if enabled:
            try:
                compiled = torch.compile(self._features, dynamic=True)

                def features(*args: object) -> torch.Tensor:
                    with _distinct_sizes():
                        return compiled(*args)

                self.__dict__["_compiled_features"] = (id(self), features)
            except Exception as exc:  # no compiler on this platform
                warnings.warn(f"torch.compile unavailable ({exc}); using eager", RuntimeWarning,
                              stacklevel=2)  # fmt: skip
        return self.__dict__["_compiled_features"] is not None

    def _evaluate(
        self,
        graph: AtomicGraph,
        species: torch.Tensor,
        features: Callable[..., torch.Tensor],
        compute_forces: bool,
        compute_stress: bool,
        training: bool,
        return_features: bool,
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward` with the feature network ``features`` (eager or compiled)."""
        positions, cell = graph.positions, graph.cell
        inputs = []
        with torch.enable_grad():
            if compute_forces or compute_stress:
                positions = positions.detach().requires_grad_(True)
                inputs.append(positions)
            if compute_stress:
                strain = torch.zeros_like(cell, requires_grad=True)
                inputs.append(strain)
                deformation = torch.eye(3, dtype=cell.dtype, device=cell.device) + strain
                cell = cell @ deformation
                positions_used = torch.einsum(
                    "ni,nij->nj", positions, deformation[graph.system_idx]
                )
            else:
                positions_used = positions
            x = features(positions_used, cell, species, *_topology(graph))
            raw = self.head(x[:, 0, :]).squeeze(-1)
            learned = (self.scale * raw + self.shift).to(torch.float64)
            energies = self.atomic_energies[species] + learned
            energy = torch.zeros(graph.n_systems, dtype=torch.float64, device=raw.device)
            energy = energy.index_add(0, graph.system_idx, energies)
            out = {"energy": energy, "energies": energies}
            if return_features:
                out["node_features"] = x[:, 0, :].detach()
            if inputs:
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=training, allow_unused=True
                )
                grads = [
                    torch.zeros_like(t) if g is None else g
                    for g, t in zip(grads, inputs, strict=True)
                ]
                if compute_forces:
                    out["forces"] = -grads[0]
                if compute_stress:
                    volume = torch.linalg.det(graph.cell).abs()
                    safe = torch.where(volume > 1e-8, volume, torch.ones_like(volume))
                    stress = grads[-1] / safe.view(-1, 1, 1)
                    out["stress"] = torch.where(
                        (volume > 1e-8).view(-1, 1, 1), stress, torch.zeros_like(stress)
                    )
        if not training:
            out = {k: v.detach() for k, v in out.items()}
        return out


def _topology(graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """The graph's ``(edge_index, shifts, system_idx, periodic)``, as ``_features`` takes them."""
    return graph.edge_index, graph.shifts, graph.system_idx, bool(graph.pbc.any())


def _distinct_sizes() -> contextlib.AbstractContextManager:
    """Compile without "duck sizing": otherwise a first structure of 3 atoms (water) makes the
    compiler assume ``n_atoms == 3`` (the size of a position) and recompile for every other
    size once more. A private switch of torch; without it, only that recompile is lost."""
    try:
        from torch.fx.experimental import _config

        return _config.patch(use_duck_shape=False)
    except (ImportError, AttributeError):
        return contextlib.nullcontext()
