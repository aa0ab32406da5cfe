"""Error types shared by every layer, so callers can catch one family."""

from __future__ import annotations


class AccelbridgeError(Exception):
    """Base of every error accelbridge raises on purpose."""


class PlatformError(AccelbridgeError, ValueError):
    """Bad platform name, simulation spec, arch or rule: a user input error."""
