"""The CUDA kernels one call launches, with their GPU time: the GPU scripts' profiler view."""

import torch
from torch.profiler import ProfilerActivity, profile


def kernel_times(call, runs: int = 10) -> list[dict]:
    """Each kernel (and memcpy/memset) ``call`` launches: name, launches and GPU µs per run, longest first."""
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            call()
        torch.cuda.synchronize()
    rows = [{"kernel": e.key[:90], "calls": e.count / runs, "us": round(e.device_time_total / runs, 1)}
            for e in prof.key_averages() if e.device_time_total > 0]  # fmt: skip
    return sorted(rows, key=lambda r: -r["us"])
