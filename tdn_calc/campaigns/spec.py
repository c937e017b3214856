"""The campaign spec: a YAML file naming surfaces, adsorbates, placements, the model, the
relaxation settings and the gas-phase references (docs/campaigns.md has the reference).

:func:`load_spec` reads and validates it into a :class:`CampaignSpec`; every error is a
:class:`SpecError` that names the bad key (``surfaces[1].facet``) and value. Lengths in Å,
energies in eV, forces in eV/Å. :meth:`CampaignSpec.hash` is the hash of everything that
changes a result, stored with every database row so that a database is never continued with
a different spec.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..relax.teacher import FINISH_WHEN

LATTICE_MODES = ("model", "teacher")
TEACHER_POLICIES = ("none", "verify", "finish")
OPTIMIZERS = ("auto", "BFGS", "FIRE")
_TOP_KEYS = {
    "name",
    "model",
    "device",
    "dtype",
    "surfaces",
    "adsorbates",
    "placement",
    "relax",
    "references",
    "teacher",
}
_SURFACE_KEYS = {
    "element",
    "facet",
    "size",
    "layers",
    "fixed_layers",
    "vacuum",
    "lattice_constant",
    "name",
    "alloy",
}


class SpecError(InputError):
    """An invalid campaign spec; the message names the key and the value."""


@dataclass(frozen=True)
class SurfaceSpec:
    """One slab: ``element`` (a bulk metal of the surface library), ``facet`` (``111``,
    ``100``, ``110``, ``211`` fcc; ``0001`` hcp), in-plane ``size`` repeats, ``layers``
    (``fixed_layers`` of them held at the bottom), ``vacuum`` Å each side, and the
    ``lattice_constant``: Å (a number; ``[a, c]`` for hcp), ``"model"`` (an E(V) fit with
    the campaign's potential) or ``"teacher"`` (with the teacher). ``alloy``: ``(element,
    kind)``, the host's top layer substituted by ``element`` as the catalysis data
    generator does (kind ``A3B`` 25 %, ``AB`` 50 %, ``SA`` one atom; lattice constant of
    the host), or None."""

    element: str
    facet: str
    size: tuple[int, int] = (3, 3)
    layers: int = 4
    fixed_layers: int = 2
    vacuum: float = 10.0
    lattice_constant: str | tuple[float, ...] = "model"
    name: str = ""
    alloy: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        """``name``, else ``Pt(111)``, with an alloy ``Pt(111)-Ni25`` (the data generator's
        suffix: dopant and top-layer share in %, ``-Ni1`` a single atom)."""
        if self.name:
            return self.name
        return f"{self.element}({self.facet}){self.alloy_tag}"

    @property
    def alloy_tag(self) -> str:
        """``-Ni25`` (A3B), ``-Ni50`` (AB), ``-Ni1`` (SA), or ``""``."""
        from ..datagen.catalysis.surfaces import ALLOYS

        return f"-{self.alloy[0]}{ALLOYS[self.alloy[1]]}" if self.alloy else ""

    @property
    def elements(self) -> set[str]:
        """The slab's elements (host and alloying element)."""
        return {self.element, *(self.alloy[:1] if self.alloy else ())}


@dataclass(frozen=True)
class AdsorbateSpec:
    """An adsorbate: a name of the built-in library
    (:data:`tdn_calc.datagen.catalysis.adsorbates.ADSORBATES`) or, with ``file``, a
    structure file whose binding atom is ``anchor`` (default: the first of C, N, S, P, O)
    placed ``bond`` Å from the nearest metal atom."""

    name: str
    file: str | None = None
    bond: float = 2.0


