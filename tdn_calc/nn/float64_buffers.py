"""Buffers that stay float64 whatever dtype their module is cast to."""

from __future__ import annotations

import torch
from torch import nn


class Float64BufferMixin(nn.Module):
    """Adds :meth:`register_float64_buffer`: such buffers follow ``.to(device)`` but ignore
    dtype casts (``.float()``, ``.to(torch.float32)``), so exact constants (CG tensors,
    reference energies) keep float64 precision in a float32 model. Cast them at use."""

    def register_float64_buffer(self, name: str, value: torch.Tensor) -> None:
        self.register_buffer(name, value.to(torch.float64).contiguous())
        if "_float64_buffers" not in self.__dict__:
            self._float64_buffers: list[str] = []
        self._float64_buffers.append(name)

    def _apply(self, fn, recurse=True):
        names = self.__dict__.get("_float64_buffers", [])
        masters = {name: getattr(self, name) for name in names}
        super()._apply(fn, recurse)
        for name, master in masters.items():
            setattr(self, name, master.to(device=getattr(self, name).device))
        return self
