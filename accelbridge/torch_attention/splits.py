"""Merging split-K partial results in one Triton launch, written where the caller wants them.

The decode kernels split a row's keys over programs when the rows alone leave processors idle;
each split leaves its output (normalised by its own sum) and log-sum-exp. Merging them in torch
costs a dozen small launches, host time a decode step does not have; this kernel reads each
split once and writes the output in its final layout and dtype (the caller's ``out`` where given).
"""

from __future__ import annotations

import functools

import torch

from accelbridge.torch_attention.grid import next_pow2
from accelbridge.torch_attention.launch_plan import Launch


@functools.cache
def _kernel():
    from accelbridge.torch_attention.splits_kernel import merge_kernel

    return merge_kernel


_TENSORS = ("MID_O", "MID_L", "SINK", "OUT", "LSE")


def merge_launch(mid_o: torch.Tensor, mid_l: torch.Tensor, o_strides: tuple[int, int, int, int],
                 l_strides: tuple[int, int, int, int], out: torch.Tensor, lse: torch.Tensor, has_sink: bool,
                 sink_in_lse: bool = True, lonely_inf: bool = False) -> Launch:  # fmt: skip
    """The merge planned for tensors of these shapes and strides (any device, ``meta`` included): the launch takes
    (mid_o, mid_l, sink (any tensor where ``has_sink`` is False), out, lse) and merges into ``out`` (B, Lq, H, Dv;
    unit stride in Dv) and ``lse`` (B, H, Lq), otherwise any strides.

    ``o_strides`` / ``l_strides`` address ``mid_o`` / ``mid_l`` by (b, i, head, split) (mid_o unit stride in Dv), so
    one kernel serves the decode kernel's (B, splits, Hk, G * Lq) layout and the MLA kernel's (B * Sq, splits, H).
    Under the interpreter a bf16 result is written to a float32 ``out`` (it truncates to bf16 where torch rounds)."""
    (batch, lq, heads, dv), splits = out.shape, mid_l.shape[1]
    block_s = max(2, next_pow2(splits))
    strides = (*o_strides, *l_strides, *out.stride()[:3], lse.stride(0), lse.stride(2), lse.stride(1))
    names = ("so_b", "so_i", "so_h", "so_s", "sl_b", "sl_i", "sl_h", "sl_s", "to_b", "to_i", "to_h", "tl_b", "tl_i",
             "tl_h")  # fmt: skip
    args = dict(zip(names, strides), splits=splits, lq=lq, DV=dv, BLOCK_S=block_s,
                BLOCK_DV=max(16, min(next_pow2(dv), 4096 // block_s)), HAS_SINK=has_sink, SINK_IN_LSE=sink_in_lse,
                LONELY_INF=lonely_inf)  # fmt: skip
    return Launch(_kernel(), (batch * lq, heads), {**args, **dict.fromkeys(_TENSORS)}, {"num_warps": 4}, _TENSORS)
