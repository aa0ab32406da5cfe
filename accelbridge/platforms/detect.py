"""Which platform is this? Env override, then out-of-tree plugins, then musa, rocm, cuda, cpu.

Nothing here runs at import time; probing happens on the first ``platforms.current()``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points

from accelbridge import env
from accelbridge.errors import PlatformError
from accelbridge.platforms.base import Platform
from accelbridge.platforms.cpu import CpuPlatform
from accelbridge.platforms.cuda import CudaPlatform
from accelbridge.platforms.musa import MusaPlatform
from accelbridge.platforms.rocm import RocmPlatform

PLUGIN_GROUP = "accelbridge.platforms"
BUILTIN: dict[str, type[Platform]] = {
    "musa": MusaPlatform,
    "rocm": RocmPlatform,
    "cuda": CudaPlatform,
    "cpu": CpuPlatform,
}
# probing order after the plugins
DETECTION_ORDER = ("musa", "rocm", "cuda", "cpu")


@dataclass
class PluginRecord:
    """One entry point of the plugin group and what became of it."""

    name: str
    target: str
    status: str  # "loaded" | "failed"
    error: str | None = None
    cls: type[Platform] | None = None

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


def discover_plugins() -> list[PluginRecord]:
    """Load every entry point of the ``accelbridge.platforms`` group; failures are reported."""
    records = []
    for ep in entry_points(group=PLUGIN_GROUP):
        record = PluginRecord(ep.name, ep.value, "loaded")
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Platform)):
                raise TypeError(f"{ep.value} is not a Platform subclass")
            record.cls = cls
        except Exception as e:  # a broken plugin must never take detection down
            _fail(record, "import", e)
        records.append(record)
    return records


def platform_classes(plugins: list[PluginRecord]) -> dict[str, type[Platform]]:
    """Every known platform name -> class: plugins first, then the built-in ones."""
    classes = {r.cls.name: r.cls for r in plugins if r.cls is not None}
    for name, cls in BUILTIN.items():
        classes.setdefault(name, cls)
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
    for name in DETECTION_ORDER:
        platform = BUILTIN[name]()
        if platform.is_available():
            return platform
    raise AssertionError("unreachable: the cpu platform is always available")
