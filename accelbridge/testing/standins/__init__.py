"""Stand-ins for vendor packages, for a vendor's CI before (or beside) the real package.

Each stand-in has its package's exact signatures and computes through accelbridge's reference,
so a catalog entry, its adapter and the conformance checks can be exercised anywhere:

    accelbridge selftest --simulate musa:mp31 --provider mate --standins

They are found only when asked for (``--standins``, or ``sys.path.insert(0, standins.path())``):
a real installed package is never shadowed otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NAMES = ("mate",)


def path() -> str:
    """The directory to put on ``sys.path`` for the stand-in packages (``mate``)."""
    return str(Path(__file__).parent)


def through_reference(name: str, arguments: Mapping[str, Any], **overrides: Any) -> Any:
    """Call the reference function ``name`` with the arguments it declares, taken from ``arguments``.

    What a stand-in (or a test fixture) mimicking a vendor function does: forward what the reference
    implements, nothing else, so an argument the stand-in drops shows up as a wrong result.
    """
    from accelbridge.ops import reference

    fn = getattr(reference, name)
    params = inspect.signature(fn).parameters
    return fn(**{**{k: v for k, v in arguments.items() if k in params}, **overrides})
