"""Device probes through ``torch.cuda``: what torch's CUDA and ROCm builds both answer."""

from __future__ import annotations


class TorchCudaDevices:
    """``device_count``, ``capability`` and ``device_name`` read from ``torch.cuda`` (imported on call)."""

    def device_count(self) -> int:
        import torch

        return torch.cuda.device_count()

    def capability(self, device: int = 0) -> tuple[int, int]:
        import torch

        return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]

    def device_name(self, device: int = 0) -> str:
        import torch

        return torch.cuda.get_device_name(device)
