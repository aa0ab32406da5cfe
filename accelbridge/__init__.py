"""accelbridge: tell what an accelerator can run, why, and run it.

Importing this package stays cheap: no torch, no kernel package, no GPU. The submodules
load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("platforms", "ops", "kernels_catalog", "attention", "testing", "errors", "env")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'accelbridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_SUBMODULES])
