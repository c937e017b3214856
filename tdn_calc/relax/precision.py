"""Float64 twins of TDN models and calculators, used by the polish
(:func:`tdn_calc.relax.single.polish_relaxation`) and the model checks."""

from __future__ import annotations

import copy

import torch
from ase.calculators.calculator import Calculator


def float64_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself when it is float64 already, else a float64 copy in eval mode (same
    weights cast to float64); the input is untouched."""
    if next(model.parameters()).dtype == torch.float64:
        return model
    return copy.deepcopy(model).to(torch.float64).eval()


def float64_calculator(calculator: Calculator) -> Calculator:
    """A TDN calculator's float64 twin (a float64 copy of its model, same device and
    ``min_distance``); a float64 TDN calculator or any other calculator is returned as it is
    (ASE calculators compute in float64)."""
    from ..calculator import TDNCalculator

    if not isinstance(calculator, TDNCalculator) or calculator.dtype == torch.float64:
        return calculator
    if calculator.model is None:  # "auto" that never ran: let the twin pick its own model
        return TDNCalculator("auto", device=calculator.device, dtype="float64",
                             min_distance=calculator.min_distance)  # fmt: skip
    return TDNCalculator(float64_model(calculator.model), device=calculator.device,
                         min_distance=calculator.min_distance)  # fmt: skip
