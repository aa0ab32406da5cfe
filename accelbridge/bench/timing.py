"""Timers the benches share: CUDA events in steady state on a GPU, the host clock elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def cuda_time(fn, iters: int) -> float:
    """Seconds per call of ``fn`` on the current CUDA device in steady state, by events around ``iters`` calls.

    One call is queued before the first event, so each timed call's host time runs while the one before
    it is on the GPU, as in a serving loop; without it the window would also hold the first call's host
    latency (a compiled call's 200 us over 10 calls read as 2-3 % of the GPU time).
    """
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters * 1e-3


def host_time(fn: Callable[[], Any], iters: int) -> float:
    """Seconds per call of ``fn`` on the host clock."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def timer(dev: Any) -> Callable[[Callable[[], Any], int], float]:
    """The timer for calls on ``dev`` (a torch.device)."""
    return cuda_time if dev.type == "cuda" else host_time
