"""Self-attention prefill as one dense SDPA batch, when the batch is (nearly) all one length.

torch's SDPA on (B, H, L, D) tensors reaches cuDNN's fused kernel, which takes GQA (H200, torch
2.11: 1.75 ms for B=8, L=4096, 32/8 heads, sgl-kernel FA3's speed). Whether the padding is small
is told without reading the device: the packed rows (q.shape[0]) against batch x max_seqlen_q.
Two ways in:

- **views**: exactly batch x L packed rows, L a bucket length. SDPA runs on (B, L, H, D) views
  of the packed rows themselves, no copies; that result holds for every sequence on rows
  [b * L, (b + 1) * L). Whether the batch is all one length is on the device (rows past the last
  sequence are allowed), so the Triton prefill kernel follows, and there each sequence that is
  not on its rows, and the rows past the last one, are computed (a batch of one length: every
  program reads two lengths and stops, 22 us at B=8 L=4096 on an H200; one that is not pays both
  kernels).
- **packed**: a Triton kernel packs the varlen rows into (B, H, L', D), L' the bucket length,
  and back, one pass each (a memory round trip rather than gathers).

Where the padding is not small (ragged batches), the Triton prefill kernel serves alone.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F

from accelbridge.torch_attention import prefill
from accelbridge.torch_attention.capabilities import Capabilities
from accelbridge.torch_attention.core import Masking
from accelbridge.torch_attention.grid import ceil_div, next_pow2
from accelbridge.torch_attention.prefill import writable

_DTYPES = (torch.float16, torch.bfloat16)
FILL = 0.9  # at least this share of the padded batch holds packed rows (at most ~11 % padding)
log = logging.getLogger("accelbridge")


def fits(q, k, v, cu_q, cu_k, max_q: Any, max_k: Any, mask: Masking, caps: Capabilities) -> bool:
    """Causal self-attention (the same cu_seqlens, packed keys), fp16/bf16, one head dim, a host max length
    above 0 and rows filling at least FILL of the padded batch.

    Causal only: a shorter sequence's padding keys come after all of its queries, so the mask hides them;
    unmasked, its queries would see them (and which sequences are shorter is on the device).
    """
    if not (caps.triton and cu_k is cu_q and isinstance(max_q, int) and max_q > 0 and max_k == max_q):
        return False
    if mask != Masking(causal=True) or q.dtype not in _DTYPES or not k.dtype == v.dtype == q.dtype:
        return False
    group = q.shape[1] // k.shape[1]
    batch = cu_q.shape[0] - 1
    return (q.shape[0] == k.shape[0] and q.shape[-1] == k.shape[-1] == v.shape[-1] <= 256
            and (group == 1 or caps.sdpa_gqa) and batch > 0 and q.shape[0] >= FILL * batch * max_q)  # fmt: skip


@functools.cache
def _kernels():
    from accelbridge.torch_attention.dense_kernel import pack_kernel, unpack_kernel

    return pack_kernel, unpack_kernel


_MIN_STEP = 64  # the padded length's smallest step


def _config(device: torch.device) -> tuple[int, int]:
    """(BLOCK_L, num_warps) of the pack and unpack kernels."""
    return 128, 4  # H200, B=8 L=4096 32/8 heads d=128: the path 2120 us (64 rows: 2270, 256 rows 8 warps: 2195)


def bucket(length: int) -> int:
    """``length`` rounded up onto a grid of 8 steps an octave: at most an eighth more rows (steps of 64 below 512).

    cuDNN builds an execution graph for each new (B, H, L, D) it sees, 37-680 ms on the first call
    at that shape (H200, torch 2.11, cuDNN 9.19); padding L onto this grid bounds how many a server
    meets (4096 stays 4096, 3001 becomes 3072). The padding rows are filler a causal mask hides.
    """
    step = max(_MIN_STEP, (1 << (length.bit_length() - 1)) // 8)  # an eighth of the power of two below
    return ceil_div(length, step) * step


_SHAPES: set[tuple[Any, ...]] = set()


def _say_new_shape(*shape: Any) -> None:
    """Log each padded shape once: its first SDPA call is where cuDNN builds a graph (not silently slow)."""
    if shape not in _SHAPES:
        _SHAPES.add(shape)
        log.info("torch provider: prefill as one SDPA batch of shape (B, Hq, Hk, L, D, dtype, device, layout) = %s; "
                 "cuDNN builds its graph for a new one on this first call (tens to hundreds of ms)", shape)  # fmt: skip


def _pack(x: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    batch, heads, d = cu.shape[0] - 1, x.shape[1], x.shape[2]
    out = torch.empty(batch, heads, max_len, d, dtype=x.dtype, device=x.device)
    pack, _ = _kernels()
    block_l, warps = _config(x.device)
    pack[(ceil_div(max_len, block_l), heads, batch)](
        x, cu, out, x.stride(0), x.stride(1), *out.stride()[:3], max_len,
        D=d, BLOCK_L=block_l, BLOCK_D=next_pow2(d), num_warps=warps,
    )  # fmt: skip
    return out


def _on_views(q, k, v, batch: int, max_len: int, caps: Capabilities) -> bool:
    """Whether SDPA can run on views of the packed rows: exactly batch x max_len of them, max_len a
    bucket length (no new graph shapes), and the prefill kernel there to finish the rest."""
    return (q.shape[0] == batch * max_len == v.shape[0] and bucket(max_len) == max_len
            and prefill.fits(q, k, v, max_len, Masking(causal=True), caps))  # fmt: skip


def _sdpa(q, k, v, scale: float, causal: bool) -> torch.Tensor:
    gqa = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, **gqa)


def _over_views(q, k, v, cu, max_len: int, scale: float, causal: bool, out: Any) -> torch.Tensor:
    batch, total = cu.shape[0] - 1, q.shape[0]
    _say_new_shape(batch, q.shape[1], k.shape[1], max_len, q.shape[-1], q.dtype, q.device, "views of the rows")
    views = [x.view(batch, max_len, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v)]
    rows = _sdpa(*views, scale, causal).transpose(1, 2)  # (B, L, Hq, Dv): cuDNN's output follows q's layout
    target = writable(out, q.dtype)
    if target is not None:
        target.view(batch, max_len, *target.shape[1:]).copy_(rows)
    else:
        target = rows.reshape(total, q.shape[1], v.shape[-1])  # a view where the layout allows
    prefill.prefill(q, k, v, cu, cu, max_len, None, None, None, scale, Masking(causal=causal), 0.0, None, False,
                    target, skip_aligned=max_len)  # fmt: skip
    return target


def self_attention(q, k, v, cu, max_len: int, scale: float, causal: bool, caps: Capabilities,
                   out: Any = None) -> torch.Tensor:  # fmt: skip
    """q (total, Hq, D) -> out (total, Hq, D) in q's dtype (the caller's ``out`` where a kernel can write
    it); rows past the last sequence are zeros."""
    if _on_views(q, k, v, cu.shape[0] - 1, max_len, caps):
        return _over_views(q, k, v, cu, max_len, scale, causal, out)
    return packed(q, k, v, cu, max_len, scale, causal, out)


def packed(q, k, v, cu, max_len: int, scale: float, causal: bool, out: Any = None) -> torch.Tensor:
    """``self_attention`` through a padded copy of the rows (any batch ``fits`` takes)."""
    padded = bucket(max_len)
    _say_new_shape(cu.shape[0] - 1, q.shape[1], k.shape[1], padded, q.shape[-1], q.dtype, q.device, "packed")
    qp, kp, vp = (_pack(x, cu, padded) for x in (q, k, v))
    o = _sdpa(qp, kp, vp, scale, causal)
    total, heads, d = q.shape[0], q.shape[1], v.shape[-1]
    out = writable(out, q.dtype)
    out = out if out is not None else torch.empty(total, heads, d, dtype=q.dtype, device=q.device)
    _, unpack = _kernels()
    batch = cu.shape[0] - 1
    block_l, warps = _config(q.device)
    unpack[(ceil_div(max_len, block_l), heads, batch + 1)](
        o, cu, out, *o.stride()[:3], out.stride(0), out.stride(1), padded, total, batch,
        D=d, BLOCK_L=block_l, BLOCK_D=next_pow2(d), num_warps=warps,
    )  # fmt: skip
    return out
