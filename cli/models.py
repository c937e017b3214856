"""``tdn models``: list, inspect, verify and download the registered pretrained models."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from tdn_calc.errors import ModelNotFoundError, TDNError


def _table(headers: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        for row in [headers, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _size(n: int | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def _entry(name: str) -> dict:
    from tdn_calc.registry import model_entry

    try:
        return model_entry(name)
    except ModelNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc


@click.group()
def models() -> None:
    """List, inspect, verify and download pretrained models."""


@models.command("list")
def list_cmd() -> None:
    """Table of the registered models."""
    from tdn_calc.registry import list_models, local_path

    entries = list_models()
    if not entries:
        click.echo("No pretrained models are registered yet.")
        return
    rows = []
    for m in entries:
        if m.get("deprecated"):
            where = f"deprecated -> {m['deprecated']}"
        elif m.get("superseded_by"):
            where = f"earlier version of {m['superseded_by']}"
        else:
            where = (
                "local" if local_path(m["name"]) else ("download" if m.get("url") else "missing")
            )
        rows.append(
            [
                m["name"],
                ",".join(m.get("aliases", [])),
                " ".join(m["elements"]),
                m.get("reference_method") or "",
                _size(m.get("size")),
                where,
            ]
        )
    click.echo(_table(["name", "aliases", "elements", "reference", "size", "status"], rows))


@models.command("info")
@click.argument("name")
def info_cmd(name: str) -> None:
    """Manifest entry and model card (when the file is local) of NAME, as JSON."""
    from tdn_calc.registry import model_info

    _entry(name)
    try:
        info = model_info(name)
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(info, indent=2, ensure_ascii=False))


@models.command("verify")
@click.argument("name", required=False)
def verify_cmd(name: str | None) -> None:
    """Check the sha256 of the local file of NAME (default: every model). Exits with 1 on a
    mismatch, or when the named model is not available locally."""
    from tdn_calc.registry import list_models, verify_model

    names = (
        [_entry(name)["name"]]
        if name
        else [m["name"] for m in list_models() if not m.get("deprecated")]
    )
    failed = False
    for n in names:
        result = verify_model(n)
        status = result["status"]
        if status == "ok":
            click.echo(f"{n}: ok ({result['path']})")
        elif status == "missing":
            click.echo(f"{n}: missing (not downloaded; run `tdn models download {n}`)")
            failed |= name is not None
        else:
            click.echo(
                f"{n}: mismatch: {result['path']} has sha256 {result['actual']}, "
                f"expected {result['expected']}"
            )
            failed = True
    if failed:
        raise SystemExit(1)


@models.command("download")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if a valid copy is cached.")
def download_cmd(name: str, force: bool) -> None:
    """Download NAME into the cache ($TDN_CACHE_DIR, default ~/.cache/tdn-calc)."""
    from tdn_calc.registry import resolve_model

    entry = _entry(name)
    try:
        path = resolve_model(entry["name"], force_download=force)
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{entry['name']}: {path} (sha256 verified)")


@models.command("summarize")
@click.argument("checkpoint")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="New checkpoint with the training-set summary in its card.")
@click.option("--split", default="train", show_default=True,
              type=click.Choice(["train", "val", "test", "all"]), help="Frames to summarise.")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Split JSON (default: the one named in the model card, else the data's).")
@click.option("--max-frames", type=int, default=20000, show_default=True,
              help="Summarise a seeded random subset of at most this many frames (0: all).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def summarize_cmd(checkpoint: str, data: tuple[str, ...], output: str, split: str,
                  split_file: str | None, max_frames: int, device: str, force: bool) -> None:
    """Attach the training-set summary behind the per-atom extrapolation scores to CHECKPOINT
    (a file or registered name), fitted on the SPLIT frames of the data set DATA (several: the
    data sets the model was trained on together, as its config lists them), and write the
    result to OUTPUT (the input is never changed; register OUTPUT's new sha256)."""
    from pathlib import Path

    from ase.data import chemical_symbols

    from tdn_calc.extrapolation import attach_to_checkpoint
    from tdn_calc.fileio import sha256_file

    if any(Path(output).resolve() == Path(d).resolve() for d in data):
        raise click.BadParameter(f"{output} is a data set", param_hint="-o/--output")
    if Path(output).exists() and not force:
        raise click.BadParameter(f"{output} exists; pass --force to replace it",
                                 param_hint="-o/--output")  # fmt: skip
    if max_frames < 0:
        raise click.BadParameter(f"must be >= 0, got {max_frames}", param_hint="--max-frames")
    try:
        dist = attach_to_checkpoint(checkpoint, list(data), output, split=split,
                                    split_file=split_file, device=device,
                                    max_frames=max_frames or None)  # fmt: skip
    except TDNError as exc:
        raise click.ClickException(str(exc)) from exc
    counts = sorted(dist.elements.items())
    atoms = ", ".join(f"{chemical_symbols[z]} {s.n_atoms}" for z, s in counts)
    click.echo(f"summarised {dist.n_frames} {split} frames (atoms: {atoms}); "
               f"{len(dist.min_distances)} element pairs")  # fmt: skip
    click.echo(f"wrote {output} (sha256 {sha256_file(output)})")
