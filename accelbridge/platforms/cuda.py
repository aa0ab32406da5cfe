"""NVIDIA CUDA, as torch's CUDA build reports it."""

from __future__ import annotations

from functools import cached_property

from packaging.version import Version

from accelbridge.platforms.arch import Arch
from accelbridge.platforms.base import Platform
from accelbridge.platforms.torch_cuda import TorchCudaDevices


class CudaPlatform(TorchCudaDevices, Platform):
    name = "cuda"
    vendor = "nvidia"
    device_type = "cuda"
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    arch_family = "sm"
    default_simulated_arch = "sm90"
    default_simulated_toolkit = "12.8"
    detection_priority = 30

    def is_available(self) -> bool:
        import torch

        # a ROCm build answers torch.cuda too; it is not CUDA
        return torch.version.cuda is not None and torch.version.hip is None and torch.cuda.is_available()

    @cached_property
    def toolkit_version(self) -> Version | None:
        import torch

        return Version(torch.version.cuda) if torch.version.cuda else None

    @classmethod
    def dtype_names_for(cls, arch: Arch) -> tuple[str, ...]:
        names = ["fp32", "fp16"]
        if arch.version >= (8, 0):
            names.append("bf16")
        if arch.version >= (8, 9):
            names += ["fp8_e4m3", "fp8_e5m2"]
        return tuple(names)
