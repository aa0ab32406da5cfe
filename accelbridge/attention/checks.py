"""The check level: which of each op's declared checks run before the kernel.

``cheap`` (the default) runs the metadata checks: dtype, rank, shape, head dims, device: no
device->host copy, no sync, no extra kernel. ``full`` adds the values checks (monotonic
cu_seqlens, max_seqlen, page-table range, cache capacity), which read index tensors on the host:
a sync per call, skipped during CUDA graph capture; selftest, conformance and the pytest plugin
turn it on. ``off`` runs none (the kernel's own errors only).

The level is read once, on first use, from ``ACCELBRIDGE_CHECKS``; ``set_level`` overrides it
and survives platform changes and ``attention.reset()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from accelbridge import env
from accelbridge.errors import InvalidArgumentError, caller_stacklevel

LEVELS = ("full", "cheap", "off")
_level: str | None = None
_listeners: list[Callable[[], None]] = []


def level() -> str:
    """The level in force (read from the environment on first use)."""
    return _level if _level is not None else set_level(None)


def set_level(level: str | None = None) -> str:
    """Set the check level; None re-reads ``ACCELBRIDGE_CHECKS``. Returns the level in force."""
    global _level
    if level is None:
        level = env.get("ACCELBRIDGE_CHECKS").lower()
        if level not in LEVELS:  # from the environment: warn and keep the safest level
            warnings.warn(f"accelbridge: ACCELBRIDGE_CHECKS={level!r} is not one of {', '.join(LEVELS)}; using full",
                          RuntimeWarning, stacklevel=caller_stacklevel())  # fmt: skip
            level = "full"
    if level not in LEVELS:
        raise InvalidArgumentError(f"set_checks({level!r}): expected one of {', '.join(LEVELS)}")
    changed = level != _level
    _level = level
    if changed:
        for listener in list(_listeners):
            listener()
    return level


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` when the level changes (the facade recompiles its calls)."""
    _listeners.append(listener)
