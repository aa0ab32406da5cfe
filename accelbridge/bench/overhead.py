"""`accelbridge bench`: measurements, never assertions. Ratios are taken side by side."""

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


def format_result(what: str, result: dict[str, Any]) -> str:
    if what == "catalog":
        verdict = "within" if result["median_ms"] <= result["target_ms"] else "above"
        return (
            f"catalog: {result['what']}\n"
            f"  median {result['median_ms']:.2f} ms, min {result['min_ms']:.2f} ms over {result['rounds']} rounds "
            f"({verdict} the {result['target_ms']:.0f} ms goal on this machine)"
        )
    if what == "overhead":
        rows = [("direct call", f"{result['direct_us']:.3f} us", "")]
        for label, levels in result["providers"].items():
            rows += [(f"facade, {label}, ACCELBRIDGE_CHECKS={level}", f"{r['facade_us']:.3f} us",
                      f"(+{r['added_us']:.3f} us)") for level, r in levels.items()]  # fmt: skip
        width, num = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        lines = [f"overhead: {result['what']}; median of {result['rounds']} rounds x {result['calls_per_round']} calls"]
        lines += [f"  {name:<{width}}  {t:>{num}}  {added}".rstrip() for name, t, added in rows]
        worst = max(result["default_added_us"].values())
        verdict = "within" if worst <= result["target_us"] else "above"
        lines.append(f"  default level (cheap), any provider: up to +{worst:.3f} us, {verdict} the "
                     f"{result['target_us']:.1f} us goal on this machine "
                     f"(dispatch alone: +{result['added_us']:.3f} us)")  # fmt: skip
        return "\n".join(lines)
    if what == "throughput":
        if "skipped" in result:
            return f"throughput: skipped ({result['skipped']})"
        lines = [f"throughput on {result['gpu']} (torch {result['torch']}), median of {result['rounds']} rounds:"]
        for r in result["rows"]:
            tflops = f"direct {r['direct_tflops']:7.1f} TFLOP/s  facade {r['facade_tflops']:7.1f} TFLOP/s"
            lines.append(f"  {r['case']:<34} {tflops}  facade/direct time {r['facade_vs_direct']:.4f}"
                         f"  (with ACCELBRIDGE_CHECKS=full: {r['full_checks_vs_direct']:.4f})")  # fmt: skip
        lines.append(
            f"  facade = the default check level ({result.get('level', 'cheap')}); full adds value checks (a host sync)"
        )
        return "\n".join(lines)
    return "\n".join(f"{k}: {v}" for k, v in result.items())


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


