"""Simulated platforms: fixed answers for resolution, docs and test gating without hardware.

Spec grammar: ``PLATFORM[:ARCH][:key=value]...``, e.g. ``cuda:sm90:toolkit=12.8``.
"""

from __future__ import annotations

from typing import Any

from packaging.version import InvalidVersion, Version

from accelbridge.errors import PlatformError
from accelbridge.platforms.arch import Arch
from accelbridge.platforms.base import Platform

SPEC_KEYS = {"toolkit": "runtime version, e.g. 12.8", "devices": "device count", "name": "device name"}


class SimulatedMixin:
    """Overrides the hardware probes of a vendor class with fixed answers."""

    simulated = True

    def __init__(self, arch: Arch, toolkit: Version | None, devices: int, device_name: str, spec: str):
        self._arch = arch
        self._toolkit = toolkit
        self._devices = devices
        self._device_name = device_name
        self.spec = spec

    def _check(self, device: int) -> None:
        if not 0 <= device < self._devices:
            raise PlatformError(f"device {device} out of range: simulated {self.spec!r} has {self._devices}")

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self._devices

    def capability(self, device: int = 0) -> tuple[int, int]:
        self._check(device)
        return self._arch.capability

    def arch(self, device: int = 0) -> Arch:
        self._check(device)
        return self._arch

    def device_name(self, device: int = 0) -> str:
        self._check(device)
        return self._device_name

    @property
    def toolkit_version(self) -> Version | None:
        return self._toolkit

    def describe(self) -> dict[str, Any]:
        d = super().describe()  # type: ignore[misc]
        d["simulation_spec"] = self.spec
        return d


_SIMULATED_CLASSES: dict[type[Platform], type[Platform]] = {}


def _simulated_class(cls: type[Platform]) -> type[Platform]:
    if cls not in _SIMULATED_CLASSES:
        _SIMULATED_CLASSES[cls] = type(f"Simulated{cls.__name__}", (SimulatedMixin, cls), {})
    return _SIMULATED_CLASSES[cls]


def parse_spec(spec: str, classes: dict[str, type[Platform]]) -> Platform:
    """Build a simulated platform; every malformed part raises PlatformError naming it."""
    if not isinstance(spec, str) or not spec.strip():
        raise PlatformError("empty simulation spec; expected PLATFORM[:ARCH][:key=value]..., e.g. cuda:sm90")
    parts = [p.strip() for p in spec.strip().split(":")]
    name = parts[0].lower()
    if name not in classes:
        raise PlatformError(f"unknown platform {parts[0]!r} in spec {spec!r}; valid: {', '.join(sorted(classes))}")
    cls = classes[name]
    rest = parts[1:]
    arch_text = cls.default_simulated_arch
    if rest and "=" not in rest[0]:
        arch_text = rest.pop(0)
    if not arch_text:
        raise PlatformError(f"spec {spec!r} needs an arch for platform {name!r}, e.g. {name}:ARCH")
    arch = Arch.parse(arch_text)
    if arch.family != cls.arch_family:
        raise PlatformError(
            f"arch {arch.name} ({arch.vendor}) does not belong to platform {name!r}, "
            f"which takes {cls.arch_family} archs"
        )
    options: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise PlatformError(f"bad spec part {part!r} in {spec!r}: expected key=value")
        if key not in SPEC_KEYS:
            valid = ", ".join(f"{k} ({v})" for k, v in SPEC_KEYS.items())
            raise PlatformError(f"unknown spec key {key!r} in {spec!r}; valid: {valid}")
        options[key] = value
    toolkit_text = options.get("toolkit", cls.default_simulated_toolkit)
    try:
        toolkit = Version(toolkit_text) if toolkit_text else None
    except InvalidVersion:
        raise PlatformError(f"bad toolkit version {toolkit_text!r} in spec {spec!r}, e.g. toolkit=12.8") from None
    try:
        devices = int(options.get("devices", 1))
        if devices < 1:
            raise ValueError
    except ValueError:
        raise PlatformError(f"bad device count {options['devices']!r} in spec {spec!r}: a positive integer") from None
    device_name = options.get("name", f"simulated {name} {arch.name}")
    return _simulated_class(cls)(arch, toolkit, devices, device_name, spec)  # type: ignore[call-arg]
