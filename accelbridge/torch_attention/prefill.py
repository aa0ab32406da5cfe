"""Varlen and paged prefill in one Triton kernel (FlashAttention-2's forward): no padded copy.

Program (block of BLOCK_M query rows, q head, sequence) streams its sequence's keys in blocks of
BLOCK_N straight from the packed (or paged) k/v, with an online softmax in base 2. The blocks every
row of the program sees whole run without masks; only the edges (the causal diagonal, a window's
ends, the last partial block) are masked. A page-table entry is read only for keys inside the
sequence, and clamped into the cache, so an arbitrary entry never faults. One extra program column
writes the rows past the last sequence (zeros, lse -inf), so every element of the result is written
without a memset. Triton is imported on the first call only.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from accelbridge.ops.softmax import LOG2E
from accelbridge.torch_attention.capabilities import Capabilities, triton_interpreted
from accelbridge.torch_attention.core import Masking
from accelbridge.torch_attention.grid import ceil_div, next_pow2
from accelbridge.torch_attention.launch_plan import Launch, Plans, classes

_DTYPES = (torch.float16, torch.bfloat16)
MAX_DIM = 256


def fits(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, max_seqlen_q: Any, mask: Masking, caps: Capabilities
) -> bool:
    """Whether the kernel serves this call: a Triton device, fp16/bf16 everywhere, head dims up to 256,
    unit stride in the head dim, a host ``max_seqlen_q`` (the grid), no attention chunks."""
    return (caps.triton and isinstance(max_seqlen_q, int) and not mask.chunk
            and q.dtype in _DTYPES and k.dtype == q.dtype == v.dtype
            and 16 <= q.shape[-1] <= MAX_DIM and 16 <= v.shape[-1] <= MAX_DIM
            and q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1)  # fmt: skip


@functools.cache
def _kernel():
    from accelbridge.torch_attention.prefill_kernel import prefill_kernel

    return prefill_kernel


def writable(out: Any, dtype: torch.dtype) -> torch.Tensor | None:
    """The caller's ``out`` if a kernel can write it directly (its dtype, unit stride in the head dim)."""
    return out if out is not None and out.dtype == dtype and out.stride(-1) == 1 else None


