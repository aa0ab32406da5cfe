"""Simulated platforms: fixed answers for resolution, docs and test gating without hardware.

Spec grammar: ``PLATFORM[:ARCH][:key=value]...``, e.g. ``cuda:sm90:toolkit=12.8``; a node whose
devices differ names one arch per device: ``cuda:archs=sm90,sm100`` (two devices).
"""

from __future__ import annotations

from typing import Any

from packaging.version import InvalidVersion, Version

from accelbridge.errors import PlatformError
from accelbridge.platforms.arch import Arch
from accelbridge.platforms.base import Platform

SPEC_KEYS = {"toolkit": "runtime version, e.g. 12.8", "devices": "device count", "name": "device name",
             "archs": "one arch per device, comma-separated, e.g. sm90,sm100"}  # fmt: skip


class SimulatedMixin:
    """Overrides the hardware probes of a vendor class with fixed answers."""

    simulated = True

    def __init__(self, archs: list[Arch], toolkit: Version | None, device_name: str, spec: str):
        self._archs = archs
        self._toolkit = toolkit
        self._devices = len(archs)
        self._device_name = device_name
        self.spec = spec

    def _check(self, device: int | None) -> int:
        device = self.device_index(device)  # type: ignore[attr-defined]
        if not 0 <= device < self._devices:
            raise PlatformError(f"device {device} out of range: simulated {self.spec!r} has {self._devices}")
        return device

    def is_available(self) -> bool:
        return True

    def selected_device(self) -> int | None:
        return None  # no runtime: LOCAL_RANK, else device 0

    def device_count(self) -> int:
        return self._devices

    def capability(self, device: int | None = None) -> tuple[int, int]:
        return self._archs[self._check(device)].capability

    def arch(self, device: int | None = None) -> Arch:
        return self._archs[self._check(device)]

    def device_name(self, device: int | None = None) -> str:
        return self._device_name.replace("{arch}", self._archs[self._check(device)].name)

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
    arch_text, positional = cls.default_simulated_arch, None
    if rest and "=" not in rest[0]:
        arch_text = positional = rest.pop(0)
    if not arch_text:
        raise PlatformError(f"spec {spec!r} needs an arch for platform {name!r}, e.g. {name}:ARCH")
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
    per_device = [a.strip() for a in options["archs"].split(",")] if "archs" in options else None
    if per_device and positional is not None and positional != per_device[0]:
        raise PlatformError(f"spec {spec!r} names arch {arch_text} and archs={options['archs']}: give one of them")
    archs = [_arch(text, name, cls) for text in per_device or [arch_text]]
    try:
        devices = int(options.get("devices", len(archs)))
        if devices < 1 or (per_device and devices != len(archs)):
            raise ValueError
    except ValueError:
        expected = f"{len(archs)}, one per arch of archs=" if per_device else "a positive integer"
        raise PlatformError(f"bad device count {options['devices']!r} in spec {spec!r}: {expected}") from None
    device_name = options.get("name", f"simulated {name} " + ("{arch}" if per_device else archs[0].name))
    return _simulated_class(cls)(archs * (devices // len(archs)), toolkit, device_name, spec)  # type: ignore[call-arg]


def _arch(text: str, name: str, cls: type[Platform]) -> Arch:
    arch = Arch.parse(text)
    if arch.family != cls.arch_family:
        raise PlatformError(
            f"arch {arch.name} ({arch.vendor}) does not belong to platform {name!r}, "
            f"which takes {cls.arch_family} archs"
        )
    return arch
