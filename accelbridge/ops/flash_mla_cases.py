"""FlashMLA conformance cases and their inputs (dense and sparse decode, sparse prefill).

Each case is a small problem (``ops.cases.Case``) named for what it covers, with FlashMLA's own
tests' conventions (NaN where no index points, "no key" markers); ``*_inputs`` draws its canonical
arguments from fresh random values. The declarations (``ops.flash_mla``) point at them.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from accelbridge.ops.cases import SENTINEL, Case, Inputs
from accelbridge.ops.fp8_cache import quantize_fp8_cache


def mla_cases(full: bool = False) -> list[Case]:
    c = Case("flashmla.kvcache", "decode", lens_q=(1, 1, 1), lens_k=(1, 100, 300), hq=16, hk=1, d=576, dv=512,
             page_size=64, causal=False, with_out=False, tol="flashmla")  # fmt: skip
    sparse = replace(c, name="sparse-v32", lens_k=(40, 200, 64), hq=64, topk=64)  # bf16 q, FP8 cache
    conventions = replace(
        sparse,
        name="sparse-v32-conventions",
        lens_q=(3, 3, 3),
        page_size=61,
        invalid=(-1,),
        sinks=True,
        sink_inf=True,
        nan_unused=True,
    )  # FlashMLA's sparse tests' conventions
    kernels_own = {"sentinel": SENTINEL, "nan_unused": True}  # FlashMLA's tests: unused entries and slots
    return [
        c,
        replace(c, name="heads128", hq=128),
        replace(c, name="mtp-causal", lens_q=(2, 2, 2), causal=True),
        replace(c, name="long", lens_q=(1, 1), lens_k=(1000, 4097)),
        replace(c, name="empty-seq", lens_k=(0, 100, 64)),
        replace(c, name="fp8-dense", dtype="fp8_e4m3", tol=""),
        replace(c, name="sentinel-nan", lens_q=(1, 1, 1, 1), lens_k=(1, 100, 300, 65), **kernels_own),
        replace(c, name="mtp-causal-sentinel-nan", lens_q=(4, 4, 4), lens_k=(4, 140, 77), causal=True, **kernels_own),
        replace(
            c, name="zero-lengths-sentinel-nan", lens_q=(2, 2, 2, 2), lens_k=(0, 140, 0, 20), causal=True, **kernels_own
        ),
        replace(c, name="fp8-dense-sentinel-nan", dtype="fp8_e4m3", tol="", **kernels_own),
        # several kv heads (FlashMLA's dense tests: h_kv 2, 3, 8; q head i reads kv head i // (h_q / h_kv))
        replace(c, name="kv-heads-2", hk=2),
        replace(
            c,
            name="kv-heads-3-mtp-causal-sentinel-nan",
            lens_q=(2, 2, 2),
            lens_k=(2, 140, 77),
            hq=9,
            hk=3,
            causal=True,
            **kernels_own,
        ),  # fmt: skip
        replace(c, name="kv-heads-8-fp16", lens_k=(20, 140, 300), hq=64, hk=8, dtype="fp16"),
        sparse,
        replace(sparse, name="sparse-v4", d=512),
        replace(sparse, name="sparse-v32-sink", sinks=True),
        replace(sparse, name="sparse-v4-topk-length", d=512, topk_length=True),
        replace(sparse, name="sparse-v4-extra-cache", d=512, extra_topk=64, sinks=True),
        replace(sparse, name="sparse-all-invalid", lens_q=(2, 1, 1), lens_k=(0, 200, 64)),
        replace(sparse, name="sparse-v32-no-rope", d=512, kv_format="V32_NO_ROPE"),
        replace(sparse, name="sparse-v41", d=512, kv_format="V41"),
        replace(
            sparse,
            name="sparse-v41-fp4-extra",
            d=512,
            kv_format="V41",
            extra_kv_format="V41_FP4",
            extra_topk=64,
            topk_length=True,
            sinks=True,
        ),  # fmt: skip
        conventions,
        replace(
            conventions,
            name="sparse-v4-conventions",
            d=512,
            lens_k=(40, 0, 64),
            page_size=53,
            topk_length=True,
            extra_topk=64,
            extra_page_size=2,
        ),  # fmt: skip
        replace(conventions, name="sparse-v32-no-rope-conventions", d=512, kv_format="V32_NO_ROPE", topk_length=True),
        replace(
            conventions,
            name="sparse-v41-conventions",
            d=512,
            kv_format="V41",
            extra_kv_format="V41_FP4",
            lens_k=(40, 0, 64),
            page_size=67,
            topk_length=True,
            extra_topk=64,
            extra_page_size=130,
        ),  # fmt: skip
    ]


def _sparse_indices(inp: Inputs, lens, sq, topk, table, page_size):
    """Per sequence, ``topk`` positions among its own cached tokens (-1 past its length).

    With the case's ``invalid`` markers, about one valid entry in eight becomes one of them, and so
    does every -1: FlashMLA's decode tests mark "no key" with -1 only (an index past the cache is
    the providers' robustness, not a kernel convention: the fuzz test draws it for them).
    """
    b = len(lens)
    idx = torch.full((b, sq, topk), -1, dtype=torch.int32)
    for i, n in enumerate(lens):
        for s in range(sq):
            if n:
                take = torch.randperm(n, generator=inp.gen)[:topk]
                pages = table[i][take // page_size]
                idx[i, s, : len(take)] = (pages * page_size + take % page_size).to(torch.int32)
    if inp.case.invalid:
        markers = torch.tensor(inp.case.invalid, dtype=torch.int32)
        pick = (idx == -1) | (torch.rand(idx.shape, generator=inp.gen) < 0.125)
        idx[pick] = markers[torch.randint(0, len(markers), (int(pick.sum()),), generator=inp.gen)]
    return idx


def _topk_lengths(inp: Inputs, n: int, topk: int) -> torch.Tensor:
    """FlashMLA's tests' draw, 0..topk each, with 0 and topk both present."""
    lengths = torch.randint(0, topk + 1, (n,), generator=inp.gen, dtype=torch.int32)
    lengths[0], lengths[-1] = 0, topk
    return lengths.to(inp.dev)


def _nan_where_unreferenced(cache: torch.Tensor, *indices: torch.Tensor) -> None:
    """FlashMLA's tests' convention: every token no valid index names holds NaN (before quantisation)."""
    flat = cache.view(-1, cache.shape[-1])
    used = torch.zeros(flat.shape[0], dtype=torch.bool)
    for idx in indices:
        idx = idx.flatten().long()
        used[idx[(idx >= 0) & (idx < flat.shape[0])]] = True
    flat[~used.to(cache.device)] = float("nan")


def case_layouts(case: Case) -> tuple[str, str]:
    """The layouts of a sparse case's cache and extra cache."""
    layout = case.kv_format or {576: "V32", 512: "V4"}[case.d]
    return layout, case.extra_kv_format or layout