@dataclass(frozen=True)
class CampaignSpec:
    """A validated campaign (see :func:`load_spec`)."""

    surfaces: tuple[SurfaceSpec, ...]
    adsorbates: tuple[AdsorbateSpec, ...]
    model: str = "tdn-catalysis"
    device: str = "auto"
    dtype: str = "float32"
    name: str = "campaign"
    sites: bool = True
    random: int = 0
    seed: int = 0
    fmax: float = 0.05
    steps: int = 300
    optimizer: str = "auto"
    batch_size: int = 16
    scheme: str = "molecules-O2-N2"
    teacher: str | None = None
    policy: str = "none"
    finish_when: str = "uncertain"
    base_dir: str = field(default=".", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (``base_dir`` left out)."""
        out = asdict(self)
        out.pop("base_dir")
        return out

    def hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the result-changing fields (device,
        batch size and name left out; ``finish_when`` only with ``policy: finish``), with
        user adsorbate files hashed by content."""
        data = self.to_dict()
        for key in ("device", "batch_size", "name"):
            data.pop(key)
        if self.policy != "finish":
            data.pop("finish_when")
        for surface in data["surfaces"]:  # no alloy: the hash of specs before alloys
            if surface["alloy"] is None:
                surface.pop("alloy")
        for ads in data["adsorbates"]:
            if ads["file"]:
                ads["file"] = hashlib.sha256(self.resolve(ads["file"]).read_bytes()).hexdigest()
        text = json.dumps(data, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resolve(self, path: str) -> Path:
        """``path`` relative to the spec file's folder."""
        return Path(self.base_dir, path)

    @property
    def engine(self) -> str:
        """The name recorded as a row's engine: the model, or the teacher name."""
        return self.model


def load_spec(path: str | os.PathLike) -> CampaignSpec:
    """Read and validate the YAML (or JSON) campaign file ``path``; :class:`SpecError`
    names any bad key or value."""
    path = Path(path)
    return parse_spec(read_spec_file(path, "campaign spec"), base_dir=str(path.parent))


def read_spec_file(path: str | os.PathLike, what: str) -> Any:
    """The parsed YAML (or JSON) file ``path``; :class:`SpecError` names ``what`` when it
    cannot be read or parsed."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SpecError(f"cannot read {what} {str(path)!r}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc


def parse_spec(data: Any, base_dir: str = ".") -> CampaignSpec:
    """Validate the campaign mapping ``data`` (a parsed YAML file) into a spec."""
    data = _mapping(data, "spec")
    _no_unknown(data, _TOP_KEYS, "")
    for key in ("surfaces", "adsorbates"):
        if not data.get(key):
            raise SpecError(f"{key}: required, a non-empty list")
    surfaces = tuple(
        _surface(s, f"surfaces[{k}]") for k, s in enumerate(_list(data["surfaces"], "surfaces"))
    )
    labels = [s.label for s in surfaces]
    if len(set(labels)) != len(labels):
        raise SpecError(f"surfaces: duplicate surfaces {labels}; give each a distinct name")
    adsorbates = tuple(
        _adsorbate(a, f"adsorbates[{k}]", base_dir)
        for k, a in enumerate(_list(data["adsorbates"], "adsorbates"))
    )
    names = [a.name for a in adsorbates]
    if len(set(names)) != len(names):
        raise SpecError(f"adsorbates: duplicate names {names}")
    placement = _mapping(data.get("placement", {}), "placement")
    _no_unknown(placement, {"sites", "random", "seed"}, "placement.")
    relax = _mapping(data.get("relax", {}), "relax")
    _no_unknown(relax, {"fmax", "steps", "optimizer", "batch_size"}, "relax.")
    refs = _mapping(data.get("references", {}), "references")
    _no_unknown(refs, {"scheme"}, "references.")
    teacher = data.get("teacher")
    teacher = {"name": teacher} if isinstance(teacher, str) else _mapping(teacher or {}, "teacher")
    _no_unknown(teacher, {"name", "policy", "finish_when"}, "teacher.")
    policy = _choice(teacher.get("policy", "none"), TEACHER_POLICIES, "teacher.policy")
    if "finish_when" in teacher and policy != "finish":
        raise SpecError(f"teacher.finish_when: only used with policy: finish (policy is {policy})")
    spec = CampaignSpec(
        surfaces=surfaces,
        adsorbates=adsorbates,
        model=_model(data.get("model", "tdn-catalysis"), base_dir),
        device=_text(data.get("device", "auto"), "device"),
        dtype=_choice(data.get("dtype", "float32"), ("float32", "float64"), "dtype"),
        name=_text(data.get("name", "campaign"), "name"),
        sites=_bool(placement.get("sites", True), "placement.sites"),
        random=_int(placement.get("random", 0), "placement.random", 0),
        seed=_int(placement.get("seed", 0), "placement.seed", 0),
        fmax=_float(relax.get("fmax", 0.05), "relax.fmax", positive=True),
        steps=_int(relax.get("steps", 300), "relax.steps", 0),
        optimizer=_choice(relax.get("optimizer", "auto"), OPTIMIZERS, "relax.optimizer"),
        batch_size=_int(relax.get("batch_size", 16), "relax.batch_size", 1),
        scheme=_scheme(refs.get("scheme", "molecules-O2-N2")),
        teacher=_text(teacher["name"], "teacher.name") if teacher.get("name") else None,
        policy=policy,
        finish_when=_choice(
            teacher.get("finish_when", "uncertain"), FINISH_WHEN, "teacher.finish_when"
        ),
        base_dir=base_dir,
    )
    if not spec.sites and spec.random == 0:
        raise SpecError("placement: sites is false and random is 0, nothing to place")
    if spec.teacher is None and (
        spec.policy != "none" or any(s.lattice_constant == "teacher" for s in spec.surfaces)
    ):
        raise SpecError("teacher.name: required by teacher.policy or lattice_constant: teacher")
    return spec


# ------------------------------------------------------------------------ parts
def _surface(data: Any, where: str) -> SurfaceSpec:
    from ..datagen.catalysis.surfaces import METALS, surface_facets

    data = _mapping(data, where)
    _no_unknown(data, _SURFACE_KEYS, f"{where}.")
    element = data.get("element")
    if element not in METALS:
        raise SpecError(
            f"{where}.element: {element!r} is not a bulk metal of the surface "
            f"library; use one of {', '.join(METALS)}"
        )
    facet = data.get("facet")
    if isinstance(facet, int) and not isinstance(facet, bool):
        facet = str(facet)
    facet = str(facet).strip("()") if facet is not None else None
    if facet not in surface_facets(element):
        raise SpecError(
            f"{where}.facet: {data.get('facet')!r} is not a facet of {element}; use "
            f"one of {', '.join(surface_facets(element))} (quote it: '0001')"
        )
    size = _size(data.get("size", "3x3"), f"{where}.size")
    layers = _int(data.get("layers", 4), f"{where}.layers", 2)
    fixed = _int(data.get("fixed_layers", layers // 2), f"{where}.fixed_layers", 0)
    if fixed >= layers:
        raise SpecError(f"{where}.fixed_layers: {fixed} must be below layers ({layers})")
    if facet == "211" and size[0] != 3:
        raise SpecError(
            f"{where}.size: (211) cells hold one step, size must be 3xN; got {size[0]}x{size[1]}"
        )
    return SurfaceSpec(
        element,
        facet,
        size,
        layers,
        fixed,
        _float(data.get("vacuum", 10.0), f"{where}.vacuum", positive=True),
        _lattice(
            data.get("lattice_constant", "model"), f"{where}.lattice_constant", facet == "0001"
        ),
        _text(data.get("name", ""), f"{where}.name", allow_empty=True),
        _alloy(data.get("alloy"), f"{where}.alloy", element, facet, size),
    )


def _alloy(
    value: Any, where: str, host: str, facet: str, size: tuple[int, int]
) -> tuple[str, str] | None:
    """``alloy: {element: Ni, kind: A3B}`` of a surface, checked against its host and cell."""
    from ..datagen.catalysis.surfaces import ALLOYS, METALS

    if value is None:
        return None
    value = _mapping(value, where)
    _no_unknown(value, {"element", "kind"}, f"{where}.")
    element = value.get("element")
    if element not in METALS:
        raise SpecError(
            f"{where}.element: {element!r} is not a metal of the surface library; use one "
            f"of {', '.join(METALS)}"
        )
    if element == host:
        raise SpecError(f"{where}.element: {element!r} is the host metal; use another metal")
    kind = value.get("kind")
    if kind not in ALLOYS:
        raise SpecError(
            f"{where}.kind: {kind!r} is not one of {', '.join(ALLOYS)} (A3B: 25 % of the "
            "top layer, AB: 50 %, SA: a single atom)"
        )
    cell = f"{size[0]}x{size[1]}"
    if kind != "SA" and facet == "211":
        raise SpecError(f"{where}.kind: {kind} on (211) is not built; use SA")
    if kind == "A3B" and (size[0] % 2 or size[1] % 2):
        raise SpecError(f"{where}.kind: A3B (ordered p(2x2)) needs an even size; got {cell}")
    if kind == "AB" and size[1] % 2:
        raise SpecError(
            f"{where}.kind: AB (alternate rows) needs an even second size; got {cell}"
        )
    return element, kind


def _adsorbate(data: Any, where: str, base_dir: str) -> AdsorbateSpec:
    from ..datagen.catalysis.adsorbates import ADSORBATES

    if isinstance(data, str):
        data = {"name": data}
    data = _mapping(data, where)
    _no_unknown(data, {"name", "file", "bond"}, f"{where}.")
    name = _text(data.get("name"), f"{where}.name")
    file = data.get("file")
    if file is None:
        if name not in ADSORBATES:
            raise SpecError(
                f"{where}: unknown adsorbate {name!r}; built in: "
                f"{', '.join(ADSORBATES)} (or give a file: path)"
            )
        return AdsorbateSpec(name)
    if not Path(base_dir, str(file)).is_file():
        raise SpecError(
            f"{where}.file: {file!r} is not a file (paths are relative to the spec's folder)"
        )
    return AdsorbateSpec(
        name, str(file), _float(data.get("bond", 2.0), f"{where}.bond", positive=True)
    )


def _model(value: Any, base_dir: str) -> str:
    """A teacher name, a registered model, or a checkpoint (relative to the spec's folder
    when it is not one relative to the working folder)."""
    from .engine import is_teacher

    return model_reference(value, base_dir, "model", is_teacher, "teacher")


def model_reference(
    value: Any, base_dir: str, where: str, keep: Callable[[str], bool], kept: str
) -> str:
    """The model named by the spec key ``where``: a name ``keep`` accepts as it is (what it
    accepts described by ``kept``, for the error), a checkpoint file (relative to the working
    folder, else to the spec's folder ``base_dir``) or a registered model name."""
    name = _text(value, where)
    if keep(name) or Path(name).is_file():
        return name
    if Path(base_dir, name).is_file():
        return str(Path(base_dir, name))
    from ..errors import ModelNotFoundError
    from ..registry import model_entry

    try:
        model_entry(name)
    except ModelNotFoundError as exc:
        raise SpecError(
            f"{where}: {name!r} is no checkpoint file, registered model or {kept} ({exc})"
        ) from exc
    return name


def _lattice(value: Any, where: str, hcp: bool) -> str | tuple[float, ...]:
    if value in LATTICE_MODES:
        return value
    values = value if isinstance(value, list) else [value]
    if (
        not values
        or len(values) > (2 if hcp else 1)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values)
    ):
        shape = "a number (a), [a, c]" if hcp else "a number"
        raise SpecError(f"{where}: {value!r} must be {shape} in Å, 'model' or 'teacher'")
    return tuple(float(v) for v in values)


def _size(value: Any, where: str) -> tuple[int, int]:
    try:
        parts = [int(x) for x in (value.lower().split("x") if isinstance(value, str) else value)]
    except (TypeError, ValueError, AttributeError):
        parts = []
    if len(parts) != 2 or min(parts) < 1:
        raise SpecError(f"{where}: {value!r} must be NxM (e.g. 3x3) or [N, M], positive")
    return parts[0], parts[1]


def _scheme(value: Any) -> str:
    from ..evaluation.references import SCHEMES

    return _choice(value, tuple(SCHEMES), "references.scheme")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: must be a mapping (key: value), got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"{where}: must be a list, got {value!r}")
    return value


def _no_unknown(data: dict[str, Any], known: set[str], prefix: str) -> None:
    bad = sorted(str(k) for k in set(data) - known)
    if bad:
        raise SpecError(f"{prefix}{bad[0]}: unknown key; known keys: {', '.join(sorted(known))}")


def _text(value: Any, where: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise SpecError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: must be true or false, got {value!r}")
    return value


def _int(value: Any, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SpecError(f"{where}: must be an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, where: str, positive: bool = False) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or (positive and value <= 0):
        raise SpecError(
            f"{where}: must be a {'positive ' if positive else ''}number, got {value!r}"
        )
    return float(value)
