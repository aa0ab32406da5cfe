"""`accelbridge bench`: measurements, never assertions. Ratios are taken side by side.

One module per measurement (``overhead``, ``throughput``, ``providers``, ``compiled``, ``catalog``),
the problems they share defined once (``problems``), the timers (``timing``) and the text (``report``).
"""

from accelbridge.bench.catalog import bench_catalog
from accelbridge.bench.overhead import bench_overhead
from accelbridge.bench.report import format_result
from accelbridge.bench.throughput import bench_throughput
from accelbridge.bench.timing import cuda_time

__all__ = ["bench_catalog", "bench_overhead", "bench_throughput", "cuda_time", "format_result"]
