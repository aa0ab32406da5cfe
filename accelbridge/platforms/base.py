"""The Platform base class: one object answers every capability question about a vendor."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from packaging.version import Version

from accelbridge.platforms.arch import Arch
from accelbridge.platforms.dtypes import torch_dtype

if TYPE_CHECKING:
    import torch


class Platform:
    """A vendor's accelerator stack as torch sees it.

    Subclasses answer the hardware probes (``is_available``, ``device_count``,
    ``capability``, ``device_name``, ``toolkit_version``); everything derived from the arch
    (dtypes, fp8 flavour) is a classmethod so that real and simulated platforms share it.
    """

    name: ClassVar[str] = "base"
    vendor: ClassVar[str] = "unknown"
    device_type: ClassVar[str] = "cpu"
    visible_devices_env: ClassVar[str | None] = None
    arch_family: ClassVar[str] = "cpu"
    simulated: ClassVar[bool] = False
    # what a bare simulation spec (`cuda`, `rocm`) stands for: an arch name and a toolkit version
    default_simulated_arch: ClassVar[str | None] = None
    default_simulated_toolkit: ClassVar[str | None] = None
    # among the built-in platforms, lower probes first (plugins are probed before all of them)
    detection_priority: ClassVar[int] = 100
    # an accelerator: an op served by the pure-torch reference here is a slow path the user must hear of
    accelerator: ClassVar[bool] = True
    # whether the vendor runtime reports a (major, minor) compute capability (not the host CPU)
    has_capability: ClassVar[bool] = True

    # -- hardware probes ---------------------------------------------------------------
    def is_available(self) -> bool:
        raise NotImplementedError

    def device_count(self) -> int:
        raise NotImplementedError

    def capability(self, device: int = 0) -> tuple[int, int]:
        raise NotImplementedError

    def device_name(self, device: int = 0) -> str:
        raise NotImplementedError

    @cached_property
    def toolkit_version(self) -> Version | None:
        return None

    def arch(self, device: int = 0) -> Arch:
        return self.arch_from_capability(self.capability(device))

    # -- facts derived from the arch -----------------------------------------------------
    @classmethod
    def arch_from_capability(cls, capability: tuple[int, int]) -> Arch:
        return Arch(cls.arch_family, tuple(capability))

    @classmethod
    def dtype_names_for(cls, arch: Arch) -> tuple[str, ...]:
        """Short names of the dtypes attention kernels of this arch handle."""
        return ("fp32", "fp16", "bf16")

    @classmethod
    def fp8_e4m3_attr_for(cls, arch: Arch) -> str:
        return "float8_e4m3fn"

    @property
    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        from accelbridge.platforms.dtypes import DTYPE_ATTRS

        names = self.dtype_names_for(self.arch())
        attrs = [self.fp8_e4m3_dtype_attr if n == "fp8_e4m3" else DTYPE_ATTRS[n] for n in names]
        return tuple(torch_dtype(a) for a in attrs)

    @property
    def fp8_e4m3_dtype_attr(self) -> str:
        return self.fp8_e4m3_attr_for(self.arch())

    @property
    def fp8_e4m3_dtype(self) -> torch.dtype:
        return torch_dtype(self.fp8_e4m3_dtype_attr)

    def describe(self) -> dict[str, Any]:
        """The JSON-serialisable report `accelbridge info --json` prints."""
        available = self.is_available()
        count = self.device_count() if available else 0
        arch = self.arch() if available else None
        toolkit = self.toolkit_version
        return {
            "platform": self.name,
            "vendor": self.vendor,
            "device_type": self.device_type,
            "available": available,
            "arch": arch.name if arch else None,
            "capability": list(self.capability()) if available and self.has_capability else None,
            "toolkit_version": str(toolkit) if toolkit is not None else None,
            "device_count": count,
            "device_names": [self.device_name(i) for i in range(count)],
            "dtypes": list(self.dtype_names_for(arch)) if arch else [],
            # only where the arch handles FP8 (None says: no FP8 attention here)
            "fp8_e4m3_dtype": self.fp8_e4m3_attr_for(arch)
            if arch and "fp8_e4m3" in self.dtype_names_for(arch)
            else None,
            "visible_devices_env": self.visible_devices_env,
            "simulated": self.simulated,
        }

    def __repr__(self) -> str:
        sim = " simulated" if self.simulated else ""
        return f"<{type(self).__name__} {self.name}{sim}>"
