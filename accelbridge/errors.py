"""Error types shared by every layer, so callers can catch one family."""

from __future__ import annotations

import os
import sys


class AccelbridgeError(Exception):
    """Base of every error accelbridge raises on purpose."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" if it has none): enough for a table or a warning."""
    text = str(exc)
    return text.splitlines()[0] if text else ""


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the calling function name the user's line: the first
    frame outside accelbridge (its modules and the functions it generates), however deep the call went."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or frame.f_code.co_filename.startswith("<accelbridge")):  # fmt: skip
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def summary(exc: BaseException) -> str:
    """``TypeName: first line of the message``."""
    return f"{type(exc).__name__}: {first_line(exc)}"


class PlatformError(AccelbridgeError, ValueError):
    """Bad platform name, simulation spec, arch or rule: a user input error."""


class InvalidArgumentError(AccelbridgeError, ValueError):
    """An op argument of the wrong dtype, shape, device or value; raised before any kernel runs."""


class DeclarationError(AccelbridgeError, ValueError):
    """An op declaration (accelbridge.ops) that cannot be right: a bug of the declaration, raised when it is built
    or registered."""
