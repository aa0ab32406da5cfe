"""The benches' problems, defined once: FA3 prefill and paged decode, FlashMLA dense and sparse decode.

Each is a ``Case``: the op, its canonical arguments, the FLOPs, and the vendor kernel's own call
where that kernel is installed. ``cases`` gives the shapes `bench throughput --provider` and
`bench compile` run (smaller on a CPU); `bench throughput` builds its rows from the same builders.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Case:
    """One problem: ``kwargs`` are the op's canonical arguments; ``vendor`` calls the vendor kernel on them."""

    name: str
    op: str
    flops: float
    kwargs: dict[str, Any]
    vendor: Callable[[], Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def facade(self) -> Callable[[], Any]:
        """The call through the facade function (the op's selector, e.g. ``ver=4``, added)."""
        from accelbridge import attention, ops

        spec = ops.get(self.op)
        fn, kw = attention.function(self.op), dict(self.kwargs)
        if spec.selector:
            kw[spec.selector[0]] = spec.selector[1]
        return lambda: fn(**kw)


def vendor_module(module: str) -> Any:
    """The vendor's module where it is installed, else None."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def cases(dev: torch.device) -> list[Case]:
    """The issue's shapes on a GPU; on a CPU, smaller ones (32-sequence paged decode among them)."""
    gpu = dev.type == "cuda"
    fm = vendor_module("sgl_kernel.flash_mla")
    return [
        prefill(dev, *((8, 4096, 32, 8, 128) if gpu else (4, 512, 8, 2, 64))),
        ragged_prefill(dev, *((16, 4096, 32, 8, 128) if gpu else (6, 512, 8, 2, 64))),
        paged_decode(dev, *((64, 8192, 64, 32, 8, 128) if gpu else (32, 1024, 16, 8, 2, 64))),
        mla_dense(dev, fm, *((64, 128, 4096) if gpu else (8, 16, 512))),
        # small batches: host time and splits, not bandwidth, decide these
        *(mla_dense(dev, fm, b, *((128, 4096) if gpu else (16, 512))) for b in ((1, 8) if gpu else (1, 2))),
        # upstream FlashMLA's longest rows (b 128, s_k 32768): peak memory beside the vendor's, not only time
        mla_dense(dev, fm, *((128, 128, 32768) if gpu else (4, 16, 4096)), long=True),
        mla_sparse(dev, fm),
        sparse_prefill(dev, fm),
    ]


def prefill(dev: torch.device, b: int, length: int, hq: int, hk: int, d: int, ver: int = 3) -> Case:
    """Causal varlen prefill of ``b`` sequences of ``length`` tokens (FA3's kernel from sgl-kernel, FA4's from
    flash-attn-4's ``flash_attn.cute``)."""
    bf16 = torch.bfloat16
    q = torch.randn(b * length, hq, d, device=dev, dtype=bf16)
    k = torch.randn(b * length, hk, d, device=dev, dtype=bf16)
    v = torch.randn(b * length, hk, d, device=dev, dtype=bf16)
    cu = torch.arange(0, (b + 1) * length, length, dtype=torch.int32, device=dev)
    kw = dict(q=q, k=k, v=v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=length, max_seqlen_k=length, causal=True)
    vendor = None
    if ver == 3 and (fa := vendor_module("sgl_kernel.flash_attn")):
        vendor = lambda: fa.flash_attn_varlen_func(q, k, v, cu, cu, length, length, causal=True)  # noqa: E731
    if ver == 4 and (cute := vendor_module("flash_attn.cute")):
        vendor = lambda: cute.flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu,  # noqa: E731
                                                     max_seqlen_q=length, max_seqlen_k=length, causal=True)  # fmt: skip
    return Case(f"fa{ver} prefill B={b} L={length} {hq}/{hk} heads d={d}", f"fa{ver}.varlen",
                4 * b * hq * d * length * length / 2, kw, vendor)  # fmt: skip


