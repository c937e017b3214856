"""Teacher calculators for distilled reference data, chosen by name.

A teacher is any ASE calculator that returns energy (eV), forces ([n_atoms, 3], eV/Å)
and, for 3D-periodic cells, stress (Voigt, eV/Å^3). Known names:

- ``"sevenn-0"`` (aliases ``"7net-0"``, ``"sevennet-0"``): SevenNet-0 (11 Jul 2024), whose
  weights ship inside the ``sevenn`` wheel, so no network access is needed.
- ``"emt"``: ASE's effective-medium theory (Al Cu Ag Au Ni Pd Pt, roughly H C N O); fast,
  meant for tests.
- ``"package.module:ClassName"``: any importable calculator class, built with no arguments.
"""

from __future__ import annotations

import importlib
import warnings
from importlib import metadata

from ase.calculators.calculator import Calculator

from ..errors import InputError

_SEVENN_ALIASES = ("sevenn-0", "7net-0", "sevennet-0")
KNOWN_TEACHERS = (*_SEVENN_ALIASES, "emt")


def canonical_teacher_name(name: str) -> str:
    """Normalise a teacher name (aliases of SevenNet-0 become ``"sevenn-0"``)."""
    key = name.strip()
    if key.lower() in _SEVENN_ALIASES:
        return "sevenn-0"
    if key.lower() == "emt":
        return "emt"
    if ":" in key:
        return key
    raise InputError(
        f"unknown teacher {name!r}; use one of {', '.join(KNOWN_TEACHERS)} "
        "or an importable 'package.module:ClassName'"
    )


def get_teacher(name: str, device: str = "cpu") -> Calculator:
    """Build the teacher calculator called ``name`` (see module docstring) on ``device``."""
    key = canonical_teacher_name(name)
    if key == "sevenn-0":
        try:
            from sevenn.calculator import SevenNetCalculator
        except ImportError as err:
            raise InputError(
                "teacher 'sevenn-0' needs the sevenn package: pip install sevenn"
            ) from err
        with warnings.catch_warnings():  # "no tensor-product accelerator" on CPU
            warnings.simplefilter("ignore")
            return SevenNetCalculator(model="7net-0", device=device)
    if key == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    module_name, _, class_name = key.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise InputError(f"cannot import teacher class {key!r}: {err}") from err
    calc = cls()
    if not isinstance(calc, Calculator) and not hasattr(calc, "get_potential_energy"):
        raise InputError(f"teacher {key!r} built a {type(calc).__name__}, not an ASE calculator")
    return calc


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def teacher_reference_method(name: str) -> str:
    """The ``reference_method`` attribute for data labelled by teacher ``name``."""
    key = canonical_teacher_name(name)
    if key == "sevenn-0":
        return (
            f"SevenNet-0 (sevenn {_version('sevenn')}), PBE-level universal potential"
            " — distilled data, not DFT"
        )
    if key == "emt":
        return f"ASE EMT (ase {_version('ase')}), effective-medium toy potential — not DFT"
    return f"{key} (ASE calculator used as teacher) — distilled data, not DFT"
