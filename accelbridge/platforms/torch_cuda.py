"""Device probes through ``torch.cuda``: what torch's CUDA and ROCm builds both answer."""

from __future__ import annotations


class TorchCudaDevices:
    """``device_count``, ``capability``, ``device_name`` and the selected device read from ``torch.cuda``.

    ``torch`` is imported on call; None as a device means this process's (``Platform.device_index``).
    """

    def device_count(self) -> int:
        import torch

        return torch.cuda.device_count()

    def capability(self, device: int | None = None) -> tuple[int, int]:
        import torch

        return tuple(torch.cuda.get_device_capability(self.device_index(device)))  # type: ignore

    def device_name(self, device: int | None = None) -> str:
        import torch

        return torch.cuda.get_device_name(self.device_index(device))  # type: ignore[attr-defined]

    def selected_device(self) -> int | None:
        import torch

        # set_device() initialises the runtime; before that current_device() would initialise it itself
        return torch.cuda.current_device() if torch.cuda.is_initialized() else None
