"""Fine-tuning onto new elements: ``tdn_calc.train.extend``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import atomic_numbers as Z

from tdn_calc.graph import atoms_to_graph
from tdn_calc.train.extend import extend_elements, nearest_known


@pytest.mark.parametrize(
    ("new", "donor"), [("Co", "Ni"), ("Rh", "Pd"), ("Ir", "Pt"), ("Ru", "Pd"), ("S", "O")]
)
def test_nearest_known_takes_the_neighbour_in_the_table(new, donor):
    known = [Z[s] for s in ("H", "C", "N", "O", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")]
    assert nearest_known(Z[new], known) == Z[donor]


def _cluster(symbols: str, rng: np.random.Generator) -> Atoms:
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float)
    positions = 2.3 * grid[: len(Atoms(symbols))] + rng.normal(0, 0.05, (len(Atoms(symbols)), 3))
    return Atoms(symbols, positions=positions)


def _energy_forces(model, atoms: Atoms) -> tuple[float, np.ndarray]:
    graph = atoms_to_graph([atoms], model.cutoff, dtype=torch.float64)
    out = model(graph, compute_forces=True)
    return float(out["energy"][0]), out["forces"].detach().numpy()


def test_extended_model_keeps_old_predictions_and_starts_new_element_as_donor(tiny_model, rng):
    model = tiny_model(elements=(1, 8, 28))  # H O Ni
    fitted = {1: -1.0, 8: -4.0, 28: -5.0, 27: -6.5}  # e_Co - e_Ni = -1.5 eV
    extended = extend_elements(model, [1, 8, 27, 28], fitted)
    assert extended.elements == [1, 8, 27, 28]
    e0 = dict(zip(extended.elements, extended.atomic_energies.tolist(), strict=True))
    old_e0 = dict(zip(model.elements, model.atomic_energies.tolist(), strict=True))
    assert e0[27] == pytest.approx(-6.5 - (-5.0 - old_e0[28]))
    assert all(e0[z] == old_e0[z] for z in model.elements)
    # structures of the old elements: identical energies and forces
    ni_oh = _cluster("Ni4OH", rng)
    for a, b in zip(_energy_forces(model, ni_oh), _energy_forces(extended, ni_oh), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    # Co starts as Ni: same forces, energy shifted by its reference energies only
    co_oh = ni_oh.copy()
    co_oh.numbers[:2] = 27
    e_ni, f_ni = _energy_forces(extended, ni_oh)
    e_co, f_co = _energy_forces(extended, co_oh)
    np.testing.assert_allclose(f_co, f_ni, rtol=0, atol=1e-10)
    assert e_co - e_ni == pytest.approx(2 * (e0[27] - e0[28]), abs=1e-9)
    assert extended.config.extra["extended_from"]["donors"] == {"Co": "Ni"}


def test_extend_elements_refuses_to_drop_elements_or_guess_energies(tiny_model):
    model = tiny_model(elements=(1, 8, 28))
    with pytest.raises(ValueError, match="dropped"):
        extend_elements(model, [1, 28], {})
    with pytest.raises(ValueError, match="Co"):
        extend_elements(model, [1, 8, 27, 28], {1: -1.0, 28: -5.0})
