"""Packaging: every subpackage ships in the wheel, the console scripts and data exist."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = set()
    for folder, package in (("tdn_calc", "tdn_calc"), ("cli", "tdn_calc.cli"),
                            ("models", "tdn_calc.models")):
        for init in (ROOT / folder).rglob("__init__.py"):
            on_disk.add(".".join([package, *init.parent.relative_to(ROOT / folder).parts]))
    missing = sorted(on_disk - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["tdn_calc.cli"] == "cli"
    assert config["package-dir"]["tdn_calc.models"] == "models"


def test_manifest_is_installed_as_package_data():
    manifest = resources.files("tdn_calc.models").joinpath("manifest.json")
    assert manifest.is_file()


@pytest.mark.timeout(300)  # a fresh interpreter
def test_import_is_light_and_exports_public_api():
    code = (
        "import sys, tdn_calc; "
        "assert 'torch' not in sys.modules, 'import tdn_calc must not import torch'; "
        "names = ('TDNCalculator', 'load_model', 'relax'); "
        "print(sorted(n for n in names if n in tdn_calc.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['TDNCalculator', 'load_model', 'relax']"


@pytest.mark.timeout(300)  # a fresh interpreter
def test_tdn_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "tdn_calc.cli.main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for command in ("models", "data", "train", "eval"):
        assert command in out.stdout


@pytest.mark.timeout(300)  # a fresh interpreter
def test_public_relax_is_the_function_not_the_module():
    """``from tdn_calc import relax`` gives the function, also after the module behind it was
    imported (checked in a fresh interpreter, where the lazy import happens)."""
    import subprocess
    import sys

    code = ("import tdn_calc.relax.single; from tdn_calc import TDNCalculator, relax, load_model; "
            "import inspect, sys, tdn_calc; print(inspect.isfunction(relax), callable(load_model), "
            "tdn_calc.relax is sys.modules['tdn_calc.relax.single'].relax)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]


@pytest.mark.parametrize("name, default, other", [
    ("THP_MEM_ALLOC_ENABLE", "1", "0"),  # large edge tensors on huge pages
    ("OMP_WAIT_POLICY", "PASSIVE", "ACTIVE"),  # idle OpenMP threads sleep, never spin
])
@pytest.mark.timeout(300)  # fresh interpreters
def test_import_sets_torch_runtime_defaults_unless_the_user_chose(name, default, other):
    """``import tdn_calc`` sets these before torch is loaded and leaves a user's value alone;
    the console scripts import it before anything loads torch."""
    code = (f"import os, sys, tdn_calc.cli.relax, tdn_calc.cli.main; "
            f"print(os.environ['{name}'], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != name}
    for preset, expected in ((None, default), (other, other)):
        run_env = env if preset is None else {**env, name: preset}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=run_env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [expected, "False"]
