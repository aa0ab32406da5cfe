"""`accelbridge bench throughput --provider P ...`: providers side by side on the same inputs, in one run.

Each case is run by the vendor kernel called directly (when installed) and by every named
provider through the facade's own call path (catalog adaptation included), interleaved round
by round so clock drift hits all alike. Reported: time, TFLOP/s, ratio to the vendor kernel and
to the reference, and on a GPU the peak memory a call allocates beyond its inputs.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

VENDOR = "vendor (direct)"


@dataclass
class Case:
    name: str
    op: str
    flops: float
    kwargs: dict[str, Any]
    vendor: Callable[[], Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def _fa3(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _cases(dev: torch.device) -> list[Case]:
    """The issue's shapes on a GPU; on a CPU, smaller ones (32-sequence paged decode among them)."""

    gpu = dev.type == "cuda"
    bf16 = torch.bfloat16
    b, length, hq, hk, d = (8, 4096, 32, 8, 128) if gpu else (4, 512, 8, 2, 64)
    q = torch.randn(b * length, hq, d, device=dev, dtype=bf16)
    k = torch.randn(b * length, hk, d, device=dev, dtype=bf16)
    v = torch.randn(b * length, hk, d, device=dev, dtype=bf16)
    cu = torch.arange(0, (b + 1) * length, length, dtype=torch.int32, device=dev)
    fa = _fa3("sgl_kernel.flash_attn")
    prefill = dict(q=q, k=k, v=v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=length, max_seqlen_k=length,
                   causal=True)  # fmt: skip
    vendor = (lambda: fa.flash_attn_varlen_func(q, k, v, cu, cu, length, length, causal=True)) if fa else None
    cases = [Case(f"fa3 prefill B={b} L={length} {hq}/{hk} heads d={d}", "fa3.varlen",
                  4 * b * hq * d * length * length / 2, prefill, vendor)]  # fmt: skip
    db, ctx, page = (64, 8192, 64) if gpu else (32, 1024, 16)
    pages = ctx // page
    kc = torch.randn(db * pages, page, hk, d, device=dev, dtype=bf16)
    vc = torch.randn(db * pages, page, hk, d, device=dev, dtype=bf16)
    table = torch.randperm(db * pages, device=dev).to(torch.int32).reshape(db, pages)
    lens = torch.full((db,), ctx, dtype=torch.int32, device=dev)
    dq = torch.randn(db, 1, hq, d, device=dev, dtype=bf16)
    decode = dict(q=dq, k_cache=kc, v_cache=vc, cache_seqlens=lens, page_table=table, causal=True)
    kv_bytes = 2 * db * ctx * hk * d * 2
    cases.append(Case(f"fa3 paged decode batch {db} ctx {ctx} page {page}", "fa3.kvcache", 4 * db * hq * d * ctx,
                      decode, (lambda: fa.flash_attn_with_kvcache(**decode)) if fa else None,
                      {"kv_bytes": kv_bytes}))  # fmt: skip
    fm = _fa3("sgl_kernel.flash_mla")
    cases.append(_mla_dense_case(dev, fm, *((64, 128, 4096) if gpu else (8, 16, 512))))
    # upstream FlashMLA's longest rows (b 128, s_k 32768): peak memory beside the vendor's, not only time
    cases.append(_mla_dense_case(dev, fm, *((128, 128, 32768) if gpu else (4, 16, 4096)), long=True))
    cases.append(_sparse_case(dev, fm))
    return cases


def _mla_dense_case(dev: torch.device, fm: Any, mb: int, mhq: int, mctx: int, long: bool = False) -> Case:
    """FlashMLA dense decode over a paged bf16 cache of ``mb`` sequences of ``mctx`` tokens, ``mhq`` heads."""
    from accelbridge import attention

    bf16 = torch.bfloat16
    mpages = mctx // 64
    mq = torch.randn(mb, 1, mhq, 576, device=dev, dtype=bf16)
    mkc = torch.randn(mb * mpages, 64, 1, 576, device=dev, dtype=bf16)
    mtable = torch.randperm(mb * mpages, device=dev).to(torch.int32).reshape(mb, mpages)
    mlens = torch.full((mb,), mctx, dtype=torch.int32, device=dev)
    meta, splits = attention.get_mla_metadata(mlens, mhq, 1)  # the facade's plan, one per case (plans freeze)
    mla = dict(q=mq, k_cache=mkc, block_table=mtable, cache_seqlens=mlens, head_dim_v=512, causal=True,
               tile_scheduler_metadata=meta, num_splits=splits)  # fmt: skip
    vendor_mla = None
    if fm:
        v_meta, v_splits = fm.get_mla_metadata(mlens, mhq, 1)
        vendor_mla = lambda: fm.flash_mla_with_kvcache(mq, mkc, mtable, mlens, 512, v_meta, v_splits, causal=True)  # noqa: E731
    name = f"flashmla dense decode{' long context' if long else ''} batch {mb} {mhq} heads ctx {mctx}"
    return Case(name, "flashmla.kvcache", 2 * mb * mhq * mctx * (576 + 512), mla, vendor_mla)


