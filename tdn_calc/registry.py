"""The registry of pretrained models: ``models/manifest.json`` and its local cache.

Manifest format::

    {"format_version": 1,
     "models": {"NAME": {"aliases": [...], "file": "x.safetensors", "sha256": "...",
                         "size": 123, "elements": ["H", "C"], "reference_method": "...",
                         "description": "...", "metrics": {...}, "license": "...",
                         "url": "https://... (optional)", "deprecated": "NEW-NAME (optional)"}}}

A model file is looked up next to the manifest (models shipped inside the package), then in
the cache (``$TDN_CACHE_DIR``, default ``~/.cache/tdn-calc``), and otherwise downloaded once
from its ``url`` into the cache (temporary file + rename). Its sha256 is checked before use.
``TDN_OFFLINE=1`` forbids any network access. ``$TDN_MANIFEST`` (or the ``manifest``
argument) points to another manifest, e.g. one listing test models.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from ase.data import atomic_numbers, chemical_symbols

from .checkpoint_format import read_metadata
from .errors import CheckpointError, ModelNotFoundError, TDNError, UnsupportedElementError
from .fileio import atomic_write, sha256_file

MANIFEST_FORMAT_VERSION = 1
_TIMEOUT_S = 60.0
#: File suffixes that mark a model argument as a checkpoint path rather than a name.
CHECKPOINT_SUFFIXES = {".safetensors", ".pt", ".pth", ".ckpt"}


def manifest_path(manifest: str | os.PathLike | None = None) -> Path:
    """The manifest in use: ``manifest``, else ``$TDN_MANIFEST``, else the shipped one."""
    if manifest is not None:
        return Path(manifest)
    if os.environ.get("TDN_MANIFEST"):
        return Path(os.environ["TDN_MANIFEST"])
    return Path(str(resources.files("tdn_calc.models").joinpath("manifest.json")))


def cache_dir() -> Path:
    """Where downloaded models live: ``$TDN_CACHE_DIR`` or ``~/.cache/tdn-calc``."""
    return Path(os.environ.get("TDN_CACHE_DIR") or Path.home() / ".cache" / "tdn-calc")


def offline() -> bool:
    """True when ``TDN_OFFLINE`` is set to 1/true/yes."""
    return os.environ.get("TDN_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def load_manifest(manifest: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The manifest's models: ``{name: entry}``; each entry has its ``name`` filled in."""
    path = manifest_path(manifest)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TDNError(f"model manifest {str(path)!r} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise TDNError(f"model manifest {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format_version") != MANIFEST_FORMAT_VERSION:
        raise TDNError(
            f"model manifest {str(path)!r} must be an object with format_version "
            f"{MANIFEST_FORMAT_VERSION}"
        )
    models = data.get("models", {})
    out = {}
    for name, entry in models.items():
        missing = [k for k in ("file", "sha256", "elements") if k not in entry]
        if missing:
            raise TDNError(f"model {name!r} in {str(path)!r} lacks the fields {missing}")
        out[name] = {"name": name, "aliases": [], **entry}
    return out


def list_models(manifest: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """All registered models (manifest entries), in manifest order."""
    return list(load_manifest(manifest).values())


def name_for_sha256(sha256: str, manifest: str | os.PathLike | None = None) -> str | None:
    """The registered name of the model file with this sha256, or ``None``."""
    sha = sha256.lower()
    return next((m["name"] for m in list_models(manifest) if m["sha256"].lower() == sha), None)


def model_entry(name: str, manifest: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest entry of ``name`` (a model name or alias, case-insensitive).

    Raises:
        ModelNotFoundError: unknown name (listing the known ones and close matches) or a
            deprecated name (naming its replacement).
    """
    models = load_manifest(manifest)
    lookup: dict[str, str] = {}
    for key, entry in models.items():
        for alias in [key, *entry.get("aliases", [])]:
            lookup.setdefault(alias.lower(), key)
    key = lookup.get(name.lower())
    if key is None:
        known = sorted(models)
        close = difflib.get_close_matches(name.lower(), list(lookup), n=3)
        hint = f" Did you mean {', '.join(sorted({lookup[c] for c in close}))}?" if close else ""
        listing = ", ".join(known) if known else "none yet (pass a checkpoint path instead)"
        if Path(name).suffix in CHECKPOINT_SUFFIXES or os.sep in name:
            hint += f" No checkpoint file {name!r} exists either."
        raise ModelNotFoundError(f"unknown model {name!r}. Known models: {listing}.{hint}")
    entry = models[key]
    if entry.get("deprecated"):
        raise ModelNotFoundError(
            f"model {name!r} is deprecated; use {entry['deprecated']!r} instead"
        )
    return entry


def _shipped_path(entry: dict[str, Any], manifest: str | os.PathLike | None) -> Path:
    return manifest_path(manifest).parent / entry["file"]


def _cached_path(entry: dict[str, Any]) -> Path:
    return cache_dir() / Path(entry["file"]).name


def local_path(name: str, manifest: str | os.PathLike | None = None) -> Path | None:
    """Where the file of ``name`` is on disk (shipped or cached), or None. Not verified."""
    entry = model_entry(name, manifest)
    for path in (_shipped_path(entry, manifest), _cached_path(entry)):
        if path.is_file():
            return path
    return None


def _download(entry: dict[str, Any], dest: Path) -> None:
    """Stream ``entry['url']`` into ``dest`` atomically, checking the sha256 on the way."""
    url = entry["url"]
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            with atomic_write(dest, "wb") as handle:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
                if digest.hexdigest() != entry["sha256"].lower():
                    raise CheckpointError(
                        f"download of model {entry['name']!r} from {url} has sha256 "
                        f"{digest.hexdigest()}, the manifest says {entry['sha256']}; the file "
                        "was discarded (the server's file or the manifest is wrong)"
                    )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CheckpointError(
            f"could not download model {entry['name']!r} from {url}: {exc}. Check the network, "
            f"or download the file yourself and put it at {dest}"
        ) from exc


def resolve_model(
    name: str, manifest: str | os.PathLike | None = None, *, force_download: bool = False
) -> Path:
    """A verified local path of the checkpoint of ``name``, downloading it once if needed.

    Raises:
        ModelNotFoundError: unknown name.
        CheckpointError: sha256 mismatch, failed download, or missing file in offline mode.
    """
    entry = model_entry(name, manifest)
    expected = entry["sha256"].lower()
    shipped = _shipped_path(entry, manifest)
    if shipped.is_file():
        actual = sha256_file(shipped)
        if actual != expected:
            raise CheckpointError(
                f"installed model file {shipped} has sha256 {actual}, the manifest says "
                f"{expected}; reinstall tdn-calc"
            )
        return shipped
    cached = _cached_path(entry)
    if cached.is_file() and not force_download:
        actual = sha256_file(cached)
        if actual == expected:
            return cached
        problem = f"cached file {cached} is corrupt (sha256 {actual}, expected {expected})"
    else:
        problem = f"model {entry['name']!r} is not in the cache ({cached})"
    if not entry.get("url"):
        raise CheckpointError(f"{problem} and the manifest gives no download URL")
    if offline():
        raise CheckpointError(
            f"{problem} and TDN_OFFLINE is set, so it is not downloaded. Run "
            f"`tdn models download {entry['name']}` where the network is reachable (or copy "
            f"the file to {cached}), or unset TDN_OFFLINE"
        )
    _download(entry, cached)
    return cached


def model_path(path_or_name: str | os.PathLike, manifest: str | os.PathLike | None = None) -> Path:
    """The checkpoint file behind ``path_or_name``: the file itself when it exists, else the
    verified local file of the registered model of that name (:func:`resolve_model`, which
    downloads it once if needed). The one place a ``--model``/``model=`` value becomes a path.

    Raises:
        ModelNotFoundError: neither an existing file nor a registered name.
        CheckpointError: see :func:`resolve_model`.
    """
    path = Path(path_or_name)
    return path if path.is_file() else resolve_model(str(path_or_name), manifest=manifest)


def verify_model(name: str, manifest: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check the sha256 of the local file of ``name`` (never downloads).

    Returns ``{"name", "path", "expected", "actual", "status"}`` with status ``"ok"``,
    ``"mismatch"`` or ``"missing"``.
    """
    entry = model_entry(name, manifest)
    path = local_path(name, manifest)
    actual = sha256_file(path) if path is not None else None
    status = (
        "missing" if path is None else ("ok" if actual == entry["sha256"].lower() else "mismatch")
    )
    return {
        "name": entry["name"],
        "path": str(path) if path else None,
        "expected": entry["sha256"],
        "actual": actual,
        "status": status,
    }


def model_info(name: str, manifest: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest entry of ``name``, plus the checkpoint's model card (``"card"``) when the
    file is available locally (no download)."""
    info = dict(model_entry(name, manifest))
    path = local_path(name, manifest)
    info["local_path"] = str(path) if path else None
    if path is not None:
        _, info["card"] = read_metadata(path)
    return info


def _as_numbers(elements: Iterable[int | str]) -> list[int]:
    return sorted({atomic_numbers[e] if isinstance(e, str) else int(e) for e in elements})


def select_model_for(
    elements: Iterable[int | str], manifest: str | os.PathLike | None = None
) -> str:
    """The registered model to use for a structure with these elements (symbols or atomic
    numbers): the first model covering all of them that is neither deprecated nor superseded
    (an earlier version kept loadable under its dated name), preferring entries marked
    ``"default": true``.

    Raises:
        UnsupportedElementError: no registered model covers the elements (the message lists
            each model and its elements).
    """
    wanted = _as_numbers(elements)
    models = [m for m in load_manifest(manifest).values()
              if not m.get("deprecated") and not m.get("superseded_by")]  # fmt: skip
    covering = [m for m in models if set(wanted) <= set(_as_numbers(m["elements"]))]
    covering.sort(key=lambda m: not m.get("default", False))  # stable: manifest order
    if covering:
        return covering[0]["name"]
    symbols = " ".join(chemical_symbols[z] for z in wanted)
    if not models:
        raise UnsupportedElementError(
            f"no pretrained models are registered yet, so none can be chosen for {symbols}; "
            "pass a checkpoint path or a TDNModel as `model`"
        )
    listing = "; ".join(f"{m['name']}: {' '.join(m['elements'])}" for m in models)
    raise UnsupportedElementError(
        f"no registered model supports all of {symbols}. Models and their elements: {listing}"
    )


def uncertainty_sidecar(
    name: str, manifest: str | os.PathLike | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The uncertainty summary of ``name``: ``(path, record)`` from the manifest entry's
    ``"uncertainty": {"method", "threshold", "file", "sha256"}`` (the file next to the
    manifest), or ``None`` when the entry has none.

    Raises:
        ModelNotFoundError: unknown name.
        CheckpointError: the file is missing or its sha256 is not the manifest's.
    """
    record = model_entry(name, manifest).get("uncertainty")
    if not record:
        return None
    path = manifest_path(manifest).parent / record["file"]
    if not path.is_file():
        raise CheckpointError(f"uncertainty summary {path} of model {name!r} is missing; "
                              "reinstall tdn-calc")
    actual = sha256_file(path)
    if actual != record["sha256"].lower():
        raise CheckpointError(
            f"uncertainty summary {path} of model {name!r} has sha256 {actual}, the manifest "
            f"says {record['sha256']}; reinstall tdn-calc"
        )
    return path, record


def per_registered_model(model: Any, attr: str, manifest: str | os.PathLike | None,
                         compute: Callable[[str], Any]) -> Any:
    """``compute(name)`` for the registered name of a loaded model (found by its file's
    sha256, ``model.sha256``), ``None`` when it has none. Kept on the model under ``attr``,
    keyed by the manifest file and its mtime: computed once per model, again when the
    manifest changes."""
    sha = getattr(model, "sha256", None)
    if not sha:
        return None
    path = manifest_path(manifest).resolve()
    key = (str(path), path.stat().st_mtime_ns if path.is_file() else None)
    cached = getattr(model, attr, None)
    if cached is None or cached[0] != key:
        name = name_for_sha256(sha, manifest)
        cached = (key, compute(name) if name else None)
        setattr(model, attr, cached)
    return cached[1]


def manifest_entry(path: str | os.PathLike, name: str, description: str, *,
                   aliases: Iterable[str] = (), license: str = "MIT", default: bool = False,
                   metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """A manifest entry for the checkpoint ``path`` (file name relative to the manifest's
    folder): sha256, size, elements, reference method, data set and architecture read from
    the file and its model card, never typed by hand; ``metrics`` extend the card's."""
    path = Path(path)
    config, card = read_metadata(path)  # also validates the file
    trained_on = card.get("trained_on", {})
    return {
        "name": name,
        "aliases": list(aliases),
        "file": path.name,
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "elements": [chemical_symbols[z] for z in config.elements],
        "reference_method": trained_on.get("reference_method", "unknown"),
        "description": description,
        "dataset": {k: trained_on.get(k) for k in ("dataset", "dataset_sha256", "n_frames")},
        "architecture": {
            k: getattr(config, k)
            for k in ("lmax", "channels", "num_layers", "num_heads", "cutoff", "tp_backend")
        },
        "metrics": {**card.get("metrics", {}), **(metrics or {})},
        "license": license,
        "default": default,
    }


def add_to_manifest(manifest: str | os.PathLike, entry: dict[str, Any]) -> Path:
    """Add (or replace) ``entry`` under its ``name`` in the manifest file ``manifest``,
    made when absent; written atomically. Returns the manifest's path."""
    path = Path(manifest)
    data = (json.loads(path.read_text(encoding="utf-8")) if path.exists()
            else {"format_version": MANIFEST_FORMAT_VERSION, "models": {}})
    data["models"][entry["name"]] = entry
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    return path