def mla_inputs(case: Case, inp: Inputs) -> dict:
    c = case
    b, sq = len(c.lens_q), c.lens_q[0]
    lens = c.lens_k or c.lens_q
    sparse = c.topk > 0
    dtype = torch.bfloat16 if sparse else inp.dtype  # dense: bf16, fp16 or FP8 (with descales)
    # FlashMLA's tests' magnitudes (its tolerances assume them): dense q and k N(0, 0.1^2); sparse q N(0, 1),
    # k N(0, 0.1^2), scale d^-0.55
    q = inp.randn(b, sq, c.hq, c.d, dtype=torch.bfloat16, scale=1.0 if sparse else 0.1)
    k_cache, table = inp.paged(lens, c.hk, c.d)
    k_cache = (k_cache.float() * 0.1).to(torch.bfloat16)
    kw = {"q": q.to(dtype), "head_dim_v": c.dv, "causal": c.causal}
    if not sparse:
        k_cache = k_cache.to(dtype)
        inp.retire_unused(table, lens, k_cache)
        kw.update(k_cache=k_cache, block_table=table,
                  cache_seqlens=torch.tensor(lens, dtype=torch.int32, device=inp.dev))  # fmt: skip
        if c.dtype == "fp8_e4m3":
            kw.update(is_fp8_kvcache=True, descale_q=torch.tensor([0.75], device=inp.dev),
                      descale_k=torch.tensor([1.25], device=inp.dev))  # fmt: skip
        return kw
    topk = c.topk
    indices = _sparse_indices(inp, lens, sq, topk, table.cpu(), c.page_size)
    kw.update(block_table=None, cache_seqlens=None, is_fp8_kvcache=True, softmax_scale=c.d**-0.55, causal=False)
    if c.topk_length:
        kw["topk_length"] = _topk_lengths(inp, b, topk)
    if c.sinks:
        kw["attn_sink"] = inp.sinks(c.hq, torch.float32)
    extra = None
    if c.extra_topk:
        extra_page = c.extra_page_size or c.page_size
        extra_lens = tuple(min(n + 10, 300) for n in lens)
        extra, extra_table = inp.paged(extra_lens, 1, c.d, page_size=extra_page)
        extra = (extra.float() * 0.1).to(torch.bfloat16)
        extra_idx = _sparse_indices(inp, extra_lens, sq, c.extra_topk, extra_table.cpu(), extra_page)
        kw["extra_indices_in_kvcache"] = extra_idx.to(inp.dev)
        kw["extra_topk_length"] = (
            _topk_lengths(inp, b, c.extra_topk)
            if c.topk_length
            else torch.full((b,), c.extra_topk // 2, dtype=torch.int32, device=inp.dev)
        )
    if c.nan_unused:
        _nan_where_unreferenced(k_cache, indices)
        if extra is not None:
            _nan_where_unreferenced(extra, kw["extra_indices_in_kvcache"])
    layout, extra_layout = case_layouts(c)
    kw.update(k_cache=quantize_fp8_cache(k_cache, layout), indices=indices.to(inp.dev))
    if layout == "V32_NO_ROPE":  # 528 bytes a token is V4.1 without tensor metadata: the call names its layout
        kw["kv_format"] = layout
    if extra is not None:
        kw["extra_k_cache"] = quantize_fp8_cache(extra, extra_layout)
    return kw


def prefill_cases(full: bool = False) -> list[Case]:
    c = Case("flashmla.sparse_prefill", "v32", lens_q=(48,), lens_k=(300,), hq=64, hk=1, d=576, dv=512, topk=128,
             with_out=False, return_lse=True, tol="flashmla")  # fmt: skip
    return [
        c,
        replace(c, name="v4", d=512),
        replace(c, name="sink", sinks=True),
        replace(c, name="topk-length", topk_length=True),
        replace(c, name="lonely-rows", lens_k=(30,)),
        replace(
            c, name="conventions", lens_k=(95,), invalid=PREFILL_INVALID, sinks=True, sink_inf=True, topk_length=True
        ),
    ]


# sgl-kernel's sparse prefill test pads with s_kv and 2147480000; FlashMLA's tests draw from all of these
PREFILL_INVALID = (-2147483648, -123456, -1, 114514, 1919810, 2147480000, 2147483647)


def prefill_inputs(case: Case, inp: Inputs) -> dict:
    c = case
    s_q, s_kv, topk = c.lens_q[0], c.lens_k[0], c.topk
    idx = torch.stack([torch.randperm(max(s_kv, topk), generator=inp.gen)[:topk] for _ in range(s_q)])
    idx = torch.where(idx < s_kv, idx, -1).to(torch.int32)
    if c.name == "lonely-rows":
        idx[::3] = -1
    if c.invalid:  # every -1 (and one valid entry in eight) becomes one of the markers of "no key"
        markers = torch.tensor([s_kv, *c.invalid], dtype=torch.int32)
        pick = (idx == -1) | (torch.rand(idx.shape, generator=inp.gen) < 0.125)
        idx[pick] = markers[torch.randint(0, len(markers), (int(pick.sum()),), generator=inp.gen)]
    # sgl-kernel's test's magnitudes (its tolerances assume them): q and kv N(0, 0.1^2)
    kw = {"q": inp.randn(s_q, c.hq, c.d, dtype=torch.bfloat16, scale=0.1),
          "kv": inp.randn(s_kv, 1, c.d, dtype=torch.bfloat16, scale=0.1),
          "indices": idx[:, None, :].to(inp.dev), "sm_scale": c.d**-0.5, "d_v": c.dv}  # fmt: skip
    if c.sinks:
        kw["attn_sink"] = inp.sinks(c.hq, torch.float32)
    if c.topk_length:
        kw["topk_length"] = _topk_lengths(inp, s_q, topk)
    return kw
