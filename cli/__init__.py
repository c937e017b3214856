"""Command-line interface: ``tdn-relax`` and ``tdn`` (installed as ``tdn_calc.cli``)."""
