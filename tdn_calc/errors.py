"""Typed errors raised by tdn-calc.

Every error a user can trigger with bad input derives from :class:`TDNError`, so
``except TDNError`` catches them all; each message names the offending value and
what is allowed instead.
"""

from __future__ import annotations


class TDNError(Exception):
    """Base class of all tdn-calc errors."""


class InputError(TDNError, ValueError):
    """A structure or argument that tdn-calc cannot handle (NaN positions, empty Atoms, ...)."""


class UnsupportedElementError(InputError):
    """The structure contains an element the model was not trained on."""


class ConfigError(TDNError, ValueError):
    """An invalid model or training configuration."""


class CheckpointError(TDNError):
    """A checkpoint that is missing, truncated, tampered with or does not match its config."""


class ModelNotFoundError(TDNError, KeyError):
    """An unknown model name; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
