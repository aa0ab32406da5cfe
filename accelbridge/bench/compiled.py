"""`accelbridge bench compile`: the compiled facade against the direct kernel, side by side on one GPU.

On the throughput bench's FA3 prefill and paged decode shapes, for each provider of the fa3 ops
here (sgl-kernel where installed, the torch provider): the vendor kernel called directly, the
eager facade, ``torch.compile(fullgraph=True)`` over the facade (inductor) and, for decode, a
``mode="reduce-overhead"`` step (CUDA graphs) whose KV cache is a module buffer, so the graph
reads it in place (an argument would be copied into the graph on every replay). Modes
alternate round by round in one process; medians. Also the host time of one call of each mode.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from accelbridge import attention


class DecodeStep(torch.nn.Module):
    """A decode step whose KV cache, page table and lengths are buffers: static inputs of a CUDA graph."""

    def __init__(self, kw: dict[str, Any]):
        super().__init__()
        for name in ("k_cache", "v_cache", "page_table", "cache_seqlens"):
            self.register_buffer(name, kw[name], persistent=False)
        self.causal = bool(kw.get("causal", False))

    def forward(self, q: torch.Tensor) -> Any:
        return attention.flash_attn_with_kvcache(q, self.k_cache, self.v_cache, cache_seqlens=self.cache_seqlens,
                                                 page_table=self.page_table, causal=self.causal)  # fmt: skip


def _host_us(fn, calls: int = 50) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - t0
    torch.cuda.synchronize()
    return host / calls * 1e6


def _modes(case: Any) -> dict[str, Any]:
    kw = case.kwargs
    facade = attention.function(case.op)
    modes = {"eager facade": lambda: facade(**kw)}
    inductor = torch.compile(lambda kw: facade(**kw), fullgraph=True)
    modes["inductor"] = lambda: inductor(kw)
    if case.op == "fa3.kvcache":
        graphs = torch.compile(DecodeStep(kw), fullgraph=True, mode="reduce-overhead")
        modes["reduce-overhead"] = lambda: graphs(kw["q"])
    return modes


def bench_compile(rounds: int = 7, iters: int = 30) -> dict[str, Any]:
    """Per case and provider: each mode's time, its ratio to the direct kernel, and its host time per call."""
    from accelbridge.bench import problems
    from accelbridge.bench.timing import cuda_time

    if not torch.cuda.is_available():
        return {"what": "compiled facade", "skipped": "no CUDA device: torch.compile's GPU modes and the vendor "
                "kernels run there (tests/attention/test_compile.py covers the CPU)"}  # fmt: skip
    dev = torch.device("cuda")
    saved = os.environ.get("ACCELBRIDGE_PROVIDERS")
    providers = [p for p in ("sgl-kernel", "torch") if p != "sgl-kernel" or _has_sgl_kernel()]
    rows = []
    try:
        for case in [c for c in problems.cases(dev) if c.op in ("fa3.varlen", "fa3.kvcache")]:
            for provider in providers:
                os.environ["ACCELBRIDGE_PROVIDERS"] = f"fa3={provider}"
                attention.reset()
                torch._dynamo.reset()
                calls = {"direct": case.vendor} if case.vendor else {}
                calls.update(_modes(case))
                for call in calls.values():  # compile, warm up, record the CUDA graph
                    for _ in range(3):
                        call()
                times: dict[str, list[float]] = {m: [] for m in calls}
                for r in range(rounds):
                    for m, call in list(calls.items()) if r % 2 == 0 else reversed(list(calls.items())):
                        times[m].append(cuda_time(call, iters))
                rows.append(_row(case.name, provider, calls, times))
    finally:
        if saved is None:
            os.environ.pop("ACCELBRIDGE_PROVIDERS", None)
        else:
            os.environ["ACCELBRIDGE_PROVIDERS"] = saved
        attention.reset()
    return {"what": "compiled facade vs the direct kernel", "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__, "rounds": rounds, "iters": iters, "rows": rows}  # fmt: skip


def _row(case: str, provider: str, calls: dict[str, Any], times: dict[str, list[float]]) -> dict[str, Any]:
    med = {m: statistics.median(t) for m, t in times.items()}
    modes = {m: {"us": t * 1e6, "host_us": _host_us(calls[m])} for m, t in med.items()}
    if "direct" in med:
        for m, t in med.items():
            modes[m]["vs_direct"] = med["direct"] / t
    return {"case": case, "provider": provider, "modes": modes}


def _has_sgl_kernel() -> bool:
    import importlib.util

    return importlib.util.find_spec("sgl_kernel") is not None


def format_compile(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"compile: skipped ({result['skipped']})"
    lines = [f"compile on {result['gpu']} (torch {result['torch']}), median of {result['rounds']} rounds:"]
    for row in result["rows"]:
        lines.append(f"  {row['case']}, {row['provider']}")
        for mode, m in row["modes"].items():
            ratio = f"  {m['vs_direct']:.4f}x direct" if "vs_direct" in m and mode != "direct" else ""
            lines.append(f"    {mode:<16} {m['us']:10.1f} us{ratio}  (host {m['host_us']:.1f} us a call)")
    return "\n".join(lines)
