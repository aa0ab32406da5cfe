"""The host CPU: always available, served by the pure-torch reference kernels."""

from __future__ import annotations

import platform as _platform

from accelbridge.platforms.arch import Arch
from accelbridge.platforms.base import Platform


class CpuPlatform(Platform):
    name = "cpu"
    vendor = "cpu"
    device_type = "cpu"
    visible_devices_env = None
    arch_family = "cpu"
    default_simulated_arch = "cpu"
    detection_priority = 1000  # always available: the last resort
    accelerator = False  # the reference is the CPU's provider, not a fallback
    has_capability = False

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def capability(self, device: int | None = None) -> tuple[int, int]:
        return (0, 0)

    def arch(self, device: int | None = None) -> Arch:
        return Arch("cpu", ())

    @classmethod
    def arch_from_capability(cls, capability: tuple[int, int]) -> Arch:
        return Arch("cpu", ())

    def device_name(self, device: int | None = None) -> str:
        return _platform.processor() or _platform.machine() or "cpu"
