"""Merging split-K partial results in one Triton launch, written where the caller wants them.

The decode kernels split a row's keys over programs when the rows alone leave processors idle;
each split leaves its output (normalised by its own sum) and log-sum-exp. Merging them in torch
costs a dozen small launches, host time a decode step does not have; this kernel reads each
split once and writes the output in its final layout and dtype (the caller's ``out`` where given).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from accelbridge.torch_attention.capabilities import triton_interpreted
from accelbridge.torch_attention.grid import next_pow2


@functools.cache
def _kernel():
    from accelbridge.torch_attention.splits_kernel import merge_kernel

    return merge_kernel


def merge(mid_o: torch.Tensor, mid_l: torch.Tensor, o_strides: tuple[int, int, int, int],
          l_strides: tuple[int, int, int, int], out: torch.Tensor, lse: torch.Tensor, sinks: Any = None,
          sink_in_lse: bool = True, lonely_inf: bool = False) -> None:  # fmt: skip
    """Merge into ``out`` (B, Lq, H, Dv; unit stride in Dv) and ``lse`` (B, H, Lq), otherwise any strides.

    ``o_strides`` / ``l_strides`` address ``mid_o`` / ``mid_l`` by (b, i, head, split) (mid_o unit
    stride in Dv), so one kernel serves the decode kernel's (B, splits, Hk, G * Lq) layout and the
    MLA kernel's (B * Sq, splits, H).
    """
    (batch, lq, heads, dv), splits = out.shape, mid_l.shape[1]
    block_s = max(2, next_pow2(splits))
    block_dv = max(16, min(next_pow2(dv), 4096 // block_s))
    sink = sinks if sinks is not None else lse
    target = out
    if out.dtype == torch.bfloat16 and triton_interpreted():  # the interpreter truncates to bf16, torch rounds
        target = torch.empty(out.shape, dtype=torch.float32, device=out.device)
    _kernel()[(batch * lq, heads)](
        mid_o, mid_l, sink, target, lse, splits, lq, *o_strides, *l_strides, *target.stride()[:3],
        lse.stride(0), lse.stride(2), lse.stride(1),
        DV=dv, BLOCK_S=block_s, BLOCK_DV=block_dv, HAS_SINK=sinks is not None, SINK_IN_LSE=sink_in_lse,
        LONELY_INF=lonely_inf, num_warps=4,
    )  # fmt: skip
    if target is not out:
        out.copy_(target)
