"""Pretrained TDN checkpoints and their manifest (installed as ``tdn_calc.models``)."""