def bench_throughput(rounds: int = 10, iters: int = 30) -> dict[str, Any]:
    """TFLOP/s of each available provider, facade (default check level) vs direct, interleaved A/B on one GPU."""
    import importlib

    import torch

    from accelbridge import attention

    if not torch.cuda.is_available():
        return {
            "what": "kernel throughput",
            "skipped": "no CUDA device for the facade vs direct vendor kernel "
            "comparison; `accelbridge bench throughput --provider torch` runs here (torch vs the reference)",
        }
    dev, bf16 = "cuda", torch.bfloat16
    B, L, HQ, HK, D = 8, 4096, 32, 8, 128
    q = torch.randn(B * L, HQ, D, device=dev, dtype=bf16)
    k = torch.randn(B * L, HK, D, device=dev, dtype=bf16)
    v = torch.randn(B * L, HK, D, device=dev, dtype=bf16)
    cu = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device=dev)
    prefill_flops = 4 * B * HQ * D * L * L / 2  # causal
    db, dctx = 64, 4096
    dq = torch.randn(db, 1, HQ, D, device=dev, dtype=bf16)
    decode_flops = 4 * db * HQ * D * dctx
    seqlens = torch.full((db,), dctx, dtype=torch.int32, device=dev)
    paged = {}
    for page in (64, 1):
        pages = dctx // page
        kc = torch.randn(db * pages, page, HK, D, device=dev, dtype=bf16)
        vc = torch.randn(db * pages, page, HK, D, device=dev, dtype=bf16)
        table = torch.randperm(db * pages, device=dev).to(torch.int32).reshape(db, pages)
        paged[page] = (kc, vc, table)
    cases = []
    try:
        fa = importlib.import_module("sgl_kernel.flash_attn")
        cases.append(("sgl-kernel fa3 prefill", prefill_flops,
                      lambda: fa.flash_attn_varlen_func(q, k, v, cu, cu, L, L, causal=True),
                      lambda: attention.flash_attn_varlen_func(q, k, v, cu, cu, L, L, causal=True)))  # fmt: skip
        for page, (kc, vc, table) in paged.items():
            cases.append((f"sgl-kernel fa3 decode (page {page})", decode_flops,
                          lambda kc=kc, vc=vc, table=table: fa.flash_attn_with_kvcache(
                              dq, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True),
                          lambda kc=kc, vc=vc, table=table: attention.flash_attn_with_kvcache(
                              dq, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True)))  # fmt: skip
    except ImportError:
        pass
    try:
        cute = importlib.import_module("flash_attn.cute")
        cases.append(("flash-attn-4 prefill", prefill_flops,
                      lambda: cute.flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=L,
                                                          max_seqlen_k=L, causal=True),
                      lambda: attention.flash_attn_varlen_func(q, k, v, cu, cu, L, L, causal=True, ver=4)))  # fmt: skip
    except ImportError:
        pass
    try:
        fm = importlib.import_module("sgl_kernel.flash_mla")
        mb, mhq, mctx = 64, 128, 4096
        mq = torch.randn(mb, 1, mhq, 576, device=dev, dtype=bf16)
        mpages = mctx // 64
        mkc = torch.randn(mb * mpages, 64, 1, 576, device=dev, dtype=bf16)
        mtable = torch.randperm(mb * mpages, device=dev).to(torch.int32).reshape(mb, mpages)
        mlens = torch.full((mb,), mctx, dtype=torch.int32, device=dev)
        d_meta, d_splits = fm.get_mla_metadata(mlens, mhq, 1)
        f_meta, f_splits = attention.get_mla_metadata(mlens, mhq, 1)
        mla_flops = 2 * mb * mhq * mctx * (576 + 512)
        cases.append(("flashmla dense decode", mla_flops,
                      lambda: fm.flash_mla_with_kvcache(mq, mkc, mtable, mlens, 512, d_meta, d_splits, causal=True),
                      lambda: attention.flash_mla_with_kvcache(mq, mkc, mtable, mlens, 512, f_meta, f_splits,
                                                               causal=True)))  # fmt: skip
        from accelbridge.ops.flash_mla import quantize_fp8_cache

        sb, shq, topk, tokens = 32, 128, 2048, 65536  # DeepSeek V3.2 sparse decode
        scache = quantize_fp8_cache(torch.randn(tokens // 64, 64, 1, 576, device=dev, dtype=bf16), 576)
        sq_ = torch.randn(sb, 1, shq, 576, device=dev, dtype=bf16)
        sidx = torch.randint(0, tokens, (sb, 1, topk), device=dev).to(torch.int32)
        sparse_kw = dict(k_cache=scache, block_table=None, cache_seqlens=None, head_dim_v=512, softmax_scale=576**-0.5,
                         is_fp8_kvcache=True, indices=sidx)  # fmt: skip
        d_plan, f_plan = fm.get_mla_metadata()[0], attention.get_mla_metadata()[0]
        cases.append(("flashmla sparse decode (V3.2)", 2 * sb * shq * topk * (576 + 512),
                      lambda: fm.flash_mla_with_kvcache(sq_, tile_scheduler_metadata=d_plan, **sparse_kw),
                      lambda: attention.flash_mla_with_kvcache(sq_, tile_scheduler_metadata=f_plan,
                                                               **sparse_kw)))  # fmt: skip
    except ImportError:
        pass
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


_INSTANT = """
def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
    seqused_q=None, seqused_k=None, page_table=None, softmax_scale=None, causal=False, qv=None,
    q_descale=None, k_descale=None, v_descale=None, window_size=(-1, -1), attention_chunk=0,
    softcap=0.0, num_splits=1, pack_gqa=None, only_qv=False, sm_margin=0, return_softmax_lse=False,
    sinks=None, score_mod=None, aux_tensors=None, ver=3, out=None):
    return q
"""


# (row, check level, tensors): accelerator tensors are stood in for by meta tensors (no host read, as on a
# GPU); CPU tensors at the cheap level add the value checks (the host read is free there)
_LEVEL_ROWS = (
    ("off", "off", "meta"),
    ("cheap", "cheap", "meta"),
    ("cheap, CPU tensors", "cheap", "cpu"),
    ("full", "full", "cpu"),
)
# (label, catalog provider block): the same instant function declared as a built-in entry is (its
# kernel checks dtype and shape itself) and as a plugin or hub kernel usually is (no `validates`)
_OVERHEAD_PROVIDERS = (("validates dtype, shape", "    validates: [dtype, shape]\n"), ("no validates", ""))


def _overhead_catalog(validates: str) -> str:
    return (
        "schema: 1\nplatform: cpu\nproviders:\n  instant:\n    source: {module: instant_fa3}\n"
        + validates
        + "    ops:\n      fa3.varlen: {function: flash_attn_varlen_func}\norder:\n  fa3.varlen: [instant]\n"
    )


def bench_overhead(rounds: int = 15, calls: int = 20000) -> dict[str, Any]:
    """Per-call cost the facade adds over calling the same provider directly.

    Tensors on the meta device stand in for accelerator tensors (no host read); the cheap level
    on CPU tensors, which also checks values, and the full level run on CPU tensors.
    The provider is a function with sgl-kernel's exact varlen signature that returns at once,
    so only call overhead is measured; it is declared once with ``validates: [dtype, shape]``
    (as the built-in sgl-kernel entry) and once without (as a plugin or hub kernel). Facade and
    direct alternate round by round (A/B) in this process; medians of the per-round differences.
    """
    import os
    import sys
    import tempfile
    import textwrap
    from pathlib import Path

    import torch

    from accelbridge import attention, platforms

    tmp = Path(tempfile.mkdtemp(prefix="accelbridge-bench-"))
    (tmp / "instant_fa3.py").write_text(textwrap.dedent(_INSTANT))
    catalogs = []
    for n, (label, validates) in enumerate(_OVERHEAD_PROVIDERS):
        (tmp / f"bench{n}.yaml").write_text(_overhead_catalog(validates))
        catalogs.append((label, str(tmp / f"bench{n}.yaml")))
    sys.path.insert(0, str(tmp))
    saved = os.environ.get("ACCELBRIDGE_CATALOG_PATH")
    cases = [(label, row) for label, _ in catalogs for row, _, _ in _LEVEL_ROWS]
    times: dict[Any, list[float]] = {"direct": [], **{case: [] for case in cases}}
    try:
        from instant_fa3 import flash_attn_varlen_func as direct

        tensors = {
            device: (
                torch.zeros(8, 4, 64, dtype=torch.bfloat16, device=device),
                torch.tensor([0, 8], dtype=torch.int32, device=device),
            )
            for device in ("meta", "cpu")
        }
        facade = attention.flash_attn_varlen_func

        def run(fn, device: str) -> float:
            q, cu = tensors[device]
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(q, q, q, cu, cu, 8, 8, causal=True)
            return (time.perf_counter() - t0) / calls

        with platforms.simulated("cpu"):
            for _ in range(rounds):
                times["direct"].append(run(direct, "meta"))
                for label, path in catalogs:
                    os.environ["ACCELBRIDGE_CATALOG_PATH"] = path
                    attention.reset()
                    assert attention.resolve("fa3.varlen").selected == "instant"
                    for row, level, device in _LEVEL_ROWS:
                        attention.set_checks(level)
                        q, cu = tensors[device]
                        facade(q, q, q, cu, cu, 8, 8, causal=True)  # resolve outside the timed loop
                        times[(label, row)].append(run(facade, device))
    finally:
        sys.path.remove(str(tmp))
        if saved is None:
            os.environ.pop("ACCELBRIDGE_CATALOG_PATH", None)
        else:
            os.environ["ACCELBRIDGE_CATALOG_PATH"] = saved
        attention.set_checks(None)
        attention.reset()
    d_times = times["direct"]

    def row(case: Any) -> dict[str, float]:
        return {"facade_us": statistics.median(times[case]) * 1e6,
                "added_us": statistics.median(f - d for f, d in zip(times[case], d_times)) * 1e6}  # fmt: skip

    by_provider = {label: {r: row((label, r)) for r, _, _ in _LEVEL_ROWS} for label, _ in catalogs}
    first = catalogs[0][0]
    return {
        "what": "facade vs direct call of the same instant provider (sgl-kernel varlen signature), A/B",
        "rounds": rounds,
        "calls_per_round": calls,
        "direct_us": statistics.median(d_times) * 1e6,
        "checks": by_provider[first],  # the built-in entry's case (kept for readers of earlier JSON)
        "providers": by_provider,
        "default_added_us": {label: levels["cheap"]["added_us"] for label, levels in by_provider.items()},
        "facade_us": by_provider[first]["off"]["facade_us"],
        "added_us": by_provider[first]["off"]["added_us"],
        "target_us": 1.0,
    }
