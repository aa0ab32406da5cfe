"""Fuzz draws over the upstream kernels' own test grids, for the differential fuzz (CPU) and its GPU run.

The values are those of the kernels' own tests, read from their sources:
- FlashMLA ``tests/test_flash_mla_dense_decoding.py``: b 1/2/6/64 (128 with zero lengths), s_q 1/2/4, s_k 20/140/4096
  (varlen: N(s_k, s_k/2), at least s_q), h_q 1/3/9/63/64/126/128, h_kv 1/2/3/8 (h_q % h_kv == 0), causal, pages of 64,
  NaN past each sequence and 2147480000 in unused table entries, bf16 and fp16.
- FlashMLA ``tests/test_flash_mla_sparse_decoding.py``: d_qk 576 (V3.2) / 512 (V4, with topk_length and an extra
  cache), h_q 64/128, (s_k, topk, block) pairs, s_q 1/3, sinks, all indices invalid, zero lengths.
- FlashMLA ``tests/test_flash_mla_sparse_prefill.py``: d_qk 512/576, h_q 64/128, (s_kv, topk) pairs with indices past
  s_kv, s_q 1/62/213, sinks, topk_length, all invalid.
- sgl-kernel ``tests/test_flash_attention.py`` (FA3 as flash-attention's hopper tests): head dims 64/96/128/192/256
  (192 with v 128), MHA/GQA/MQA over 6 query heads, its (seqlen_q, seqlen_k) pairs, pages 1/16/64/128/256,
  softcap 15, local windows, attention_chunk, rotary (half, interleaved), appended k/v, left padding, batch
  index, FP8 with descales, sinks.

``work`` bounds each problem so the float64 oracle stays fast: large upstream shapes are drawn with fewer
sequences (their batch shrunk, never their lengths or heads). The CPU fuzz draws with a small budget, the GPU
fuzz with a large one.
"""

from __future__ import annotations

import random
from dataclasses import replace

from accelbridge.ops.cases import SENTINEL, Case
from accelbridge.ops.flash_mla_cases import PREFILL_INVALID

FA3_SEQLENS = ((1, 1), (1, 3), (2, 1), (511, 1), (3, 513), (64, 128), (128, 128), (256, 256), (113, 203), (128, 217),
               (113, 211), (108, 256), (256, 512), (307, 256), (640, 128), (512, 256), (1024, 1024), (1023, 1024),
               (1024, 1023), (2048, 2048))  # fmt: skip
FA3_HEAD_DIMS = ((64, 64), (96, 96), (128, 128), (192, 192), (192, 128), (256, 256))  # (d, dv)
MLA_HEADS = (
    (1, 1),
    (3, 1),
    (3, 3),
    (9, 1),
    (9, 3),
    (63, 1),
    (63, 3),
    (64, 1),
    (64, 2),
    (64, 8),
    (126, 1),
    (126, 2),
    (126, 3),
    (128, 1),
    (128, 2),
    (128, 8),
)  # fmt: skip  (h_q, h_kv) with h_q % h_kv == 0
SPARSE_DECODE = (
    (512, 64, 2),
    (512, 64, 64),
    (512, 64, 69),
    (1024, 576, 2),
    (1024, 576, 61),
    (2046, 2048, 2),
    (2046, 2048, 64),
    (2046, 2048, 576),
    (650, 576, 53),
)  # fmt: skip  (s_k, topk, block)
SPARSE_PREFILL = (
    (128, 128),
    (256, 256),
    (512, 512),
    (592, 128),
    (1840, 256),
    (1592, 384),
    (1521, 512),
    (95, 128),
    (153, 256),
    (114, 384),
    (32, 2048),
)  # fmt: skip  (s_kv, topk)


