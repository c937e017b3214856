"""Peer potentials (MACE, SevenNet-0, CHGNet) timed in their own virtual environment."""
