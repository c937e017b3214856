"""Teachers: the reference calculators that label distilled data and check a model's answers.

A teacher is an ASE calculator that returns energy (eV), forces ([n_atoms, 3], eV/Å) and,
for 3D-periodic cells, stress (Voigt, eV/Å^3). Each registered teacher has a name (plus
aliases), a description of its method, the elements it covers where known, the optional
extra of tdn-calc that installs it and a lazy factory, so that listing the teachers
(``tdn teachers list``) imports none of them::

    from tdn_calc.teachers import get_teacher, list_teachers
    atoms.calc = get_teacher("sevenn-0", device="cpu")
    [spec.name for spec in list_teachers() if spec.installed]

Besides the registered names, ``"package.module:factory"`` builds any importable ASE
calculator: a class or a function that returns one. Keyword arguments of a teacher are
passed to :func:`get_teacher` or appended to its name as a JSON object, which is how a
command-line ``--teacher`` carries them: ``'ase.calculators.lj:LennardJones{"sigma": 2.3}'``
or ``'7net-mf-0{"modal": "R2SCAN"}'``.

A missing package raises :class:`~tdn_calc.errors.InputError` that names the extra to
install (``pip install "tdn-calc[sevennet]"``); nothing here downloads weights.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

__all__ = [
    "KNOWN_TEACHERS",
    "TeacherSpec",
    "canonical_teacher_name",
    "get_teacher",
    "list_teachers",
    "missing_elements",
    "parse_teacher_kwargs",
    "split_teacher_name",
    "teacher_reference_method",
    "teacher_spec",
    "teacher_table",
    "with_teacher_kwargs",
]

Factory = Callable[..., "Calculator"]

#: Materials Project trajectory data (MPtrj): Z 1-83 and 89-94 (no Po, At, Rn, Fr, Ra).
_MPTRJ_Z = frozenset([*range(1, 84), *range(89, 95)])
_MPTRJ_ELEMENTS = "89 elements: H–Bi, Ac–Pu (no Po–Ra)"
_EMT_SYMBOLS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
_GPAW_BUILD = (
    "; GPAW builds from source: apt-get install g++ libxc-dev libopenblas-dev, "
    "then CC=g++ pip install gpaw gpaw-data"
)


@dataclass(frozen=True)
class TeacherSpec:
    """One registered teacher: what it is, what it covers, how to install and build it.

    ``factory(device, **kwargs)`` builds the calculator; ``packages`` are the import names
    it needs (checked with :func:`importlib.util.find_spec`, which imports nothing);
    ``weights`` is a checkpoint path inside the first package that must exist on disk.
    ``reference`` is the ``reference_method`` written into data it labels (``{version}``
    is the installed version of ``distribution``).
    """

    name: str
    method: str
    elements: str
    factory: Factory
    reference: str
    aliases: tuple[str, ...] = ()
    atomic_numbers: frozenset[int] | None = None
    extra: str | None = None
    packages: tuple[str, ...] = ()
    distribution: str | None = None
    weights: str | None = None
    systems: str = "molecules and periodic cells"
    weaknesses: str = ""
    install_hint: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def install_command(self) -> str | None:
        """The pip command that installs this teacher, or None (ships with tdn-calc)."""
        return f'pip install "tdn-calc[{self.extra}]"' if self.extra else None

    @property
    def missing(self) -> str | None:
        """Why this teacher cannot be built now (package or weights absent), or None."""
        for package in self.packages:
            if not _has_module(package):
                how = self.install_command or f"pip install {package}"
                return f"the {package} package is not installed: {how}{self.install_hint}"
        if self.weights is not None and _weights_path(self.packages[0], self.weights) is None:
            return (f"the weights {self.weights} are not on disk (in the {self.packages[0]} "
                    "package or its cache); tdn-calc does not download them")
        return None

    @property
    def installed(self) -> bool:
        """True when the packages (and weights) of this teacher are present."""
        return self.missing is None

    @property
    def version(self) -> str:
        """The installed version of the package behind this teacher ("unknown" if none)."""
        return _version(self.distribution) if self.distribution else "unknown"


# ----------------------------------------------------------------------------- helpers


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


#: Where a package keeps weights it downloaded: its directory of weights -> cache directory.
_WEIGHT_CACHES = {"sevenn": ("pretrained_potentials", Path.home() / ".cache" / "sevennet")}


def _weights_path(package: str, relative: str) -> Path | None:
    """The file ``relative`` inside ``package`` (or in that package's download cache)."""
    root = _package_dir(package)
    candidates = [root / relative] if root is not None else []
    if package in _WEIGHT_CACHES:
        inside, cache = _WEIGHT_CACHES[package]
        candidates.append(cache / Path(relative).relative_to(inside))
    return next((path for path in candidates if path.is_file()), None)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _require(spec: TeacherSpec) -> None:
    if spec.missing is not None:
        raise InputError(f"teacher {spec.name!r} cannot be built: {spec.missing}")


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the warnings and banners teacher packages print while loading."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- factories


def _sevennet(path: str, modal: str | None = None) -> Factory:
    def build(device: str, **kwargs: Any) -> Calculator:
        from sevenn.calculator import SevenNetCalculator

        checkpoint = _weights_path("sevenn", path)
        options: dict[str, Any] = {"modal": modal} if modal else {}
        options.update(kwargs)
        with _quiet():  # "no tensor-product accelerator" on CPU
            return SevenNetCalculator(model=str(checkpoint), file_type="checkpoint",
                                      device=device, **options)

    return build


def _chgnet(model_name: str) -> Factory:
    def build(device: str, **kwargs: Any) -> Calculator:
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        with _quiet():  # "CHGNet will run on cpu"
            model = CHGNet.load(model_name=model_name, use_device=device, verbose=False)
            return CHGNetCalculator(model=model, use_device=device, **kwargs)

    return build


def _gfn2_xtb(device: str, **kwargs: Any) -> Calculator:
    from tblite.ase import TBLite

    options: dict[str, Any] = {"method": "GFN2-xTB", "verbosity": 0}
    options.update(kwargs)
    return TBLite(**options)


def _gpaw_pbe(device: str, **kwargs: Any) -> Calculator:
    from ._gpaw import GPAWPBE

    return GPAWPBE(**kwargs)


def _emt(device: str, **kwargs: Any) -> Calculator:
    from ase.calculators.emt import EMT

    return EMT(**kwargs)


# ----------------------------------------------------------------------------- registry

_SEVENNET_WEAKNESS = (
    "Trained on bulk PBE(+U) Materials Project relaxations: surfaces, adsorbates and "
    "molecules are extrapolation; does not bind O on Ni(111) at all (its relaxation pushes "
    "O 3 Å off the surface); against real PBE at the same geometries "
    "(benchmarks/teacher_vs_pbe.py, docs/benchmarks.md) it binds O 5.1 eV, OH 2.8 eV and "
    "CO 1.1 eV on Co(0001), CO on Ni(111) 1.5 eV and O on Ru(0001) 1.6 eV too weakly (the "
    "GGA+U oxide energies "
    "of its training data), O on Ir(111) 1.8 eV, N on Au(111) 0.8 eV, H on Pd(111) 0.6 eV, N "
    "on Pt(111) and OH on Cu(111) 0.4 eV too strongly, OH on Ni(111) 0.9 eV, N on Ag(111) "
    "0.5 eV and O on Rh(111) 0.6 eV too weakly, while O and CO on Pt(111), O on Cu(111) and "
    "N on Ru(0001) agree within 0.25 eV; inherits PBE's errors (CO on Pt(111) in a hollow "
    "site instead of on top)."
)
_SEVENNET_MF_WEAKNESS = (
    "Same bulk-crystal training domain as SevenNet-0 (surfaces and adsorbates are "
    "extrapolation); the modal must match the functional you want."
)
_CHGNET_WEAKNESS = (
    "Trained on bulk Materials Project (MPtrj) PBE(+U) data: surfaces and adsorbates are "
    "extrapolation, and it inherits PBE's errors; known to soften potential-energy surfaces "
    "(energies and forces too small away from equilibrium)."
)


def _sevennet_spec(name: str, aliases: tuple[str, ...], what: str, path: str,
                   modal: str | None = None, weaknesses: str = _SEVENNET_WEAKNESS
                   ) -> TeacherSpec:
    level = {"R2SCAN": "r2SCAN"}.get(modal or "", "PBE(+U)")
    return TeacherSpec(
        name=name, aliases=aliases,
        method=f"{what}, a universal potential trained on {level} Materials Project data, "
               "not DFT",
        elements=_MPTRJ_ELEMENTS, atomic_numbers=_MPTRJ_Z,
        extra="sevennet", packages=("sevenn",), distribution="sevenn", weights=path,
        factory=_sevennet(path, modal), weaknesses=weaknesses,
        reference=f"{what.split(' (')[0]} (sevenn {{version}}), {level.split('(')[0]}-level "
                  "universal potential — distilled data, not DFT",
    )


_REGISTRY: tuple[TeacherSpec, ...] = (
    _sevennet_spec("sevenn-0", ("7net-0", "sevennet-0", "7net-0_11jul2024",
                                "sevennet-0_11jul2024"),
                   "SevenNet-0 (11 Jul 2024)",
                   "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth"),
    _sevennet_spec("7net-0_22may2024", ("sevennet-0_22may2024",),
                   "SevenNet-0 (22 May 2024, superseded by the 11 Jul 2024 weights)",
                   "pretrained_potentials/SevenNet_0__22May2024/checkpoint_sevennet_0.pth"),
    _sevennet_spec("7net-l3i5", ("sevennet-l3i5",),
                   "SevenNet-l3i5 (higher angular order l=3, 5 layers; slower)",
                   "pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth"),
    _sevennet_spec("7net-mf-0", ("sevennet-mf-0", "7net-mf-0-pbe"),
                   "SevenNet-MF-0 (multi-fidelity, PBE(+U) modal)",
                   "pretrained_potentials/SevenNet_MF_0/checkpoint_sevennet_mf_0.pth",
                   modal="PBE", weaknesses=_SEVENNET_MF_WEAKNESS),
    _sevennet_spec("7net-mf-0-r2scan", ("sevennet-mf-0-r2scan",),
                   "SevenNet-MF-0 (multi-fidelity, r2SCAN modal)",
                   "pretrained_potentials/SevenNet_MF_0/checkpoint_sevennet_mf_0.pth",
                   modal="R2SCAN", weaknesses=_SEVENNET_MF_WEAKNESS),
    TeacherSpec(
        name="chgnet", aliases=("chgnet-0.3.0",),
        method="CHGNet 0.3.0, a universal potential trained on PBE(+U) Materials Project "
               "data (MPtrj), not DFT",
        elements=_MPTRJ_ELEMENTS, atomic_numbers=_MPTRJ_Z,
        extra="chgnet", packages=("chgnet",), distribution="chgnet",
        factory=_chgnet("0.3.0"), weaknesses=_CHGNET_WEAKNESS,
        reference="CHGNet 0.3.0 (chgnet {version}), PBE-level universal potential — "
                  "distilled data, not DFT",
    ),
    TeacherSpec(
        name="chgnet-r2scan", aliases=(),
        method="CHGNet r2SCAN (transfer-learned from 0.3.0 on Materials Project r2SCAN "
               "data), not DFT",
        elements=_MPTRJ_ELEMENTS, atomic_numbers=_MPTRJ_Z,
        extra="chgnet", packages=("chgnet",), distribution="chgnet",
        factory=_chgnet("r2scan"),
        weaknesses="Bulk training domain as CHGNet 0.3.0; far less r2SCAN data than PBE data.",
        reference="CHGNet r2SCAN (chgnet {version}), r2SCAN-level universal potential — "
                  "distilled data, not DFT",
    ),
    TeacherSpec(
        name="gfn2-xtb", aliases=("xtb", "gfn2", "tblite"),
        method="GFN2-xTB (tblite), semi-empirical tight binding parametrised for molecules",
        elements="H–Rn (Z 1–86)", atomic_numbers=frozenset(range(1, 87)),
        extra="xtb", packages=("tblite",), distribution="tblite",
        factory=_gfn2_xtb,
        systems="molecules; periodic cells run (with stress) but are outside its "
                "parametrisation",
        weaknesses="Molecules only in practice: metals, surfaces and bulk are poorly "
                   "described; closed-shell by default (set multiplicity for radicals); "
                   "conformer energies within a few kcal/mol of DFT at best.",
        reference="GFN2-xTB (tblite {version})",
    ),
    TeacherSpec(
        name="gpaw-pbe", aliases=("gpaw", "pbe"),
        method="GPAW PBE DFT: plane waves (500 eV), k-points by density, spin-polarised "
               "when Fe/Co/Ni are present",
        elements="most of H–Rn (the PAW setups of gpaw-data)",
        extra="gpaw", packages=("gpaw",), distribution="gpaw",
        factory=_gpaw_pbe, install_hint=_GPAW_BUILD,
        systems="small periodic cells; molecules in a box with vacuum",
        weaknesses="Real DFT but PBE: CO on Pt(111) prefers a hollow site (experiment: on "
                   "top); costs minutes to hours per structure, so it checks rather than "
                   "labels.",
        reference="PBE DFT (GPAW {version}, plane waves)",
    ),
    TeacherSpec(
        name="emt", aliases=(),
        method="ASE effective-medium theory (EMT), a toy potential for tests",
        elements=" ".join(_EMT_SYMBOLS),
        atomic_numbers=frozenset([1, 6, 7, 8, 13, 28, 29, 46, 47, 78, 79]),
        distribution="ase", factory=_emt,
        weaknesses="A toy: fitted to fcc metals, molecules (H C N O) only roughly.",
        reference="ASE EMT (ase {version}), effective-medium toy potential — not DFT",
    ),
)

_BY_NAME: dict[str, TeacherSpec] = {
    key.lower(): spec for spec in _REGISTRY for key in (spec.name, *spec.aliases)
}
#: Every registered name and alias, in registry order.
KNOWN_TEACHERS: tuple[str, ...] = tuple(
    key for spec in _REGISTRY for key in (spec.name, *spec.aliases)
)


# ----------------------------------------------------------------------------- lookups


def parse_teacher_kwargs(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of a teacher from a JSON object (or a mapping, or None)."""
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"teacher keyword arguments are not JSON: {text!r} ({err})") from err
    if not isinstance(value, dict):
        raise InputError(f"teacher keyword arguments must be a JSON object; got {text!r}")
    return value


def split_teacher_name(name: str) -> tuple[str, dict[str, Any]]:
    """``'name{"key": value}'`` -> ``("name", {"key": value})``; a plain name has no kwargs."""
    key = name.strip()
    base, brace, rest = key.partition("{")
    return base.strip(), parse_teacher_kwargs(brace + rest) if brace else {}


def with_teacher_kwargs(name: str, kwargs: str | Mapping[str, Any] | None) -> str:
    """``name`` with ``kwargs`` (JSON text or a mapping) merged into its JSON suffix.

    How a command's ``--teacher-kwargs`` reaches code that takes one teacher string.
    """
    base, named = split_teacher_name(name)
    merged = {**named, **parse_teacher_kwargs(kwargs)}
    return base + json.dumps(merged, sort_keys=True) if merged else base


def _is_import_path(name: str) -> bool:
    module, colon, attr = name.partition(":")
    return bool(colon and module and attr)


def _unknown(name: str) -> InputError:
    return InputError(
        f"unknown teacher {name!r}; use one of {', '.join(KNOWN_TEACHERS)} "
        "or an importable 'package.module:factory' (a calculator class or a function)"
    )


def teacher_spec(name: str) -> TeacherSpec:
    """The registered teacher called ``name`` (any alias, any case); InputError if unknown.

    ``"package.module:factory"`` gives an ad-hoc spec whose factory imports it.
    """
    base, _ = split_teacher_name(name)
    spec = _BY_NAME.get(base.lower())
    if spec is not None:
        return spec
    if _is_import_path(base):
        return TeacherSpec(
            name=base, method=f"{base} (an ASE calculator named by the user)",
            elements="unknown", factory=_import_factory(base), packages=(),
            distribution=base.partition(".")[0].partition(":")[0],
            reference=f"{base} (ASE calculator used as teacher) — distilled data, not DFT",
        )
    raise _unknown(name)


def list_teachers() -> list[TeacherSpec]:
    """Every registered teacher, in registry order (installed or not)."""
    return list(_REGISTRY)


def canonical_teacher_name(name: str) -> str:
    """The registered name of ``name`` (aliases of SevenNet-0 become ``"sevenn-0"``).

    A ``package.module:factory`` stays as it is; JSON keyword arguments are kept, sorted, so
    that the same teacher always has the same key.
    """
    base, kwargs = split_teacher_name(name)
    key = teacher_spec(base).name
    return key + json.dumps(kwargs, sort_keys=True) if kwargs else key


def get_teacher(name: str, device: str = "cpu", **kwargs: Any) -> Calculator:
    """Build the teacher calculator called ``name`` on ``device``.

    ``kwargs`` (and a JSON object appended to ``name``) go to the calculator; they override
    the registry defaults. ``device`` matters to the neural-network teachers (SevenNet,
    CHGNet) and to a user factory that takes a ``device`` argument; the others run on CPU.
    Raises InputError naming the extra to install when the teacher's package is missing.
    """
    base, named_kwargs = split_teacher_name(name)
    spec = teacher_spec(base)
    _require(spec)
    options = {**spec.kwargs, **named_kwargs, **kwargs}
    try:
        return spec.factory(device, **options)
    except ImportError as err:
        how = spec.install_command or "install the package that provides it"
        raise InputError(f"teacher {spec.name!r} cannot be imported ({err}): {how}"
                         f"{spec.install_hint}") from err


def teacher_reference_method(name: str) -> str:
    """The ``reference_method`` attribute of data labelled by teacher ``name``."""
    spec = teacher_spec(name)
    return spec.reference.format(version=spec.version)


def missing_elements(name: str, symbols: Iterable[str]) -> list[str]:
    """The elements of ``symbols`` that teacher ``name`` does not cover (sorted, unique).

    Empty when the teacher's coverage is unknown (user calculators, GPAW).
    """
    from ase.data import atomic_numbers

    covered = teacher_spec(name).atomic_numbers
    if covered is None:
        return []
    return sorted({s for s in symbols if atomic_numbers.get(s, 0) not in covered})


def teacher_table() -> list[dict[str, Any]]:
    """One JSON-ready row per registered teacher (what ``tdn teachers list`` prints)."""
    return [
        {"name": spec.name, "aliases": list(spec.aliases), "method": spec.method,
         "elements": spec.elements, "systems": spec.systems, "extra": spec.extra,
         "install": spec.install_command, "installed": spec.installed,
         "missing": spec.missing, "weaknesses": spec.weaknesses}
        for spec in _REGISTRY
    ]


# ----------------------------------------------------------------------------- user calculators


def _import_factory(path: str) -> Factory:
    def build(device: str, **kwargs: Any) -> Calculator:
        module_name, _, attr = path.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as err:
            raise InputError(f"cannot import teacher {path!r}: {err}") from err
        if not callable(target):
            raise InputError(f"teacher {path!r} is a {type(target).__name__}, not callable")
        if "device" not in kwargs and _accepts(target, "device"):
            kwargs["device"] = device
        try:
            calc = target(**kwargs)
        except TypeError as err:
            raise InputError(f"teacher {path!r} rejected its arguments {kwargs}: {err}") from err
        if not hasattr(calc, "get_potential_energy") and not hasattr(calc, "calculate"):
            raise InputError(
                f"teacher {path!r} built a {type(calc).__name__}, not an ASE calculator")
        return calc

    return build


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
