"""Which device a process's calls resolve against, and the rank its launcher (torchrun) gave it.

Tensor-parallel engines run one process per GPU, and every rank must resolve against its own
device, never device 0 by accident (a node may mix archs, and ``info`` must tell the ranks
apart). The device of a resolution, first that applies:

1. the device of the call's tensors (the facade passes them on the first call of an op);
2. the device the process selected: the runtime's current device once it is initialised
   (``torch.cuda.set_device(LOCAL_RANK)`` initialises it; asking never does);
3. ``LOCAL_RANK`` (set by torchrun before any GPU call) when the process sees that many devices;
4. device 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from accelbridge import env
from accelbridge.errors import PlatformError

LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def launch() -> dict[str, int]:
    """The launcher's rank variables that are set: {"rank": 1, "local_rank": 1, "world_size": 2}."""
    found = {}
    for name in LAUNCH_VARIABLES:
        text = env.get(name)
        if not text:
            continue
        try:
            found[name.lower()] = int(text)
        except ValueError:
            raise PlatformError(f"{name}={text!r} is not an integer; a launcher such as torchrun sets it to "
                                "this process's rank: unset it or fix the launcher") from None  # fmt: skip
    return found


def process_device(platform: Any) -> int:
    """The device this process's resolutions use when no tensor says (rules 2-4 above)."""
    selected = platform.selected_device()
    if selected is not None:
        return int(selected)
    local = launch().get("local_rank")
    if local is not None and 0 <= local < platform.device_count():
        return local
    return 0


def tensor_device(platform: Any, args: Iterable[Any]) -> int | None:
    """The index of the first argument that is a tensor on this platform's device type, or None."""
    for arg in args:
        device = getattr(arg, "device", None)
        if getattr(device, "type", None) == platform.device_type and getattr(device, "index", None) is not None:
            return int(device.index)
    return None


def label(platform: Any, device: int) -> str:
    """``cuda:1``; the host CPU is just ``cpu``."""
    return platform.device_type if platform.device_type == "cpu" else f"{platform.device_type}:{device}"


def describe_rank(platform: Any, device: int) -> str:
    """``cuda:1 (rank 1 of 2, local rank 1)``: what info and explain print for the rank's device."""
    ranks = launch()
    parts = []
    if "rank" in ranks:
        parts.append(f"rank {ranks['rank']}" + (f" of {ranks['world_size']}" if "world_size" in ranks else ""))
    if "local_rank" in ranks:
        parts.append(f"local rank {ranks['local_rank']}")
    return label(platform, device) + (f" ({', '.join(parts)})" if parts else "")
