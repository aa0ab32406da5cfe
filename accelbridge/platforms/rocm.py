"""AMD ROCm/HIP. torch's ROCm build answers through ``torch.cuda``, so ``device_type`` is
``cuda``, but archs are gfx names: gfx90a reports capability (9, 0) and is no sm90."""

from __future__ import annotations

import re
from functools import cached_property

from packaging.version import Version

from accelbridge.platforms.arch import Arch
from accelbridge.platforms.base import Platform
from accelbridge.platforms.torch_cuda import TorchCudaDevices

# when gcnArchName is missing: the capability each data-centre part reports
_ARCH_OF_CAPABILITY = {(9, 0): "gfx90a", (9, 4): "gfx942", (9, 5): "gfx950", (11, 0): "gfx1100", (12, 0): "gfx1200"}


class RocmPlatform(TorchCudaDevices, Platform):
    name = "rocm"
    vendor = "amd"
    device_type = "cuda"
    visible_devices_env = "HIP_VISIBLE_DEVICES"
    arch_family = "gfx"
    default_simulated_arch = "gfx942"
    default_simulated_toolkit = "6.4"
    detection_priority = 20

    def is_available(self) -> bool:
        import torch

        return torch.version.hip is not None and torch.cuda.is_available()

    def arch(self, device: int | None = None) -> Arch:
        import torch

        device = self.device_index(device)
        gcn = getattr(torch.cuda.get_device_properties(device), "gcnArchName", "") or ""
        if gcn:
            # "gfx90a:sramecc+:xnack-" -> "gfx90a"
            return Arch.parse(gcn.split(":", 1)[0])
        return self.arch_from_capability(self.capability(device))

    @cached_property
    def toolkit_version(self) -> Version | None:
        import torch

        hip = torch.version.hip
        if not hip:
            return None
        m = re.match(r"\d+(\.\d+)*", hip)  # "6.2.41133-dd7f95766"
        return Version(m.group(0)) if m else None

    @classmethod
    def arch_from_capability(cls, capability: tuple[int, int]) -> Arch:
        major, minor = capability
        return Arch.parse(_ARCH_OF_CAPABILITY.get((major, minor), f"gfx{major}{minor:x}0"))

    @classmethod
    def dtype_names_for(cls, arch: Arch) -> tuple[str, ...]:
        names = ["fp32", "fp16", "bf16"]
        if arch.version[:2] in ((9, 4), (9, 5)) or arch.version >= (12, 0, 0):
            names += ["fp8_e4m3", "fp8_e5m2"]
        return tuple(names)

    @classmethod
    def fp8_e4m3_attr_for(cls, arch: Arch) -> str:
        # MI300 (gfx94x) implements the fnuz variant; gfx950 and later use OCP e4m3fn
        return "float8_e4m3fnuz" if arch.version[:2] == (9, 4) else "float8_e4m3fn"
