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
from accelbridge.torch_attention.fitting import first_fitting
from accelbridge.torch_attention.grid import ceil_div, next_pow2

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


def prefill(q, k, v, cu_q, cu_k, max_seqlen_q: int, used_q, used_k, page_table, scale: float, mask: Masking,
            softcap: float, sinks: Any, want_lse: bool, out: Any = None,
            skip_aligned: int = 0) -> tuple[Any, Any]:  # fmt: skip
    """q (total_q, Hq, D) over packed k/v (total_k, Hk, D) or paged (blocks, page, Hk, D)
    -> out (total_q, Hq, Dv) in q's dtype, lse (Hq, total_q) float32 or None. ``out`` (the caller's,
    when usable as it is: q's dtype, unit stride in the head dim) is written in place of a new one.
    With ``skip_aligned`` L, a sequence whose rows are exactly rows [b * L, (b + 1) * L) is left as
    ``out`` holds it (``dense`` wrote it from views of the packed rows); the device tells which."""
    total_q, hq, d = q.shape
    hk, dv = k.shape[-2], v.shape[-1]
    batch = cu_q.shape[0] - 1
    dev = q.device
    o = writable(out, q.dtype)
    o = o if o is not None else torch.empty(total_q, hq, dv, dtype=q.dtype, device=dev)
    lse = torch.empty(hq, total_q, dtype=torch.float32, device=dev) if want_lse else o
    paged = page_table is not None
    if paged:
        page, num_blocks, table = k.shape[1], k.shape[0], page_table
        sk, sv, s_table = k.stride()[:3], v.stride()[:3], page_table.stride(0)
    else:
        page, num_blocks, table = 1, 1, cu_q
        sk, sv, s_table = (k.stride(0), 0, k.stride(1)), (v.stride(0), 0, v.stride(1)), 0
    left, right = mask.limits

    def launch(config: tuple[int, int, int, int]) -> None:
        block_m, block_n, warps, stages = config
        _kernel()[(max(1, ceil_div(max_seqlen_q, block_m)), hq, batch + 1)](
            q, k, v, o, lse, cu_q, cu_k if cu_k is not None else cu_q,
            used_q if used_q is not None else cu_q, used_k if used_k is not None else cu_q, table,
            sinks if sinks is not None else cu_q,
            q.stride(0), q.stride(1), *sk, *sv, o.stride(0), o.stride(1), lse.stride(0), s_table,
            float(scale) * LOG2E, float(softcap or 1.0), left, right, page, num_blocks, total_q, batch,
            skip_aligned,
            G=hq // hk, D=d, DV=dv, BLOCK_D=next_pow2(d), BLOCK_DV=next_pow2(dv), BLOCK_M=block_m, BLOCK_N=block_n,
            PAGED=paged, USED_Q_GIVEN=used_q is not None, USED_K_GIVEN=used_k is not None,
            LEFT=left >= 0, RIGHT=right >= 0, SOFTCAP=bool(softcap), HAS_SINKS=sinks is not None,
            WRITE_LSE=want_lse, SKIP_ALIGNED=skip_aligned > 0, DOT_F32=triton_interpreted(),
            num_warps=warps, num_stages=stages,
        )  # fmt: skip

    first_fitting(("the prefill kernel", dev, d, dv, q.dtype, "paged" if paged else "packed"), _configs(d, dv, dev),
                  launch)  # fmt: skip
    return o, (lse if want_lse else None)
