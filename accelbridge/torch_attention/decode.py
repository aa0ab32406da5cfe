"""Decode over a (paged) KV cache in place: a split-K Triton kernel, no gathered copy of the cache.

Gathering pages into a padded batch writes the whole cache once more and reads it again (three
times the traffic of reading it); this kernel reads each key and value once. Program (b, kv
head, split) runs its GQA group's query rows (group * seqlen_q, padded to 16) over one slice of
the sequence's keys, looking up each key's block in the page table; the slices' partial results
are merged with their log-sum-exp by ``splits.merge``. The kernel is ``decode_kernel``'s, imported (with
triton) on the first call.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from accelbridge.ops.softmax import LOG2E
from accelbridge.torch_attention.capabilities import Capabilities, processors, triton_interpreted
from accelbridge.torch_attention.core import Masking
from accelbridge.torch_attention.fitting import first_fitting
from accelbridge.torch_attention.grid import ceil_div, next_pow2
from accelbridge.torch_attention.splits import merge as merge_splits

_DTYPES = (torch.float16, torch.bfloat16)
_DIMS = (16, 32, 64, 128, 256)
MAX_ROWS = 64  # group * seqlen_q per program: beyond this, batched SDPA serves better


def fits(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, caps: Capabilities) -> bool:
    """Whether the kernel serves this call: a Triton device, fp16/bf16, power-of-two head dims, few rows,
    and something to compute (no queries or no sequences: the batched path returns the empty answer)."""
    rows = q.shape[1] * (q.shape[2] // k_cache.shape[2])
    return (caps.triton and 0 < rows and 0 < q.shape[0]
            and q.dtype in _DTYPES and k_cache.dtype == q.dtype == v_cache.dtype
            and q.shape[-1] in _DIMS and v_cache.shape[-1] in _DIMS and rows <= MAX_ROWS
            and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1)  # fmt: skip


@functools.cache
def _kernel():
    from accelbridge.torch_attention.decode_kernel import decode_split_kernel

    return decode_split_kernel


_WAVES, _MIN_SPLIT = 4, 512  # programs a processor for the splits to fill, fewest keys a split


@functools.cache
def _configs(device: torch.device) -> tuple[tuple[int, int, int], ...]:
    """(BLOCK_N, num_warps, num_stages), best first (the rest for GPUs with less shared memory, ``fitting``)."""
    return (64, 4, 2), (32, 4, 2), (16, 4, 1)  # H200, B=64 ctx 8192 page 64: 3.70 TB/s of KV (3 stages: 3.51)


def paged_decode(q, k_cache, v_cache, q_len, k_len, k_start, rows, page_table, scale: float, mask: Masking,
                 softcap: float, sinks: Any, out: Any = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """q (B, Lq, Hq, D) over the cache -> out (B, Lq, Hq, Dv) in q's dtype (``out`` where given) and lse
    (B, Hq, Lq) float32. ``q_len`` None: every sequence has Lq queries; ``rows`` None: sequence b reads cache
    row b; ``page_table`` None: a contiguous cache (a row is one page). None builds no tensor: no launch."""
    b, lq, hq, d = q.shape
    hk, dv = k_cache.shape[2], v_cache.shape[-1]
    g = hq // hk
    dev = q.device
    page = k_cache.shape[1]
    paged = page_table is not None
    table = page_table if paged else k_len  # read only when paged
    capacity = page_table.shape[1] * page if paged else page
    splits = max(1, min(ceil_div(_WAVES * processors(dev), b * hk), ceil_div(capacity, _MIN_SPLIT)))
    block_r = max(16, next_pow2(g * lq))
    mid_o = torch.empty(b, splits, hk, g * lq, dv, dtype=torch.float32, device=dev)
    mid_l = torch.empty(b, splits, hk, g * lq, dtype=torch.float32, device=dev)
    left, right = mask.limits
    q = q if q.stride(-1) == 1 else q.contiguous()

    def launch(config: tuple[int, int, int]) -> None:
        block_n, warps, stages = config
        split_len = ceil_div(ceil_div(capacity, splits), block_n) * block_n
        _kernel()[(b, hk, splits)](
            q, k_cache, v_cache, table, rows if rows is not None else k_len, q_len if q_len is not None else k_len,
            k_len, k_start if k_start is not None else k_len, mid_o, mid_l,
            q.stride(0), q.stride(1), q.stride(2), *k_cache.stride()[:3], *v_cache.stride()[:3],
            page_table.stride(0) if paged else 0,
            *mid_o.stride()[:4], *mid_l.stride()[:3],
            float(scale) * LOG2E, float(softcap or 1.0), page, k_cache.shape[0], capacity, left, right, split_len,
            G=g, LQ=lq, BLOCK_R=block_r, D=d, DV=dv, BLOCK_N=block_n, num_warps=warps, num_stages=stages,
            SOFTCAP=bool(softcap), LEFT=left >= 0, RIGHT=right >= 0, HAS_START=k_start is not None,
            PAGED=paged, OWN_ROW=rows is None, UNIFORM_Q=q_len is None,
            DOT_F32=triton_interpreted(),
        )  # fmt: skip

    first_fitting(("the paged decode kernel", dev, d, dv, q.dtype, g * lq), _configs(dev), launch)
    o = out if out is not None else torch.empty(b, lq, hq, dv, dtype=q.dtype, device=dev)
    lse = torch.empty(b, hq, lq, dtype=torch.float32, device=dev)
    so, sl = mid_o.stride(), mid_l.stride()  # a query head h = hk * G + g is row g * Lq + i of kv head hk
    merge_splits(mid_o, mid_l, (so[0], so[3], lq * so[3], so[1]), (sl[0], sl[3], lq * sl[3], sl[1]), o, lse, sinks)
    return o, lse