@functools.cache
def _configs(d: int, dv: int, device: torch.device) -> tuple[tuple[int, int, int, int], ...]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for these head dims, best first (H200-tuned; the rest for GPUs
    with less shared memory, ``fitting``); small under the interpreter."""
    if device.type != "cuda":
        return ((16, 16, 4, 1),)
    if max(d, dv) <= 128:  # H200, bf16, causal L=4096: d=64 0.83x sgl-kernel FA3, d=128 0.59x (ragged lengths 0.60x)
        return (128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 2), (64, 32, 4, 1), (32, 32, 4, 1)
    return (64, 32, 4, 2), (64, 32, 4, 1), (32, 32, 4, 1), (16, 16, 4, 1)


class _Plan:
    """One call geometry's launch, worked out once (``launch_plan``): every stride and size, the config; a call
    allocates what it writes and launches over as many query blocks as its ``max_seqlen_q`` needs."""

    def __init__(self, config: tuple[int, int, int, int], q, k, v, cu_q, cu_k, used_q, used_k, page_table,
                 mask: Masking, softcap: float, sinks: Any, want_lse: bool, out: Any, skip_aligned: int):  # fmt: skip
        block_m, block_n, warps, stages = config
        total_q, hq, d = q.shape
        hk, dv = k.shape[-2], v.shape[-1]
        batch = cu_q.shape[0] - 1
        self.block_m, self.want_lse, self.o_shape, self.lse_shape = block_m, want_lse, (total_q, hq, dv), (hq, total_q)
        o = out if out is not None else torch.empty(self.o_shape, device="meta")
        lse = torch.empty(self.lse_shape, device="meta") if want_lse else o
        paged = page_table is not None
        if paged:
            page, num_blocks, s_table = k.shape[1], k.shape[0], page_table.stride(0)
            sk, sv = k.stride()[:3], v.stride()[:3]
        else:
            page, num_blocks, s_table = 1, 1, 0
            sk, sv = (k.stride(0), 0, k.stride(1)), (v.stride(0), 0, v.stride(1))
        left, right = mask.limits
        names = ("sq_t", "sq_h", "sk_0", "sk_1", "sk_h", "sv_0", "sv_1", "sv_h", "so_t", "so_h", "sl_h", "s_table")
        strides = (q.stride(0), q.stride(1), *sk, *sv, o.stride(0), o.stride(1), lse.stride(0), s_table)
        tensors = ("Q", "K", "V", "OUT", "LSE", "CU_Q", "CU_K", "USED_Q", "USED_K", "TABLE", "SINKS", "scale_log2",
                   "softcap")  # fmt: skip
        args = dict(zip(names, strides), left=left, right=right, page=page, num_blocks=num_blocks, total_q=total_q,
                    batch=batch, aligned=skip_aligned, G=hq // hk, D=d, DV=dv, BLOCK_D=next_pow2(d),
                    BLOCK_DV=next_pow2(dv), BLOCK_M=block_m, BLOCK_N=block_n, PAGED=paged,
                    USED_Q_GIVEN=used_q is not None, USED_K_GIVEN=used_k is not None, LEFT=left >= 0,
                    RIGHT=right >= 0, SOFTCAP=bool(softcap), HAS_SINKS=sinks is not None, WRITE_LSE=want_lse,
                    SKIP_ALIGNED=skip_aligned > 0, DOT_F32=triton_interpreted())  # fmt: skip
        self.paged = paged
        per_call = (*tensors, *_GROWING) if paged else tensors
        self.launch = Launch(_kernel(), (1, hq, batch + 1), {**args, **dict.fromkeys(tensors)},
                             {"num_warps": warps, "num_stages": stages}, per_call)  # fmt: skip

    def __call__(self, q, k, v, cu_q, cu_k, max_seqlen_q: int, used_q, used_k, page_table, scale: float,
                 softcap: float, sinks: Any, out: Any) -> tuple[torch.Tensor, Any]:  # fmt: skip
        o = out if out is not None else torch.empty(self.o_shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(self.lse_shape, dtype=torch.float32, device=q.device) if self.want_lse else o
        self.launch(q, k, v, o, lse, cu_q, cu_k if cu_k is not None else cu_q, used_q if used_q is not None else cu_q,
                    used_k if used_k is not None else cu_q, page_table if page_table is not None else cu_q,
                    sinks if sinks is not None else cu_q, float(scale) * LOG2E, float(softcap or 1.0),
                    *((k.shape[1], k.stride(0), k.stride(2), v.stride(0), v.stride(2)) if self.paged else ()),
                    grid=(max(1, ceil_div(max_seqlen_q, self.block_m)), *self.launch.grid[1:]))  # fmt: skip
        return o, (lse if self.want_lse else None)


# a paged cache's integers that a contiguous cache's length sets (its rows read as pages of that length: a
# model's cache read in place as (batch, tokens, kv heads, dim) views): a call's own, in this order
_GROWING = ("page", "sk_0", "sk_h", "sv_0", "sv_h")


def _key(q, k, v, cu_q, cu_k, used_q, used_k, page_table, mask: Masking, softcap: float, sinks: Any, want_lse: bool,
         out: Any, skip_aligned: int) -> tuple[Any, ...]:  # fmt: skip
    """Every shape, stride, dtype and flag the launch's integers and kernel come from. Not the packed keys' count:
    the kernel reads them through the sequences' offsets, so a decode step whose keys grew keeps its plan; nor a
    paged cache's page length and the strides it sets (``_GROWING``, a call's own), only their classes."""
    if page_table is not None:
        ks, vs = k.stride(), v.stride()
        cache = (k.shape[0], k.shape[2:], ks[1], ks[3], vs[1], vs[3], classes(k.shape[1], ks[0], ks[2], vs[0], vs[2]))
    else:
        cache = (k.shape[1:], k.stride(), v.stride())
    return (q.device, q.dtype, q.shape, q.stride(), k.dtype, cache,
            v.dtype, v.shape[-1], cu_q.dtype, cu_q.shape, mask.limits, bool(softcap), want_lse,
            skip_aligned, None if cu_k is None else cu_k.dtype, None if used_q is None else used_q.dtype,
            None if used_k is None else used_k.dtype,
            None if page_table is None else (page_table.dtype, page_table.stride()),
            None if sinks is None else sinks.dtype, None if out is None else out.stride())  # fmt: skip


_PLANS: Plans[_Plan] = Plans()


def prefill(q, k, v, cu_q, cu_k, max_seqlen_q: int, used_q, used_k, page_table, scale: float, mask: Masking,
            softcap: float, sinks: Any, want_lse: bool, out: Any = None,
            skip_aligned: int = 0) -> tuple[Any, Any]:  # fmt: skip
    """q (total_q, Hq, D) over packed k/v (total_k, Hk, D) or paged (blocks, page, Hk, D)
    -> out (total_q, Hq, Dv) in q's dtype, lse (Hq, total_q) float32 or None. ``out`` (the caller's,
    when usable as it is: q's dtype, unit stride in the head dim) is written in place of a new one.
    With ``skip_aligned`` L, a sequence whose rows are exactly rows [b * L, (b + 1) * L) is left as
    ``out`` holds it (``dense`` wrote it from views of the packed rows); the device tells which.
    The launch is planned once per call geometry (``_Plan``)."""
    o = writable(out, q.dtype)
    dev = q.device
    configs = _configs(q.shape[-1], v.shape[-1], dev)
    key = (configs, *_key(q, k, v, cu_q, cu_k, used_q, used_k, page_table, mask, softcap, sinks, want_lse, o,
                          skip_aligned))  # fmt: skip
    call = (q, k, v, cu_q, cu_k, max_seqlen_q, used_q, used_k, page_table, scale, softcap, sinks, o)

    def first(config: tuple[int, int, int, int]) -> tuple[_Plan, tuple[torch.Tensor, Any]]:
        made = _Plan(config, q, k, v, cu_q, cu_k, used_q, used_k, page_table, mask, softcap, sinks, want_lse, o,
                     skip_aligned)  # fmt: skip
        return made, made(*call)

    variant = "paged" if page_table is not None else "packed"
    return _PLANS.call(key, call, ("the prefill kernel", dev, q.shape[-1], v.shape[-1], q.dtype, variant), configs,
                       first)  # fmt: skip