def _fit(batch: int, per_sequence: float, work: float) -> int:
    """The largest batch <= ``batch`` whose problem stays within ``work``: at least one sequence."""
    return max(1, min(batch, int(work // max(per_sequence, 1.0))))


def _varlen_lengths(r: random.Random, b: int, mean: int, floor: int) -> tuple[int, ...]:
    return tuple(max(floor, int(r.normalvariate(mean, mean / 2))) for _ in range(b))


def mla_dense(r: random.Random, work: float) -> Case:
    """FlashMLA dense decode: work ~ b * s_q * h_q * s_k."""
    sq, sk = r.choice([1, 2, 4]), r.choice([20, 140, 4096])
    hq, hk = r.choice(MLA_HEADS)
    zero = r.random() < 0.15
    b = 128 if zero else r.choice([1, 2, 6, 64])
    b = _fit(b, sq * hq * sk * 1.5, work)
    varlen = zero or r.random() < 0.5
    lens = _varlen_lengths(r, b, sk, sq) if varlen else (sk,) * b
    if zero:
        lens = tuple(0 if r.random() < 0.5 else n for n in lens)
    return Case("flashmla.kvcache", "upstream", lens_q=(sq,) * b, lens_k=lens, hq=hq, hk=hk, d=576, dv=512,
                page_size=64, causal=sq > 1 and r.random() < 0.5, with_out=False, dtype=r.choice(["bf16", "fp16"]),
                tol="flashmla", sentinel=SENTINEL, nan_unused=True)  # fmt: skip


def mla_sparse(r: random.Random, work: float) -> Case:
    """FlashMLA sparse decode: work ~ b * s_q * topk (the oracle decodes each indexed token)."""
    d = r.choice([576, 512])
    sk, topk, block = r.choice(SPARSE_DECODE)
    sq = r.choice([1, 3])
    extra = d == 512 and r.random() < 0.5
    extra_topk, extra_block = (0, 0)
    if extra:
        _, extra_topk, extra_block = r.choice(SPARSE_DECODE)
    b = _fit(r.choice([4, 74, 321]), sq * (topk + extra_topk), work / 64)
    lens = _varlen_lengths(r, b, sk, 1)
    if r.random() < 0.2:
        lens = tuple(0 if r.random() < 0.5 else n for n in lens)
    sinks = r.random() < 0.6
    return Case("flashmla.kvcache", "upstream", lens_q=(sq,) * b, lens_k=lens, hq=r.choice([64, 128]), hk=1, d=d,
                dv=512, page_size=block, causal=False, with_out=False, tol="flashmla", topk=topk,
                topk_length=d == 512 and r.random() < 0.5, sinks=sinks, sink_inf=sinks and r.random() < 0.3,
                invalid=r.choice([(), (-1,), (-1, SENTINEL)]), extra_topk=extra_topk, extra_page_size=extra_block,
                nan_unused=r.random() < 0.5)  # fmt: skip


def mla_prefill(r: random.Random, work: float) -> Case:
    """FlashMLA sparse prefill: work ~ s_q * h_q * topk."""
    s_kv, topk = r.choice(SPARSE_PREFILL)
    hq = r.choice([64, 128])
    sq = _fit(r.choice([1, 62, 213]), hq * topk, work)
    sinks = r.random() < 0.5
    return Case("flashmla.sparse_prefill", "upstream", lens_q=(sq,), lens_k=(s_kv,), hq=hq, hk=1,
                d=r.choice([576, 512]), dv=512, topk=topk, with_out=False, return_lse=True, tol="flashmla",
                topk_length=r.random() < 0.5, sinks=sinks, sink_inf=sinks and r.random() < 0.3,
                invalid=r.choice([(), PREFILL_INVALID]))  # fmt: skip


def _fa3_common(r: random.Random) -> dict:
    d, dv = r.choice(FA3_HEAD_DIMS)
    hk = r.choice([6, 2, 1])  # MHA, GQA, MQA over 6 query heads
    causal = r.random() < 0.5
    window = (-1, -1) if r.random() < 0.6 else (r.randint(0, 300), -1 if causal else r.randint(0, 300))
    sinks = r.random() < 0.2
    dtype = r.choice(["bf16", "bf16", "fp16", "fp8_e4m3"])
    if dtype == "fp8_e4m3":
        dv = d  # FA3's FP8 kernels take v of q's head dim
    return {"hq": 6, "hk": hk, "d": d, "dv": dv, "causal": causal, "window": window, "dtype": dtype,
            "softcap": r.choice([0.0, 0.0, 15.0]), "sinks": sinks, "sink_inf": sinks and r.random() < 0.3,
            "return_lse": True, "with_out": r.random() < 0.5}  # fmt: skip


def fa3_varlen(r: random.Random, work: float) -> Case:
    """FA3 varlen: work ~ total_q * h_q * s_k."""
    sq, sk = r.choice(FA3_SEQLENS)
    b = _fit(r.randint(1, 9), sq * sk * 6, work)
    lens_q = tuple(r.randint(0, sq) if r.random() < 0.3 else sq for _ in range(b))
    lens_k = tuple(r.randint(0, sk) if r.random() < 0.3 else sk for _ in range(b))
    page = r.choice([0, 0, 1, 16, 64, 128, 256])
    retired = {"sentinel": r.choice([None, -1]), "nan_unused": r.random() < 0.5} if page else {}
    case = Case("fa3.varlen", "upstream", lens_q=lens_q, lens_k=lens_k, page_size=page, **_fa3_common(r),
                **retired)  # fmt: skip
    if not case.sinks and case.dtype != "fp8_e4m3" and r.random() < 0.15:
        case = replace(case, chunk=r.choice([64, 128, 256]))
    return case


def fa3_kvcache(r: random.Random, work: float) -> Case:
    """FA3 kvcache (decode and chunked prefill over a cache): work ~ b * s_q * h_q * s_k."""
    sq, sk = r.choice(FA3_SEQLENS)
    sq = min(sq, r.choice([1, 1, 3, 64, sq]))
    b = _fit(r.randint(1, 9), sq * sk * 6, work)
    page = r.choice([0, 0, 1, 16, 64, 128, 256])
    new = r.choice([0, 0, 1, sq])
    lens_k = tuple(max(0, int(r.uniform(0, sk))) if r.random() < 0.5 else sk for _ in range(b))
    retired = {"sentinel": r.choice([None, -1]), "nan_unused": r.random() < 0.5} if page else {}
    case = Case("fa3.kvcache", "upstream", lens_q=(sq,) * b, lens_k=lens_k, page_size=page, new_tokens=new,
                **_fa3_common(r), **retired)  # fmt: skip
    if new and case.dtype != "fp8_e4m3" and r.random() < 0.5:
        case = replace(case, rotary=r.choice(["half", "interleaved"]))
    if not page and not new and r.random() < 0.3:
        case = replace(case, leftpad=True)
    elif not page and r.random() < 0.3:
        case = replace(case, batch_idx=True)
    return case


DRAWS = {
    "fa3.varlen": fa3_varlen,
    "fa3.kvcache": fa3_kvcache,
    "flashmla.dense": mla_dense,
    "flashmla.sparse": mla_sparse,
    "flashmla.sparse_prefill": mla_prefill,
}