def ragged_prefill(dev: torch.device, b: int, longest: int, hq: int, hk: int, d: int) -> Case:
    """Causal varlen prefill of ``b`` sequences of seeded lengths from 1/16 of ``longest`` to ``longest`` (a
    serving batch: the kernel's tail tiles and its schedule over unequal sequences, not one shape)."""
    bf16 = torch.bfloat16
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(longest // 16, longest + 1, (b,), generator=gen).tolist()
    total, longest_drawn = sum(lens), max(lens)
    q = torch.randn(total, hq, d, device=dev, dtype=bf16)
    k = torch.randn(total, hk, d, device=dev, dtype=bf16)
    v = torch.randn(total, hk, d, device=dev, dtype=bf16)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    kw = dict(q=q, k=k, v=v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=longest_drawn,
              max_seqlen_k=longest_drawn, causal=True)  # fmt: skip
    fa = vendor_module("sgl_kernel.flash_attn")
    n = longest_drawn
    vendor = (lambda: fa.flash_attn_varlen_func(q, k, v, cu, cu, n, n, causal=True)) if fa else None
    return Case(f"fa3 ragged prefill B={b} tokens {total} (lengths {min(lens)}-{longest_drawn}) {hq}/{hk} heads d={d}",
                "fa3.varlen", sum(4 * hq * d * n * n / 2 for n in lens), kw, vendor)  # fmt: skip


def paged_decode(dev: torch.device, db: int, ctx: int, page: int, hq: int, hk: int, d: int) -> Case:
    """FA3 decode of ``db`` sequences over a paged cache of ``ctx`` tokens (pages in random order)."""
    bf16 = torch.bfloat16
    pages = ctx // page
    kc = torch.randn(db * pages, page, hk, d, device=dev, dtype=bf16)
    vc = torch.randn(db * pages, page, hk, d, device=dev, dtype=bf16)
    table = torch.randperm(db * pages, device=dev).to(torch.int32).reshape(db, pages)
    lens = torch.full((db,), ctx, dtype=torch.int32, device=dev)
    dq = torch.randn(db, 1, hq, d, device=dev, dtype=bf16)
    decode = dict(q=dq, k_cache=kc, v_cache=vc, cache_seqlens=lens, page_table=table, causal=True)
    fa = vendor_module("sgl_kernel.flash_attn")
    return Case(f"fa3 paged decode batch {db} ctx {ctx} page {page}", "fa3.kvcache", 4 * db * hq * d * ctx,
                decode, (lambda: fa.flash_attn_with_kvcache(**decode)) if fa else None,
                {"kv_bytes": 2 * db * ctx * hk * d * 2})  # fmt: skip


def mla_dense(dev: torch.device, fm: Any, mb: int, mhq: int, mctx: int, long: bool = False) -> Case:
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


def mla_sparse(dev: torch.device, fm: Any) -> Case:
    """DeepSeek V3.2 sparse decode: FP8 cache, topk 2048 of 64k tokens (on a CPU, 256 of 4k)."""
    from accelbridge import attention
    from accelbridge.ops.fp8_cache import quantize_fp8_cache

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


def sparse_prefill(dev: torch.device, fm: Any) -> Case:
    """FlashMLA sparse prefill, upstream's V3.2 performance shape (s_q 4096, s_kv 8192, 128 heads, d_qk 576,
    topk 2048, a sink); on a CPU, s_q 64, s_kv 1024, 16 heads, topk 128."""
    gpu = dev.type == "cuda"
    s_q, s_kv, hq, topk = (4096, 8192, 128, 2048) if gpu else (64, 1024, 16, 128)
    bf16 = torch.bfloat16
    q = torch.randn(s_q, hq, 576, device=dev, dtype=bf16) / 10
    kv = torch.randn(s_kv, 1, 576, device=dev, dtype=bf16) / 10
    idx = torch.stack([torch.randperm(s_kv, device=dev)[:topk] for _ in range(s_q)]).to(torch.int32).view(s_q, 1, topk)
    sink = torch.randn(hq, device=dev, dtype=torch.float32)
    kw = dict(q=q, kv=kv, indices=idx, sm_scale=576**-0.5, d_v=512, attn_sink=sink)
    vendor = (lambda: fm.flash_mla_sparse_fwd(q, kv, idx, 576**-0.5, d_v=512, attn_sink=sink)) if fm else None
    return Case(f"flashmla sparse prefill (V3.2) s_q {s_q} s_kv {s_kv} {hq} heads topk {topk}",
                "flashmla.sparse_prefill", 2 * s_q * hq * topk * (576 + 512), kw, vendor)  # fmt: skip
