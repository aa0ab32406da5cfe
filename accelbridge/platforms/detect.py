"""Which platform is this? Env override, then out-of-tree plugins, then musa, rocm, cuda, cpu.

Nothing here runs at import time; probing happens on the first ``platforms.current()``.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points

from accelbridge import env
from accelbridge.errors import PlatformError
from accelbridge.platforms.base import Platform

PLUGIN_GROUP = "accelbridge.platforms"
# the built-in platforms, loaded exactly as an entry point of PLUGIN_GROUP would be
BUILTIN_TARGETS: dict[str, str] = {
    "musa": "accelbridge.platforms.musa:MusaPlatform",
    "rocm": "accelbridge.platforms.rocm:RocmPlatform",
    "cuda": "accelbridge.platforms.cuda:CudaPlatform",
    "cpu": "accelbridge.platforms.cpu:CpuPlatform",
}


@dataclass
class PluginRecord:
    """One entry point of the plugin group and what became of it."""

    name: str
    target: str
    status: str  # "loaded" | "failed"
    error: str | None = None
    cls: type[Platform] | None = None
    builtin: bool = False

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "target": self.target, "status": self.status, "error": self.error}


def _fail(record: PluginRecord, stage: str, exc: BaseException) -> None:
    record.status = "failed"
    record.error = f"{stage}: {type(exc).__name__}: {exc}"
    warnings.warn(
        f"accelbridge: platform plugin {record.name!r} ({record.target}) failed at {record.error}; "
        "it is skipped (see `accelbridge info`)",
        RuntimeWarning,
        stacklevel=3,
    )


def _load_target(target: str) -> type[Platform]:
    """``module:Class`` -> the Platform subclass (what an entry point's value names)."""
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Platform)):
        raise TypeError(f"{target} is not a Platform subclass")
    return cls


def load_record(name: str, target: str, builtin: bool = False) -> PluginRecord:
    """One platform from its ``module:Class`` target; a failure is recorded and reported, never raised."""
    record = PluginRecord(name, target, "loaded", builtin=builtin)
    try:
        record.cls = _load_target(target)
    except Exception as e:  # a broken plugin must never take detection down
        _fail(record, "import", e)
    return record


def discover_plugins() -> list[PluginRecord]:
    """Load every entry point of the ``accelbridge.platforms`` group; failures are reported."""
    return [load_record(ep.name, ep.value) for ep in entry_points(group=PLUGIN_GROUP)]


def builtin_records() -> list[PluginRecord]:
    return [load_record(name, target, builtin=True) for name, target in BUILTIN_TARGETS.items()]


def platform_classes(plugins: list[PluginRecord]) -> dict[str, type[Platform]]:
    """Every known platform name -> class: plugins first, then the built-in ones (the same records)."""
    classes: dict[str, type[Platform]] = {}
    for record in [*plugins, *builtin_records()]:
        if record.cls is not None:
            classes.setdefault(record.cls.name, record.cls)
    return classes


def detect(plugins: list[PluginRecord]) -> Platform:
    """The active platform of this process (simulation is handled by the caller)."""
    classes = platform_classes(plugins)
    forced = env.get("ACCELBRIDGE_PLATFORM")
    if forced:
        if forced not in classes:
            raise PlatformError(
                f"ACCELBRIDGE_PLATFORM={forced!r} is not a known platform; valid: {', '.join(sorted(classes))}"
            )
        platform = classes[forced]()
        if not platform.is_available():
            raise PlatformError(
                f"ACCELBRIDGE_PLATFORM={forced!r} but that platform is not available on this machine "
                f"(to pretend, use ACCELBRIDGE_SIMULATE={forced}:ARCH instead)"
            )
        return platform
    for record in plugins:
        if record.cls is None:
            continue
        try:
            platform = record.cls()
            if platform.is_available():
                return platform
        except Exception as e:
            _fail(record, "detection", e)
    plugin_classes = {r.cls for r in plugins if r.cls is not None}
    for cls in sorted((c for c in classes.values() if c not in plugin_classes), key=lambda c: c.detection_priority):
        platform = cls()
        if platform.is_available():
            return platform
    raise AssertionError("unreachable: the cpu platform is always available")
