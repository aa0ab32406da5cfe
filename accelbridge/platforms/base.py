"""The Platform base class: one object answers every capability question about a vendor."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from packaging.version import Version

from accelbridge.platforms import devices
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

    def capability(self, device: int | None = None) -> tuple[int, int]:
        """Of ``device``; None: this process's device (``device_index``), as everywhere below."""
        raise NotImplementedError

    def device_name(self, device: int | None = None) -> str:
        raise NotImplementedError

    def selected_device(self) -> int | None:
        """The runtime's current device once this process has selected or used one; None before.

        Never initialises a GPU runtime: a process that has not touched one resolves by LOCAL_RANK.
        """
        return None

    @cached_property
    def toolkit_version(self) -> Version | None:
        return None

    def device_index(self, device: int | None = None) -> int:
        """``device``, or this process's device when None (platforms/devices.py says how it is chosen)."""
        return devices.process_device(self) if device is None else int(device)

    def arch(self, device: int | None = None) -> Arch:
        return self.arch_from_capability(self.capability(self.device_index(device)))

    def uniform_devices(self) -> bool:
        """Whether every visible device has one arch (a call's device then cannot change its resolution)."""
        cached = self.__dict__.get("_uniform")
        if cached is None:
            count = self.device_count() if self.is_available() else 0
            cached = self.__dict__["_uniform"] = len({self.arch(i) for i in range(count)}) <= 1
        return cached

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

        names = self.dtype_names_for(self.arch())  # of this process's device
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
        device = self.device_index() if available else None
        arch = self.arch(device) if available else None
        toolkit = self.toolkit_version
        return {
            "platform": self.name,
            "vendor": self.vendor,
            "device_type": self.device_type,
            "available": available,
            # this process's device (and the launcher's rank variables, where set): what it resolves against
            "device": devices.label(self, device) if device is not None else None,
            **devices.launch(),
            "arch": arch.name if arch else None,
            "capability": list(self.capability(device)) if available and self.has_capability else None,
            "toolkit_version": str(toolkit) if toolkit is not None else None,
            "device_count": count,
            "device_names": [self.device_name(i) for i in range(count)],
            "device_archs": [self.arch(i).name for i in range(count)],
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