def _sparse_case(dev: torch.device, fm: Any) -> Case:
    """DeepSeek V3.2 sparse decode: FP8 cache, topk 2048 of 64k tokens (on a CPU, 256 of 4k)."""
    from accelbridge import attention
    from accelbridge.ops.flash_mla import quantize_fp8_cache

    gpu = dev.type == "cuda"
    sb, shq, topk, tokens = (32, 128, 2048, 65536) if gpu else (4, 16, 256, 4096)
    cache = quantize_fp8_cache(torch.randn(tokens // 64, 64, 1, 576, device=dev, dtype=torch.bfloat16), 576)
    q = torch.randn(sb, 1, shq, 576, device=dev, dtype=torch.bfloat16)
    idx = torch.randint(0, tokens, (sb, 1, topk), device=dev).to(torch.int32)
    kw = dict(q=q, k_cache=cache, block_table=None, cache_seqlens=None, head_dim_v=512, softmax_scale=576**-0.5,
              is_fp8_kvcache=True, indices=idx, tile_scheduler_metadata=attention.get_mla_metadata()[0])  # fmt: skip
    vendor = None
    if fm:
        vendor_kw = {**kw, "tile_scheduler_metadata": fm.get_mla_metadata()[0]}
        vendor = lambda: fm.flash_mla_with_kvcache(**vendor_kw)  # noqa: E731
    return Case(f"flashmla sparse decode (V3.2 FP8) batch {sb} {shq} heads topk {topk}", "flashmla.kvcache",
                2 * sb * shq * topk * (576 + 512), kw, vendor)  # fmt: skip


def _timer(dev: torch.device) -> Callable[[Callable[[], Any], int], float]:
    if dev.type == "cuda":
        from accelbridge.bench import cuda_time

        return cuda_time

    def host_time(fn, iters):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) / iters

    return host_time


def _peak_bytes(fn: Callable[[], Any], dev: torch.device) -> int | None:
    """Memory one call allocates beyond what was live before it (GPU only)."""
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(dev) - base


def _runner(case: Case, provider: str) -> Callable[[], Any] | str:
    """The provider's call for this case through the facade's path, or why it cannot run it."""
    from accelbridge import ops
    from accelbridge.attention import introspect

    call = introspect.provider(case.op, provider)
    if call is None:
        return f"not a candidate of {case.op} here"
    if not call.viable:
        return "; ".join(call.reasons)
    spec = ops.get(case.op)
    args = tuple(case.kwargs.get(n, spec.params[n].default) for n in spec.names)
    refused = call.call_reasons(dict(zip(spec.names, args)))
    if refused:
        return "; ".join(refused)
    return lambda: call(*args)


def bench_providers(providers: list[str], rounds: int = 5, budget_s: float = 0.05) -> dict[str, Any]:
    """Each case by the vendor kernel and each provider, A/B round-robin; medians and ratios."""
    from accelbridge import platforms

    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    timer = _timer(dev)
    rows = []
    for case in _cases(dev):
        runners: dict[str, Any] = {VENDOR: case.vendor} if case.vendor else {}
        skipped = {}
        for p in providers:
            r = _runner(case, p)
            (skipped.__setitem__(p, r) if isinstance(r, str) else runners.__setitem__(p, r))
        iters, times, peaks = {}, {name: [] for name in runners}, {}
        for name, fn in runners.items():
            fn()  # warm up (compiles)
            once = timer(fn, 1)
            iters[name] = max(1, min(50, int(budget_s / max(once, 1e-6))))
            peaks[name] = _peak_bytes(fn, dev)
        for r in range(rounds):
            order = list(runners.items()) if r % 2 == 0 else list(reversed(runners.items()))
            for name, fn in order:
                times[name].append(timer(fn, iters[name]))
        medians = {name: statistics.median(t) for name, t in times.items()}
        row = {"case": case.name, "op": case.op, **case.fields, "results": {}, "skipped": skipped}
        for name, t in medians.items():
            entry = {"us": t * 1e6, "tflops": case.flops / t / 1e12, "peak_mib": None}
            if peaks.get(name) is not None:
                entry["peak_mib"] = peaks[name] / 2**20
            if VENDOR in medians:
                entry["vs_vendor"] = medians[VENDOR] / t  # > 1: faster than the vendor kernel
            if "reference" in medians:
                entry["vs_reference"] = medians["reference"] / t
            if "kv_bytes" in case.fields:
                entry["kv_tb_s"] = case.fields["kv_bytes"] / t / 1e12
            row["results"][name] = entry
        rows.append(row)
    device = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    return {"what": "providers side by side", "device": device, "torch": torch.__version__,
            "platform": platforms.current().name, "rounds": rounds, "providers": providers, "rows": rows}  # fmt: skip


def format_providers(result: dict[str, Any]) -> str:
    lines = [f"providers side by side on {result['device']} (torch {result['torch']}, platform "
             f"{result['platform']}), median of {result['rounds']} rounds:"]  # fmt: skip
    for row in result["rows"]:
        lines.append(f"  {row['case']}")
        for name, e in row["results"].items():
            rate = f"{e['tflops']:7.2f} TFLOP/s" if e["tflops"] >= 1 else f"{e['tflops'] * 1e3:7.2f} GFLOP/s"
            parts = [f"{e['us']:10.1f} us", rate]
            if "kv_tb_s" in e:
                parts.append(f"KV {e['kv_tb_s']:.2f} TB/s")
            if "vs_vendor" in e and name != VENDOR:
                parts.append(f"{e['vs_vendor']:.3f}x vendor")
            if "vs_reference" in e and name != "reference":
                parts.append(f"{e['vs_reference']:.1f}x reference")
            if e["peak_mib"] is not None:
                parts.append(f"peak +{e['peak_mib']:.0f} MiB")
            lines.append(f"    {name:<16} " + "  ".join(parts))
        for name, why in row["skipped"].items():
            lines.append(f"    {name:<16} skipped: {why}")
    return "\n".join(lines)
