"""A TDN model behind TorchSim's ``ModelInterface`` (``torch-sim-atomistic`` 0.3.x), so that
TorchSim's batched optimizers (FIRE, ...) and integrators run with TDN.

Needs the optional extra: ``pip install "tdn-calc[torchsim]"``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .errors import InputError
from .graph import arrays_to_graph

try:
    from torch_sim.models.interface import ModelInterface
    from torch_sim.state import SimState
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tdn_calc.torchsim needs TorchSim: pip install 'tdn-calc[torchsim]' "
        "(package torch-sim-atomistic)"
    ) from exc


class TDNTorchSimModel(ModelInterface):
    """TDN energies, forces and stresses for a batched TorchSim ``SimState``.

    Args:
        model: a ``TDNModel``, a checkpoint path or a registered model name.
        device: where to run (default: the model's device, or CPU for a loaded one).
        dtype: ``torch.float32`` or ``torch.float64`` (default: the model's dtype; float32
            for a loaded one). The model is cast in place.
        compute_forces: return ``"forces"`` ``[n_atoms, 3]`` eV/Å.
        compute_stress: return ``"stress"`` ``[n_systems, 3, 3]`` eV/Å^3 (ASE/TorchSim sign:
            ``(1/V) dE/dstrain``; zero for structures that are not periodic).

    ``forward(state)`` takes a ``SimState`` (or its dict: ``positions`` ``[n_atoms, 3]`` Å,
    ``cell`` ``[n_systems, 3, 3]`` in TorchSim's column-vector convention, ``pbc`` bool,
    ``atomic_numbers`` ``[n_atoms]``, ``system_idx`` ``[n_atoms]``) and returns ``"energy"``
    ``[n_systems]`` eV (in ``dtype``: TorchSim keeps every state tensor in one dtype), plus
    forces and stress as requested. TorchSim 0.3 has one ``pbc`` flag for the whole state:
    give slabs a vacuum wider than the cutoff and ``pbc=True``.
    """

    def __init__(
        self,
        model: torch.nn.Module | str | os.PathLike,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        compute_forces: bool = True,
        compute_stress: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            from .checkpoint import load_model

            name = str(dtype or torch.float32).removeprefix("torch.")
            model = load_model(str(model), device=str(device or "cpu"), dtype=name)
        param = next(model.parameters())
        self._device = torch.device(device) if device is not None else param.device
        self._dtype = dtype or param.dtype
        if self._dtype not in (torch.float32, torch.float64):
            raise InputError(f"dtype must be torch.float32 or torch.float64, got {self._dtype}")
        self.model = model.to(device=self._device, dtype=self._dtype).eval()
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"

    @property
    def cutoff(self) -> float:
        """Radial cutoff of the model, Å."""
        return self.model.cutoff

    def forward(self, state: SimState | dict, **kwargs) -> dict[str, torch.Tensor]:
        """Energy ``[n_systems]`` eV, forces ``[n_atoms, 3]`` eV/Å, stress
        ``[n_systems, 3, 3]`` eV/Å^3 of every system of ``state`` (not modified)."""
        if isinstance(state, dict):
            state = SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        positions = state.positions.to(self._device, self._dtype)
        numbers = state.atomic_numbers.to(self._device)
        system_idx = state.system_idx.to(self._device)
        cells = state.row_vector_cell.detach().to("cpu", torch.float64).numpy()
        pos_np = positions.detach().to("cpu", torch.float64).numpy()
        z_np, sys_np = numbers.cpu().numpy(), system_idx.cpu().numpy()
        pbc = np.full(3, bool(state.pbc))
        if np.any(np.diff(sys_np) < 0):
            raise InputError("state.system_idx must be sorted (atoms grouped by system)")
        systems = []
        for s in range(state.n_systems):
            mask = sys_np == s
            systems.append((z_np[mask], pos_np[mask], cells[s], pbc))
        graph = arrays_to_graph(systems, self.model.cutoff, dtype=self._dtype,
                                device=self._device,
                                max_neighbors=self.model.config.max_neighbors)  # fmt: skip
        out = self.model(graph, compute_forces=self._compute_forces,
                         compute_stress=self._compute_stress)  # fmt: skip
        result = {"energy": out["energy"].to(self._dtype)}
        if self._compute_forces:
            result["forces"] = out["forces"]
        if self._compute_stress:
            result["stress"] = out["stress"]
        return result

