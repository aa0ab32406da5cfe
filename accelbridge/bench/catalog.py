"""`accelbridge bench catalog`: the time to read, validate and merge the built-in catalogs."""

from __future__ import annotations

import statistics
import time
from typing import Any


def bench_catalog(rounds: int = 30) -> dict[str, Any]:
    """Time to read, validate and merge every built-in catalog from scratch."""
    from accelbridge.kernels_catalog import clear_cache, load
    from accelbridge.kernels_catalog.matrix import BUILTIN_PLATFORMS

    load("cpu")  # warm imports (yaml, packaging) so they are not counted
    times = []
    for _ in range(rounds):
        clear_cache()
        t0 = time.perf_counter()
        for name in BUILTIN_PLATFORMS:
            load(name)
        times.append(time.perf_counter() - t0)
    return {
        "what": "load + validate + merge all built-in catalogs (cuda, rocm, musa, cpu)",
        "rounds": rounds,
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "target_ms": 20.0,
    }
