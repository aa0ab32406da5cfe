"""Moore Threads MUSA through the vendor-distributed ``torch_musa`` (device type ``musa``).

Detection imports torch_musa itself and never relies on the torchada shim, which maps
``torch.cuda.*`` onto MUSA."""

from __future__ import annotations

import importlib
from functools import cached_property

from packaging.version import Version

from accelbridge.platforms.arch import Arch
from accelbridge.platforms.base import Platform


def _torch_musa():
    import torch

    if not hasattr(torch, "musa"):
        importlib.import_module("torch_musa")  # registers torch.musa
    return torch.musa


class MusaPlatform(Platform):
    name = "musa"
    vendor = "mthreads"
    device_type = "musa"
    visible_devices_env = "MUSA_VISIBLE_DEVICES"
    arch_family = "mp"
    default_simulated_arch = "mp31"
    default_simulated_toolkit = "4.0"
    detection_priority = 10

    def is_available(self) -> bool:
        try:
            return bool(_torch_musa().is_available())
        except ImportError:
            return False

    def device_count(self) -> int:
        return int(_torch_musa().device_count())

    def capability(self, device: int | None = None) -> tuple[int, int]:
        return tuple(_torch_musa().get_device_capability(self.device_index(device)))  # type: ignore[return-value]

    def device_name(self, device: int | None = None) -> str:
        return str(_torch_musa().get_device_name(self.device_index(device)))

    def selected_device(self) -> int | None:
        musa = _torch_musa()
        initialised = getattr(musa, "is_initialized", lambda: False)()
        return int(musa.current_device()) if initialised else None

    @cached_property
    def toolkit_version(self) -> Version | None:
        import torch

        _torch_musa()
        musa = getattr(torch.version, "musa", None)
        return Version(musa) if musa else None

    @classmethod
    def dtype_names_for(cls, arch: Arch) -> tuple[str, ...]:
        names = ["fp32", "fp16"]
        if arch.version >= (2, 2):
            names.append("bf16")
        if arch.version >= (3, 1):
            names += ["fp8_e4m3", "fp8_e5m2"]
        return tuple(names)
