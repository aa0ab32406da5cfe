"""Stand-ins for vendor packages, for a vendor's CI before (or beside) the real package.

Each stand-in has its package's exact signatures and computes through accelbridge's reference,
so a catalog entry, its adapter and the conformance checks can be exercised anywhere:

    accelbridge selftest --simulate musa:mp31 --provider mate --standins

They are found only when asked for (``--standins``, or ``sys.path.insert(0, standins.path())``):
a real installed package is never shadowed otherwise.
"""

from __future__ import annotations

from pathlib import Path

NAMES = ("mate",)


def path() -> str:
    """The directory to put on ``sys.path`` for the stand-in packages (``mate``)."""
    return str(Path(__file__).parent)
