"""A compiled Triton kernel launched through its C launcher directly, below Triton's Python runner.

A compiled kernel's runner, per launch (Triton 3.6): looks up the current device and stream, builds a launch-metadata
dict, enters the launcher's Python (scratch checks) and its descriptor wrapper, which re-encodes each TMA
descriptor (``fill_tma_descriptor``, a driver call) on every launch; the C launcher then calls two hook chains back
in Python (3.6's hooks are chains, never None). Session 16's cProfile of dense MLA decode at B=1 on an H100 put 68
of the call's 177 us (inflated by cProfile) there, for two launches. A plan's launch has the same kernel, constants
and geometry on every call, so ``bind`` lays the C launcher's arguments out once; a call sets its grid, stream and
tensors, and per descriptor the map encoded for its tensor's pointer, encoded once a pointer (a KV cache's is the
same every decode step; the map holds the pointer and the plan's geometry, nothing else of the tensor).

It reads Triton internals (the launcher's argument layout, its descriptor wrapper's closure), so it binds only
where they are those of the releases it was checked on, and declines otherwise (``bind`` returns None): the launch
then goes through the compiled kernel's runner. A call declines, for the runner to launch it, while a launch hook
is set (a profiler such as proton) or another device is current.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

_CHECKED = ("3.6.",)  # triton releases whose CUDA launcher this follows
_MOST_POINTERS = 16  # encoded maps a descriptor keeps (a model's caches: one pointer each)


class Bound:
    """One planned launch's C-launcher arguments, laid out once; ``__call__`` fills a call's grid, stream, values."""

    __slots__ = ("raw", "head", "device", "values", "descriptors", "current_device", "stream", "hooks")

    def __init__(self, raw: Callable[..., Any], head: list[Any], device: int, values: list[tuple[int, int]],
                 descriptors: list[tuple[int, int, int, Callable[[Any], Any], Any, dict[int, list[Any]]]],
                 runtime: dict[str, Any]):  # fmt: skip
        self.raw, self.head, self.device = raw, head, device
        self.values = values  # (index in the call's values, position in the launcher's arguments)
        self.descriptors = descriptors  # (value index, position, width, make, meta, encoded maps by pointer)
        self.current_device, self.stream, self.hooks = runtime["device"], runtime["stream"], runtime["hooks"]

    def __call__(self, values: Sequence[Any], grid: tuple[int, int, int]) -> bool:
        """Launch with ``values`` (the plan's per-call values, in its order) on ``grid``; False: declined."""
        enter, leave = self.hooks.launch_enter_hook, self.hooks.launch_exit_hook  # 3.6: chains (None: none)
        if getattr(enter, "calls", enter) or getattr(leave, "calls", leave) or self.current_device() != self.device:
            return False
        final = self.head.copy()
        final[0], final[1], final[2] = grid
        final[3] = self.stream(self.device)
        for index, position in self.values:
            final[position] = values[index]
        for index, position, width, make, meta, maps in self.descriptors:
            tensor = values[index]
            pointer = tensor.data_ptr()
            encoded = maps.get(pointer)
            if encoded is None:
                if len(maps) >= _MOST_POINTERS:
                    maps.clear()
                encoded = maps[pointer] = _encode(make(tensor), meta)
            final[position : position + width] = encoded
        self.raw(*final)
        return True


def bind(compiled: Any, args: Sequence[Any], slots: Sequence[int], makers: dict[int, Callable[[Any], Any]],
         first: Sequence[Any]) -> Bound | None:  # fmt: skip
    """``compiled``'s launch laid out for its C launcher, or None where this triton's is not the checked one.

    ``args``: every parameter's value (the per-call ones as a placeholder); ``slots``: the parameter index of each
    per-call value; ``makers``: by parameter index, the descriptor a per-call tensor is read through; ``first``: the
    first call's per-call values (its descriptors' widths)."""
    import triton

    if not triton.__version__.startswith(_CHECKED):
        return None
    try:
        from triton import knobs
        from triton.backends.nvidia import driver as nvidia
        from triton.runtime.driver import driver
    except ImportError:
        return None
    launcher = getattr(compiled, "run", None)
    if type(launcher) is not nvidia.CudaLauncher or launcher.global_scratch_size or launcher.profile_scratch_size:
        return None
    raw, metas = _raw_launch(launcher.launch, sorted(makers))
    if raw is None:
        return None
    head = [0, 0, 0, 0, compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl, None, None,
            compiled.packed_metadata, None, None, None]  # fmt: skip
    if len(head) != nvidia._BASE_ARGS_FORMAT_LEN:
        return None
    active = driver.active
    # 3.6's current device is torch.cuda.current_device, a Python wrapper (lazy init, done by now) over this
    device = getattr(torch._C, "_cuda_getDevice", active.get_current_device)
    runtime = {"device": device, "stream": active.get_current_stream, "hooks": knobs.runtime}
    return lay_out(raw, head, args, slots, makers, metas, first, runtime)


def lay_out(raw: Callable[..., Any], head: list[Any], args: Sequence[Any], slots: Sequence[int],
            makers: dict[int, Callable[[Any], Any]], metas: Sequence[Any], first: Sequence[Any],
            runtime: dict[str, Any]) -> Bound:  # fmt: skip
    """The C launcher's arguments as Triton's descriptor wrapper would pass them: ``head`` (grid, stream, function,
    launch options, metadata, hooks), then each parameter's value, a descriptor spread over its encoded map, shape
    and strides; the per-call values left as placeholders (the template holds no tensor of a call)."""
    head = list(head)
    by_slot = {slot: index for index, slot in enumerate(slots)}
    values, descriptors, order = [], [], sorted(makers)
    for slot, value in enumerate(args):
        index = by_slot.get(slot)
        if slot in makers:
            meta = metas[order.index(slot)]
            tensor = first[index]
            encoded = _encode(makers[slot](tensor), meta)
            descriptors.append((index, len(head), len(encoded), makers[slot], meta, {tensor.data_ptr(): encoded}))
            width = len(encoded)
            head.extend([None] * width)
            continue
        if index is not None:
            values.append((index, len(head)))
            value = None
        head.append(value)
    return Bound(raw, head, runtime["device"](), values, descriptors, runtime)


def _raw_launch(launch: Any, descriptor_slots: list[int]) -> tuple[Any, list[Any]]:
    """The C launch function under the launcher's descriptor wrapper, and the descriptors' metadata (in parameter
    order); (None, []) where the wrapper is not the one known."""
    code = getattr(launch, "__code__", None)
    if not descriptor_slots:
        return (launch, []) if code is None else (None, [])  # no descriptor: the C function itself
    if code is None or set(code.co_freevars) != {"launcher", "tensordesc_indices", "tensordesc_meta"}:
        return None, []
    cells = {name: cell.cell_contents for name, cell in zip(code.co_freevars, launch.__closure__)}
    metas = cells["tensordesc_meta"]
    if sorted(cells["tensordesc_indices"]) != descriptor_slots or any(m is None for m in metas):
        return None, []
    return cells["launcher"], list(metas)


def _encode(desc: Any, meta: Any) -> list[Any]:
    """A descriptor as the C launcher takes it: the encoded map, then its shape and strides."""
    from triton.backends.nvidia.driver import make_tensordesc_arg

    return make_tensordesc_arg(desc, meta)
