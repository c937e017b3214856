"""Shared fixtures: a seeded RNG, tiny random TDN models, one torch thread, and a CUDA
device that skips when CUDA is absent."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed (torch is seeded too)."""
    torch.manual_seed(0)
    return np.random.default_rng(0)


@pytest.fixture
def tiny_config() -> Callable[..., object]:
    """Factory: ``tiny_config(elements=(1, 6, 8), **overrides) -> TDNConfig`` of a very
    small model (fast on CPU)."""
    from tdn_calc.nn.config import TDNConfig

    def make(elements=(1, 6, 8), **overrides):
        params = dict(
            lmax=1,
            channels=8,
            num_layers=1,
            num_heads=2,
            cutoff=4.0,
            num_radial=4,
            radial_hidden=8,
            avg_num_neighbors=8.0,
        )
        params.update(overrides)
        return TDNConfig(elements=list(elements), **params)

    return make


@pytest.fixture
def tiny_model(tiny_config) -> Callable[..., torch.nn.Module]:
    """Factory: ``tiny_model(elements=(1, 6, 8), dtype=torch.float64, seed=0, **config)``
    -> a randomly initialised TDNModel in eval mode."""
    from tdn_calc.nn.model import TDNModel

    def make(elements=(1, 6, 8), dtype=torch.float64, seed=0, **overrides):
        torch.manual_seed(seed)
        model = TDNModel(tiny_config(elements, **overrides)).to(dtype)
        return model.eval()

    return make


@pytest.fixture
def cuda() -> torch.device:
    """The CUDA device; the test is skipped when CUDA is unavailable."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return torch.device("cuda")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one CPU thread for the test (restored after)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
