"""Platforms: what the accelerator of this process is and what it can do.

``current()`` detects once and caches; ``simulate(SPEC)`` builds a platform with fixed
answers; ``simulated(SPEC)`` makes one current inside a ``with`` block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from accelbridge import env
from accelbridge.errors import PlatformError
from accelbridge.platforms.arch import Arch, ArchMismatchError, register_family
from accelbridge.platforms.base import Platform
from accelbridge.platforms.detect import PluginRecord, detect, discover_plugins, platform_classes
from accelbridge.platforms.rules import ArchRule, RuleError, parse_int_rule
from accelbridge.platforms.simulate import parse_spec

__all__ = [
    "Arch",
    "ArchMismatchError",
    "ArchRule",
    "Platform",
    "PlatformError",
    "RuleError",
    "current",
    "get_platform_class",
    "on_change",
    "parse_int_rule",
    "plugin_report",
    "register_family",
    "reset",
    "simulate",
    "simulated",
]

_lock = threading.RLock()
_detected: Platform | None = None
_plugins: list[PluginRecord] | None = None
_stack: list[Platform] = []
_listeners: list[Callable[[], None]] = []


def _plugin_records() -> list[PluginRecord]:
    global _plugins
    with _lock:
        if _plugins is None:
            _plugins = discover_plugins()
        return _plugins


def plugin_report() -> list[dict[str, str | None]]:
    """Every platform plugin found, loaded or failed, for `accelbridge info`."""
    return [r.as_dict() for r in _plugin_records()]


def get_platform_class(name: str) -> type[Platform]:
    classes = platform_classes(_plugin_records())
    if name not in classes:
        raise PlatformError(f"unknown platform {name!r}; valid: {', '.join(sorted(classes))}")
    return classes[name]


def known_platforms() -> list[str]:
    return sorted(platform_classes(_plugin_records()))


def current() -> Platform:
    """The active platform: innermost ``simulated()`` block, else ACCELBRIDGE_SIMULATE, else detected."""
    global _detected
    if _stack:
        return _stack[-1]
    if _detected is None:
        with _lock:
            if _detected is None:
                spec = env.get("ACCELBRIDGE_SIMULATE")
                plugins = _plugin_records()
                _detected = simulate(spec) if spec else detect(plugins)
    return _detected


def simulate(spec: str) -> Platform:
    """A platform with fixed answers, e.g. ``simulate("cuda:sm90:toolkit=12.8")``."""
    return parse_spec(spec, platform_classes(_plugin_records()))


@contextmanager
def simulated(spec: str | Platform) -> Iterator[Platform]:
    """Make a simulated platform current inside the block."""
    platform = simulate(spec) if isinstance(spec, str) else spec
    with _lock:
        _stack.append(platform)
    _notify()
    try:
        yield platform
    finally:
        with _lock:
            _stack.remove(platform)
        _notify()


def reset() -> None:
    """Forget the detected platform and plugins (after changing env vars, in tests)."""
    global _detected, _plugins
    with _lock:
        _detected = None
        _plugins = None
    _notify()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever the current platform may have changed (caches above us)."""
    _listeners.append(listener)


def _notify() -> None:
    for listener in list(_listeners):
        listener()
