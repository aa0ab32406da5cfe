"""FA3/FA4 conformance cases and their inputs: what `accelbridge selftest` and the conformance runner call.

Each case is a small problem (``ops.cases.Case``) named for what it covers; ``*_inputs`` draws its
canonical arguments from fresh random values. The declarations (``ops.flash_attn``) point at them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from accelbridge.ops.cases import SENTINEL, Case, Inputs, cumulative


def varlen_cases(op: str, full: bool = False) -> list[Case]:
    c = Case(op, "gqa4-causal")
    cases = [
        c,
        replace(c, name="noncausal", causal=False),
        replace(c, name="fp16", dtype="fp16"),
        replace(c, name="d64", d=64),
        replace(c, name="mha", hq=4, hk=4),
        replace(c, name="mqa", hq=8, hk=1),
        replace(c, name="gqa8", hq=16, hk=2),
        replace(c, name="window-left", window=(32, 0)),
        replace(c, name="window-both", causal=False, window=(16, 8)),
        replace(c, name="softcap", softcap=1.5),
        replace(c, name="sinks", sinks=True),
        replace(c, name="short", lens_q=(1, 1, 2, 3)),
        replace(c, name="one-length", lens_q=(64, 64)),  # engines' uniform prefill batch
        replace(c, name="nearly-one-length", lens_q=(40, 37, 40)),
        replace(c, name="empty-seqs", lens_q=(0, 7, 0, 20)),
        replace(c, name="chunked-prefill", lens_q=(5, 16, 1), lens_k=(40, 100, 64)),
        replace(c, name="lse", return_lse=True),
        replace(c, name="no-out", with_out=False),
        replace(c, name="paged", lens_q=(3, 40, 1), lens_k=(17, 100, 64), page_size=16),
        replace(c, name="qv", d=64, dv=256, qv_dim=256, hq=8, hk=1),
        replace(c, name="fp8", dtype="fp8_e4m3"),
        replace(c, name="attention-chunk", chunk=24),
        # the kernels' conventions: what no sequence reads is arbitrary, empty problems are valid
        replace(c, name="paged-sentinel", lens_q=(3, 40, 1), lens_k=(17, 100, 64), page_size=16, sentinel=SENTINEL),
        replace(
            c,
            name="paged-nan-unused",
            lens_q=(3, 40, 1),
            lens_k=(17, 100, 64),
            page_size=16,
            sentinel=-1,
            nan_unused=True,
        ),
        replace(c, name="no-keys", lens_q=(3, 2, 4), lens_k=(0, 0, 0), causal=False, return_lse=True),
        replace(c, name="some-without-keys", lens_q=(3, 2, 4), lens_k=(0, 40, 0), causal=False, return_lse=True),
        replace(c, name="no-queries", lens_q=(0, 0, 0), lens_k=(5, 9, 3), return_lse=True),
        replace(c, name="lonely-rows", lens_q=(10, 5), lens_k=(3, 5), return_lse=True),
        replace(c, name="sinks-inf", sinks=True, sink_inf=True, return_lse=True),
    ]
    return cases + (_cross(c) if full else [])


def kvcache_cases(op: str, full: bool = False) -> list[Case]:
    c = Case(op, "paged-decode", lens_q=(1, 1, 1, 1), lens_k=(1, 37, 200, 64), page_size=16)
    # FA3's rotary q rule: 3 queries rotating with 3 new keys, non-causal, over a contiguous cache
    rotary3 = replace(c, lens_q=(3, 3, 3, 3), new_tokens=3, rotary="interleaved", causal=False, page_size=0)
    cases = [
        c,
        replace(c, name="page64", page_size=64),
        replace(c, name="contiguous", page_size=0),
        replace(c, name="fp16", dtype="fp16"),
        replace(c, name="d64", d=64),
        replace(c, name="mha", hq=4, hk=4),
        replace(c, name="mqa", hq=8, hk=1),
        replace(c, name="multi-query", lens_q=(4, 4, 4, 4)),
        replace(c, name="window", window=(32, 0)),
        replace(c, name="softcap", softcap=1.5),
        replace(c, name="sinks", sinks=True),
        replace(c, name="append", new_tokens=1),
        replace(c, name="lse", return_lse=True),
        replace(c, name="no-out", with_out=False),
        replace(c, name="rotary-interleaved", lens_q=(2, 2, 2, 2), new_tokens=2, rotary="interleaved"),
        replace(c, name="rotary-half", new_tokens=1, rotary="half", causal=False, page_size=0),
        replace(c, name="leftpad", page_size=0, leftpad=True),
        replace(c, name="batch-idx", page_size=0, batch_idx=True, new_tokens=1),
        replace(c, name="qv", d=64, dv=512, qv_dim=512, hq=8, hk=1),
        replace(c, name="fp8", dtype="fp8_e4m3"),
        replace(c, name="attention-chunk", lens_q=(3, 3, 3, 3), chunk=16),
        # the kernels' conventions: what no sequence reads is arbitrary, empty problems are valid
        replace(c, name="paged-sentinel", sentinel=SENTINEL),
        # NaN only in a paged cache: FA3 reads a contiguous row past cache_seqlens (NaN there reaches out, H200)
        replace(c, name="paged-nan-unused", sentinel=-1, nan_unused=True, new_tokens=1),
        replace(c, name="packed-q", lens_q=(1, 3, 2, 1), packed_q=True),
        replace(c, name="packed-q-batched-new", lens_q=(1, 3, 2, 1), packed_q=True, new_tokens=2),
        replace(c, name="table-no-seqlens", lens_k=(64, 64, 64, 64), no_seqlens=True),
        replace(rotary3, name="rotary-chunk", chunk=16),
        replace(rotary3, name="rotary-window-normalised", window=(-1, 3)),
        replace(c, name="seqlen-q-0", lens_q=(0, 0, 0, 0), return_lse=True),
        replace(c, name="sinks-inf", sinks=True, sink_inf=True, return_lse=True),
    ]
    return cases + (_cross(c) if full else [])


def _cross(base: Case) -> list[Case]:
    """The cross product: dtype x GQA ratio x head dim x mask, on mixed lengths."""
    out = []
    masks = {"none": {"causal": False}, "causal": {}, "window": {"window": (32, 0)},
             "softcap": {"softcap": 1.5}, "sinks": {"sinks": True}}  # fmt: skip
    for dtype in ("bf16", "fp16"):
        for hq, hk in ((4, 4), (8, 2), (8, 1)):
            for d in (64, 128, 256):
                for mask, kw in masks.items():
                    name = f"{dtype}-h{hq}k{hk}-d{d}-{mask}"
                    out.append(replace(base, name=name, dtype=dtype, hq=hq, hk=hk, d=d, **kw))
    return out


def _sinks(inp: Inputs):
    """Per-head sink logits in bf16, as engines keep them (sgl-kernel 0.4.5 takes no other dtype)."""
    return inp.sinks(inp.case.hq, torch.bfloat16) if inp.case.sinks else None


def _descales(inp: Inputs, batch: int) -> dict:
    if inp.case.dtype != "fp8_e4m3":
        return {}
    return {f"{n}_descale": (torch.rand(batch, inp.case.hk, generator=inp.gen) + 0.5).to(inp.dev) for n in "qkv"}


def _common(inp: Inputs, batch: int) -> dict:
    c = inp.case
    kw = {"causal": c.causal, "window_size": c.window, "softcap": c.softcap, "sinks": _sinks(inp),
          "return_softmax_lse": c.return_lse, **_descales(inp, batch)}  # fmt: skip
    if c.chunk:
        kw["attention_chunk"] = c.chunk
    return kw


def _hint(lens) -> int:
    """A max_seqlen hint: the longest length, at least 1 (a hint is an upper bound; kernels want one >= 1)."""
    return max(1, max(lens, default=0))


def varlen_inputs(case: Case, inp: Inputs) -> dict:
    c, dev = case, inp.dev
    lens_k = c.lens_k or c.lens_q
    dv = c.dv or c.d
    q = inp.randn(sum(c.lens_q), c.hq, c.d)
    cu_q = cumulative(c.lens_q, dev)  # self-attention passes one tensor for both, as engines' prefill does
    kw = {"cu_seqlens_q": cu_q, "cu_seqlens_k": cu_q if c.lens_k is None else cumulative(lens_k, dev),
          "max_seqlen_q": _hint(c.lens_q), "max_seqlen_k": _hint(lens_k)}  # fmt: skip
    if c.page_size:  # FA's paged convention: no cu_seqlens_k, the key lengths in seqused_k
        k, table = inp.paged(lens_k, c.hk, c.d)
        v = inp.randn(*k.shape[:3], dv)
        inp.retire_unused(table, lens_k, k, v)
        kw["cu_seqlens_k"], kw["page_table"] = None, table.to(dev)
        kw["seqused_k"] = torch.tensor(lens_k, dtype=torch.int32, device=dev)
    else:
        k, v = inp.randn(sum(lens_k), c.hk, c.d), inp.randn(sum(lens_k), c.hk, dv)
    if c.qv_dim:
        kw["qv"] = inp.randn(q.shape[0], c.hq, c.qv_dim)
    kw.update(q=q, k=k, v=v, **_common(inp, len(c.lens_q)))
    return kw


def kvcache_inputs(case: Case, inp: Inputs) -> dict:
    c, dev = case, inp.dev
    b, sq = len(c.lens_q), c.lens_q[0]
    lens_k = c.lens_k or c.lens_q
    dv = c.dv or c.d
    if c.packed_q:  # (total_q, ...) with cu_seqlens_q: each sequence its own number of queries
        q = inp.randn(sum(c.lens_q), c.hq, c.d)
        kw: dict = {"cu_seqlens_q": cumulative(c.lens_q, dev), "max_seqlen_q": _hint(c.lens_q)}
    else:
        q, kw = inp.randn(b, sq, c.hq, c.d), {}
    kw["cache_seqlens"] = None if c.no_seqlens else torch.tensor(lens_k, dtype=torch.int32, device=dev)
    rows = b * 2 if c.batch_idx else b
    if c.batch_idx:
        kw["cache_batch_idx"] = torch.randperm(rows, generator=inp.gen)[:b].to(torch.int32)
    if c.leftpad:
        kw["cache_leftpad"] = torch.tensor([n // 3 for n in lens_k], dtype=torch.int32)
    in_use = tuple(n + c.new_tokens for n in lens_k)
    if c.page_size:
        k_cache, table = inp.paged(lens_k, c.hk, c.d, spare=c.new_tokens)
        v_cache = inp.randn(*k_cache.shape[:3], dv)
        inp.retire_unused(table, in_use, k_cache, v_cache)
        kw["page_table"] = table.to(dev)
    else:
        length = max(lens_k) + c.new_tokens
        k_cache, v_cache = inp.randn(rows, length, c.hk, c.d), inp.randn(rows, length, c.hk, dv)
        row_of = kw["cache_batch_idx"].tolist() if c.batch_idx else list(range(b))
        by_row = [0] * rows  # cache rows no sequence uses are unused from their first slot
        for seq, row in enumerate(row_of):
            by_row[row] = in_use[seq]
        inp.retire_unused(None, tuple(by_row), k_cache, v_cache)
        if c.leftpad and c.nan_unused:  # slots before a sequence's left padding are not read either
            for seq, row in enumerate(row_of):
                k_cache[row, : lens_k[seq] // 3] = v_cache[row, : lens_k[seq] // 3] = float("nan")
    kw = {n: (t.to(dev) if isinstance(t, torch.Tensor) else t) for n, t in kw.items()}
    if c.new_tokens:
        kw["k"], kw["v"] = inp.randn(b, c.new_tokens, c.hk, c.d), inp.randn(b, c.new_tokens, c.hk, dv)
    if c.rotary:  # FA3 wants a table covering the cache's capacity
        positions = k_cache.shape[1] if not c.page_size else kw["page_table"].shape[1] * c.page_size
        angle = torch.rand(positions, c.d // 4, generator=inp.gen) * 2 * math.pi
        kw.update(rotary_cos=torch.cos(angle).to(inp.dtype).to(dev), rotary_sin=torch.sin(angle).to(inp.dtype).to(dev),
                  rotary_interleaved=c.rotary == "interleaved")  # fmt: skip
    if c.qv_dim:
        kw["qv"] = inp.randn(*q.shape[:-1], c.qv_dim)
    kw.update(q=q, k_cache=k_cache, v_cache=v_cache, **_common(inp, b))
    return kw
