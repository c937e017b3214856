"""Provenance for the model card of a trained model: data set name, reference method and
the sha256 of every shard (and one digest over all of them)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..data.dataset import H5Dataset
from ..fileio import sha256_file


def dataset_fingerprint(dataset: H5Dataset) -> dict[str, Any]:
    """``{"dataset", "reference_method", "dataset_sha256", "files", "n_frames", "n_trajs"}``.

    ``dataset_sha256`` is the sha256 of the lines ``"<sha256>  <file name>\\n"`` of the
    shards in order (what ``sha256sum`` prints), ``files`` maps each name to its sha256.
    """
    files = {Path(s).name: sha256_file(s) for s in dataset.shards}
    listing = "".join(f"{digest}  {name}\n" for name, digest in files.items())
    paths = dataset.path if isinstance(dataset.path, (list, tuple)) else [dataset.path]
    names = [Path(p).name if Path(p).is_dir() else Path(p).stem for p in paths]
    return {
        "dataset": " + ".join(names),
        "reference_method": dataset.reference_method,
        "dataset_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "files": files,
        "n_frames": len(dataset),
        "n_trajs": dataset.n_trajs,
    }
