"""The ``tdn`` command group. Each subcommand lives in its own module of this package
and is imported only when invoked, so ``tdn --help`` stays fast."""

from __future__ import annotations

import importlib

import click

# subcommand name -> (module, attribute, one-line help)
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("tdn_calc.cli.models", "models", "List, inspect, verify, download models."),
    "data": ("tdn_calc.cli.data", "data", "Build, import and inspect HDF5 training data sets."),
    "train": ("tdn_calc.cli.train", "train", "Train a TDN model from a config file."),
    "eval": ("tdn_calc.cli.train", "evaluate", "Evaluate a model on an HDF5 data set."),
    "adsorb": ("tdn_calc.cli.adsorb", "adsorb", "Adsorption energies on every site of a slab."),
    "neb": ("tdn_calc.cli.neb", "neb", "Reaction path and barrier (nudged elastic band)."),
    "teachers": ("tdn_calc.cli.teachers", "teachers", "Reference calculators (teachers)."),
    "screen": ("tdn_calc.cli.screen", "screen", "Adsorption screening campaign from a spec."),
    "distill": ("tdn_calc.cli.distill", "distill",
                "Distil a fast TDN for a spec's chemistry by active learning on a teacher."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _SUBCOMMANDS:
            return None
        module, attr, _ = _SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="tdn-calc")
def main() -> None:
    """tdn-calc: TDN interatomic potentials (models, data, training)."""


if __name__ == "__main__":
    main()
