"""`TDNConfig`: everything needed to rebuild a TDN model, round-trippable through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError

TP_BACKENDS = ("exact", "cp", "e3nn")


@dataclass
class TDNConfig:
    """Architecture of a TDN model.

    Attributes:
        elements: atomic numbers the model supports, sorted ascending.
        lmax: highest spherical-harmonic degree L of node features (``d = (L+1)^2`` components).
        channels: feature channels C per component.
        num_layers: number of attention + feed-forward blocks.
        num_heads: attention heads (must divide ``channels``).
        cutoff: radial cutoff, Å. Energies and forces go smoothly to zero there.
        max_neighbors: keep at most this many nearest neighbours per atom (``None``: all;
            truncation makes the energy discontinuous, so leave it off for relaxations).
        num_radial: number of radial (Bessel) basis functions.
        radial_hidden: hidden width of the radial MLP.
        envelope_exponent: exponent p of the polynomial cutoff envelope.
        tp_backend: tensor product: ``"exact"`` (shared-path CG), ``"cp"`` (CP decomposition)
            or ``"e3nn"`` (e3nn's TensorProduct, reference implementation).
        cp_rank: rank of the CP decomposition (``None``: ``7 L^2``, the paper's choice).
        avg_num_neighbors: normalisation of neighbour sums.
        atomic_energies: per-element reference energies in eV, ordered as ``elements``
            (``None``: zeros).
        energy_scale: initial scale of the per-atom energy head, eV.
        energy_shift: initial shift of the per-atom energy head, eV.
        ffn_multiplier: width of the feed-forward hidden layer, in units of ``channels``.
        direct_forces: add a non-conservative l=1 force head (off by default; forces then
            still come from ``-dE/dx`` unless the caller asks for the direct head).
        norm_eps: floor added to each degree's mean square in the layer norms. Where an
            atom's l >= 1 features vanish by symmetry (perfect bulk metal, the middle layer
            of an odd-layer slab, the C of CH4), a tiny floor turns float32 round-off into
            unit-size features: 1e-5 gave 2,400 eV/Å forces on perfect bulk Pt in float32;
            1e-2 keeps them at the 1e-3 eV/Å level (docs/benchmarks.md).
    """

    elements: list[int]
    lmax: int = 2
    channels: int = 64
    num_layers: int = 3
    num_heads: int = 4
    cutoff: float = 5.0
    max_neighbors: int | None = None
    num_radial: int = 8
    radial_hidden: int = 64
    envelope_exponent: int = 6
    tp_backend: str = "exact"
    cp_rank: int | None = None
    avg_num_neighbors: float = 16.0
    atomic_energies: list[float] | None = None
    energy_scale: float = 1.0
    energy_shift: float = 0.0
    ffn_multiplier: int = 2
    direct_forces: bool = False
    norm_eps: float = 1e-5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.elements = sorted(int(z) for z in self.elements)
        problems = []
        if not self.elements or len(set(self.elements)) != len(self.elements):
            problems.append(f"elements must be non-empty and unique, got {self.elements}")
        if any(not 1 <= z <= 118 for z in self.elements):
            problems.append(f"elements must be atomic numbers 1..118, got {self.elements}")
        if not 0 <= self.lmax <= 6:
            problems.append(f"lmax must be in 0..6, got {self.lmax}")
        if self.channels < 1 or self.num_heads < 1 or self.channels % self.num_heads:
            problems.append(
                f"channels ({self.channels}) must be a positive multiple of num_heads "
                f"({self.num_heads})"
            )
        if self.num_layers < 1:
            problems.append(f"num_layers must be >= 1, got {self.num_layers}")
        if not self.cutoff > 0:
            problems.append(f"cutoff must be > 0 Å, got {self.cutoff}")
        if self.tp_backend not in TP_BACKENDS:
            problems.append(f"tp_backend must be one of {TP_BACKENDS}, got {self.tp_backend!r}")
        if self.cp_rank is not None and self.cp_rank < 1:
            problems.append(f"cp_rank must be >= 1, got {self.cp_rank}")
        if not self.norm_eps > 0:
            problems.append(f"norm_eps must be > 0, got {self.norm_eps}")
        if self.atomic_energies is not None:
            self.atomic_energies = [float(e) for e in self.atomic_energies]
            if len(self.atomic_energies) != len(self.elements):
                problems.append(
                    f"atomic_energies has {len(self.atomic_energies)} entries for "
                    f"{len(self.elements)} elements"
                )
        if self.max_neighbors is not None and self.max_neighbors < 1:
            problems.append(f"max_neighbors must be >= 1 or None, got {self.max_neighbors}")
        if problems:
            raise ConfigError("invalid TDNConfig: " + "; ".join(problems))

    @property
    def resolved_cp_rank(self) -> int:
        """The CP rank in use: ``cp_rank`` or the paper's ``7 L^2`` (at least 1)."""
        return self.cp_rank if self.cp_rank is not None else max(1, 7 * self.lmax**2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TDNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TDNConfig fields {unknown}; known fields: {sorted(known)}")
        if "elements" not in data:
            raise ConfigError("TDNConfig needs 'elements' (a list of atomic numbers)")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TDNConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("model config JSON must be an object")
        return cls.from_dict(data)
