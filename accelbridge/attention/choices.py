"""Visible choices: which provider serves each op, and never a silent slow path.

Each resolution is logged once per (platform, op) on ``logging.getLogger("accelbridge")`` (INFO:
the provider chosen and why each one before it was passed over). When an accelerator platform
(``Platform.accelerator``: cuda, rocm, musa, plugins that say so) ends on the pure-torch
reference, a ``ReferenceFallbackWarning`` names every refused candidate's reason, once per op; in
strict mode (``ACCELBRIDGE_STRICT=1`` or ``set_strict(True)``) that is an ``UnsupportedFeatureError``.
A call its provider refuses (an argument it cannot honour) and another serves is logged once per
distinct move (INFO), with the refusal's reason.
"""

from __future__ import annotations

import logging
import threading
import warnings

from accelbridge import env
from accelbridge.attention.errors import UnsupportedFeatureError
from accelbridge.errors import caller_stacklevel

REFERENCE = "reference"
log = logging.getLogger("accelbridge")
_lock = threading.Lock()
_logged: set[tuple[str, str, str]] = set()
_warned: set[tuple[str, str]] = set()
_strict: bool | None = None


class ReferenceFallbackWarning(UserWarning):
    """An accelerator's op is served by the float32 pure-torch reference: correct, and slow."""


def set_strict(strict: bool | None = True) -> bool:
    """Strict mode (None: from ``ACCELBRIDGE_STRICT``): an accelerator's op never falls back to the reference."""
    global _strict
    _strict = env.get("ACCELBRIDGE_STRICT").lower() in ("1", "true", "yes") if strict is None else bool(strict)
    return _strict


def strict() -> bool:
    return _strict if _strict is not None else set_strict(None)


def chosen(platform, op: str, provider: str, passed_over: dict[str, list[str]], notes: list[str]) -> None:
    """Record that ``provider`` serves ``op`` here; refuse or warn when it is the reference on an accelerator."""
    where = getattr(platform, "spec", None) or platform.name
    key = (where, op, provider)
    with _lock:
        first = key not in _logged
        _logged.add(key)
    why = "; ".join(f"{pid}: {'; '.join(rs) or 'not viable'}" for pid, rs in passed_over.items())
    if first:
        log.info("%s on %s: %s%s", op, where, provider, f" (passed over: {why})" if why else "")
    if provider != REFERENCE or not getattr(platform, "accelerator", False):
        return
    if strict():
        raise UnsupportedFeatureError(op, None, {**passed_over, REFERENCE: ["strict mode: the reference is "
                                      "not allowed on an accelerator (ACCELBRIDGE_STRICT)"]}, notes)  # fmt: skip
    with _lock:
        if (where, op) in _warned:
            return
        _warned.add((where, op))
    message = (f"accelbridge: {op} on {where} is served by the float32 pure-torch reference (slow); "
               f"{why or 'no other provider is listed'}; `accelbridge explain {op}` says more, "
               "ACCELBRIDGE_STRICT=1 makes this an error")  # fmt: skip
    log.warning(message)
    warnings.warn(message, ReferenceFallbackWarning, stacklevel=caller_stacklevel())


def moved(platform, op: str, refused_by: str, provider: str, reasons: list[str]) -> None:
    """One call went from the selected provider to another (an argument it cannot honour): INFO, once per move."""
    where = getattr(platform, "spec", None) or platform.name
    log.info("%s on %s: a call moved from %s to %s (%s: %s)", op, where, refused_by, provider, refused_by,
             "; ".join(reasons) or "refused")  # fmt: skip


def clear() -> None:
    """Forget what was logged and warned (tests, and after a reset)."""
    with _lock:
        _logged.clear()
        _warned.clear()
