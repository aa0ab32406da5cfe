"""A Triton launch planned once per call geometry, then launched through its compiled kernel.

Triton's JIT binds every argument on every call, computes its specialisation (integers equal to 1 or
divisible by 16, pointers on 16-byte boundaries), keys its cache with it and builds the launch: on an
H100 host the split merge's 27 arguments took 21.3 us a call through the JIT and 9.6 through the
compiled kernel it returns (session 15, ``tests/gpu/launch_overhead.py``). A ``Launch`` holds one
launch's arguments as its caller planned them: every integer comes from the shapes and strides the
caller keys its plans by, so between two calls of one plan only the tensors change, and of them only
their pointers' alignment reaches the specialisation. So a launch goes through the compiled kernel
while the call's tensors are on 16-byte boundaries (the JIT's first launch having had them so), and
through the JIT otherwise, which specialises, and compiles, for what it is given. Below the compiled
kernel's runner, where this triton's launcher is the one ``triton_launcher`` knows, a launch calls the C
launcher with its arguments laid out once (H100, dense MLA decode at B=1: 67 us of host time a call
against 101 through the runner, side by side in ``tests/gpu/bound_host.py``, session 17). Under Triton's
interpreter there is no compiled kernel: every launch is the JIT's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import torch

from accelbridge.torch_attention import triton_launcher
from accelbridge.torch_attention.fitting import first_fitting

_ALIGN = 16  # the bytes a pointer's specialisation tells (Triton: ``data_ptr() % 16 == 0``)
Plan = TypeVar("Plan")
Config = TypeVar("Config")


class Plans(Generic[Plan]):
    """A kernel's plans by call geometry, at most ``most`` a process (a serving engine has one per batch shape)."""

    def __init__(self, most: int = 256):
        self.most = most
        self._plans: dict[Hashable, Plan] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        """Drop every plan: a tool that swaps a module's routes calls it (a plan keeps what it was made with)."""
        self._plans.clear()

    def call(self, key: Hashable, call: tuple[Any, ...], what: tuple[Any, ...], configs: Sequence[Config],
             first: Callable[[Config], tuple[Plan, Any]]) -> Any:  # fmt: skip
        """The plan of ``key`` run on ``call``; without one, ``first(config)`` makes a plan and runs it (the first
        launch compiles, so a config too big for the device raises there), with the first of ``configs`` that fits
        (``fitting``, ``what`` naming the kernel), and the plan is kept."""
        plan = self._plans.get(key)
        if plan is not None:
            return plan(*call)  # type: ignore[operator]
        plan, result = first_fitting(what, configs, first)
        if len(self._plans) >= self.most:
            self._plans.clear()
        self._plans[key] = plan
        return result


class Launch:
    """``kernel[grid]`` with ``args`` (every parameter by name, constexprs included) and ``options`` (``num_warps``,
    ``num_stages``), the parameters named in ``per_call`` taking each call's values, in that order. A call may pass
    its own ``grid`` (a dimension sized by a host hint, such as prefill's longest query). ``descriptors``: the
    per-call parameters that are TMA descriptors, each with the function making it from the call's tensor (the call
    passes the tensor: on the bound path a descriptor is encoded once a pointer, never made again).

    After the first aligned launch, a call goes through ``triton_launcher.bind``'s C launch where this triton's
    launcher is the known one, else through the compiled kernel's runner."""

    __slots__ = ("kernel", "grid", "options", "args", "slots", "makers", "pointers", "compiled", "runners", "bound")

    def __init__(self, kernel: Any, grid: Sequence[int], args: Mapping[str, Any], options: Mapping[str, Any],
                 per_call: Sequence[str], descriptors: Mapping[str, Callable[[Any], Any]] | None = None):  # fmt: skip
        names = list(kernel.arg_names)
        if set(args) != set(names):  # a plan that forgot a parameter would launch with another's value
            missing, unknown = sorted(set(names) - set(args)), sorted(set(args) - set(names))
            raise TypeError(f"launch plan for {kernel}: missing {missing}, unknown {unknown}")
        self.kernel = kernel
        self.grid = _three(grid)
        self.options = dict(options)
        self.args = [args[name] for name in names]  # the signature's order: the compiled kernel's and the JIT's
        self.slots = tuple(names.index(name) for name in per_call)
        self.makers = {names.index(name): make for name, make in (descriptors or {}).items()}
        self.pointers: tuple[int, ...] | None = None  # which values are tensors (a plan passes the same kinds)
        self.compiled: Any = None  # the kernel the JIT compiled for aligned tensors
        self.runners: dict[tuple[int, int, int], Any] = {}  # its launchers, by grid
        self.bound: Any = None  # its C launch, laid out (``triton_launcher``)

    def __call__(self, *values: Any, grid: Sequence[int] | None = None) -> None:
        if self.pointers is None:
            self.pointers = tuple(i for i, v in enumerate(values) if isinstance(v, torch.Tensor))
        bits = 0
        for i in self.pointers:
            bits |= values[i].data_ptr()
        aligned = bits % _ALIGN == 0
        grid = self.grid if grid is None else _three(grid)
        if aligned and self.bound is not None and self.bound(values, grid):
            return
        args = self.args.copy()
        for slot, value in zip(self.slots, values):
            make = self.makers.get(slot)
            args[slot] = value if make is None else make(value)
        if self.compiled is not None and aligned:
            runner = self.runners.get(grid)
            if runner is None:
                if len(self.runners) >= _MOST_GRIDS:
                    self.runners.clear()
                runner = self.runners[grid] = self.compiled[grid]
            runner(*args)
            return
        compiled = self.kernel[grid](*args, **self.options)
        if aligned and _is_compiled(compiled):  # the interpreter returns none
            self.compiled = compiled
            self.bound = triton_launcher.bind(compiled, self.args, self.slots, self.makers, values)


def classes(*values: int) -> tuple[tuple[bool, bool, bool], ...]:
    """What Triton's JIT specialises an integer argument on (equal to 1, divisible by 16, past int32): a launch
    compiled for one value serves another of the same class. A plan that takes an integer per call (a cache's
    length, and the strides it sets, as the cache grows) keys on its class."""
    return tuple((v == 1, v % 16 == 0, not -(2**31) <= v < 2**31) for v in values)


_MOST_GRIDS = 64  # launchers a launch keeps (one a grid: prefill's longest query sizes its first dimension)


def _three(grid: Sequence[int]) -> tuple[int, int, int]:
    """A grid in the three dimensions the compiled kernel takes."""
    return (*grid, *(1,) * (3 - len(grid)))  # type: ignore[return-value]


def _is_compiled(kernel: Any) -> bool:
    from triton.compiler.compiler import CompiledKernel

    return isinstance(kernel, CompiledKernel)
