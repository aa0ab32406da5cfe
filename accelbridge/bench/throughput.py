"""`accelbridge bench throughput`: each installed vendor kernel, directly and through the facade, on one GPU."""

from __future__ import annotations

import statistics
from typing import Any


def bench_throughput(rounds: int = 10, iters: int = 30) -> dict[str, Any]:
    """TFLOP/s of each installed vendor kernel, facade (default check level) vs direct, interleaved A/B on one GPU.

    The problems (``bench.problems``) are built only where CUDA is; a vendor kernel not installed has no row.
    """
    import torch

    from accelbridge import attention
    from accelbridge.bench import problems
    from accelbridge.bench.timing import cuda_time

    if not torch.cuda.is_available():
        return {
            "what": "kernel throughput",
            "skipped": "no CUDA device for the facade vs direct vendor kernel "
            "comparison; `accelbridge bench throughput --provider torch` runs here (torch vs the reference)",
        }
    dev = torch.device("cuda")
    fm = problems.vendor_module("sgl_kernel.flash_mla")
    shape = (32, 8, 128)  # q heads, kv heads, head dim
    candidates = [problems.prefill(dev, 8, 4096, *shape), problems.paged_decode(dev, 64, 4096, 64, *shape),
                  problems.paged_decode(dev, 64, 4096, 1, *shape), problems.prefill(dev, 8, 4096, *shape, ver=4),
                  problems.mla_dense(dev, fm, 64, 128, 4096), problems.mla_sparse(dev, fm)]  # fmt: skip
    cases = [(c.name, c.flops, c.vendor, c.facade()) for c in candidates if c.vendor is not None]
    rows = []
    default = attention.checks.level()
    try:
        for name, flops, direct, facade in cases:
            direct(), facade()  # compile / warm up
            torch.cuda.synchronize()
            td, tf, tfull = [], [], []
            for r in range(rounds):  # A/B at the default level, the order alternating (ABBA) against clock drift
                pair = ((td, direct), (tf, facade)) if r % 2 == 0 else ((tf, facade), (td, direct))
                for times, fn in pair:
                    times.append(cuda_time(fn, iters))
            attention.set_checks("full")  # value checks (a host sync per call): measured apart, after
            for _ in range(rounds):
                tfull.append(cuda_time(facade, iters))
            attention.set_checks(default)
            d, f, full = statistics.median(td), statistics.median(tf), statistics.median(tfull)
            rows.append({"case": name, "direct_tflops": flops / d / 1e12, "facade_tflops": flops / f / 1e12,
                         "direct_us": d * 1e6, "facade_us": f * 1e6, "facade_vs_direct": f / d,
                         "facade_full_checks_us": full * 1e6, "full_checks_vs_direct": full / d})  # fmt: skip
    finally:
        attention.set_checks(default)
    return {"what": "kernel throughput, facade vs direct", "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__, "rounds": rounds, "iters": iters, "level": default, "rows": rows}  # fmt: skip
