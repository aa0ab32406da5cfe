"""Decode over a (paged) KV cache in place: a split-K Triton kernel, no gathered copy of the cache.

Gathering pages into a padded batch writes the whole cache once more and reads it again (three
times the traffic of reading it); this kernel reads each key and value once. Program (b, kv
head, split) runs its GQA group's query rows (group * seqlen_q, padded to 16) over one slice of
the sequence's keys, looking up each key's block in the page table; the slices' partial results
are merged with their log-sum-exp by ``splits.merge_launch``. The kernel is ``decode_kernel``'s, imported (with
triton) on the first call.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from accelbridge.ops.softmax import LOG2E
from accelbridge.torch_attention.capabilities import Capabilities, processors, triton_interpreted
from accelbridge.torch_attention.core import Masking
from accelbridge.torch_attention.grid import ceil_div, next_pow2
from accelbridge.torch_attention.launch_plan import Launch, Plans, classes
from accelbridge.torch_attention.splits import merge_launch

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


class _Plan:
    """One call geometry's launches, worked out once (``launch_plan``): the split count and length, every stride
    and size, the merge; a call allocates the partials and the result and points the launches at its tensors.

    A contiguous cache (no page table) is planned without its length: a model's cache that grows a token a step
    (transformers' DynamicCache, read in place as (batch, tokens, kv heads, dim) views) keeps its plan until its
    split count changes (every 512 keys, up to the waves' worth). Its length, the split length and the strides the
    length sets (``_GROWING``) are a call's values; the key holds what Triton specialises them on
    (``launch_plan.classes``)."""

    def __init__(self, config: tuple[int, int, int], q, k_cache, v_cache, q_len, k_start, rows, page_table,
                 mask: Masking, softcap: float, sinks: Any, out: Any):  # fmt: skip
        block_n, warps, stages = config
        b, lq, hq, d = q.shape
        hk, dv = k_cache.shape[2], v_cache.shape[-1]
        g = hq // hk
        dev = q.device
        page = k_cache.shape[1]
        paged = self.paged = page_table is not None
        capacity = page_table.shape[1] * page if paged else page
        splits = _splits(b, hk, capacity, dev)
        self.block_n, self.splits = block_n, splits
        self.mid_shapes = ((b, splits, hk, g * lq, dv), (b, splits, hk, g * lq))
        self.out_shape, self.lse_shape = (b, lq, hq, dv), (b, hq, lq)
        mid_o, mid_l = (torch.empty(shape, device="meta") for shape in self.mid_shapes)
        left, right = mask.limits
        strides = (*q.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3],
                   page_table.stride(0) if paged else 0, *mid_o.stride()[:4], *mid_l.stride()[:3])  # fmt: skip
        names = ("sq_b", "sq_l", "sq_h", "sk_blk", "sk_slot", "sk_h", "sv_blk", "sv_slot", "sv_h", "s_table", "so_b",
                 "so_s", "so_h", "so_r", "sl_b", "sl_s", "sl_h")  # fmt: skip
        tensors = ("Q", "K", "V", "TABLE", "ROWS", "QLEN", "KLEN", "KSTART", "MID_O", "MID_L", "scale_log2", "softcap")
        args = dict(zip(names, strides), page=page, num_blocks=k_cache.shape[0], capacity=capacity, left=left,
                    right=right, split_len=self.split_len(capacity), G=g, LQ=lq,
                    BLOCK_R=max(16, next_pow2(g * lq)), D=d, DV=dv, BLOCK_N=block_n, SOFTCAP=bool(softcap),
                    LEFT=left >= 0, RIGHT=right >= 0, HAS_START=k_start is not None, PAGED=paged,
                    OWN_ROW=rows is None, UNIFORM_Q=q_len is None, DOT_F32=triton_interpreted())  # fmt: skip
        per_call = tensors if paged else (*tensors, *_GROWING)
        self.launch = Launch(_kernel(), (b, hk, splits), {**args, **dict.fromkeys(tensors)},
                             {"num_warps": warps, "num_stages": stages}, per_call)  # fmt: skip
        # a query head h = hk * G + g is row g * Lq + i of kv head hk
        target = out if out is not None else torch.empty(self.out_shape, dtype=q.dtype, device="meta")
        if target.dtype == torch.bfloat16 and triton_interpreted():  # the interpreter truncates to bf16, torch rounds
            target = torch.empty(self.out_shape, dtype=torch.float32, device="meta")
        so, sl = mid_o.stride(), mid_l.stride()
        self.widen = target.dtype != q.dtype
        self.merge = merge_launch(mid_o, mid_l, (so[0], so[3], lq * so[3], so[1]), (sl[0], sl[3], lq * sl[3], sl[1]),
                                  target, torch.empty(self.lse_shape, device="meta"), sinks is not None)  # fmt: skip

    def split_len(self, capacity: int) -> int:
        """Keys a split takes: a whole number of key blocks (so a multiple of 16, as Triton specialises it)."""
        return ceil_div(ceil_div(capacity, self.splits), self.block_n) * self.block_n

    def __call__(self, q, k_cache, v_cache, q_len, k_len, k_start, rows, page_table, scale: float, softcap: float,
                 sinks: Any, out: Any) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        dev = q.device
        mid_o, mid_l = (torch.empty(shape, dtype=torch.float32, device=dev) for shape in self.mid_shapes)
        growing = ()
        if not self.paged:  # _GROWING's order
            length = k_cache.shape[1]
            growing = (length, self.split_len(length), k_cache.stride(0), k_cache.stride(2), v_cache.stride(0),
                       v_cache.stride(2))  # fmt: skip
        self.launch(q, k_cache, v_cache, page_table if page_table is not None else k_len,
                    rows if rows is not None else k_len, q_len if q_len is not None else k_len, k_len,
                    k_start if k_start is not None else k_len, mid_o, mid_l, float(scale) * LOG2E,
                    float(softcap or 1.0), *growing)  # fmt: skip
        o = out if out is not None else torch.empty(self.out_shape, dtype=q.dtype, device=dev)
        lse = torch.empty(self.lse_shape, dtype=torch.float32, device=dev)
        target = torch.empty(self.out_shape, dtype=torch.float32, device=dev) if self.widen else o
        self.merge(mid_o, mid_l, sinks if sinks is not None else lse, target, lse)
        if target is not o:
            o.copy_(target)
        return o, lse


def _splits(b: int, hk: int, capacity: int, dev: torch.device) -> int:
    """Splits of a sequence's keys: enough programs for ``_WAVES`` waves, none shorter than ``_MIN_SPLIT`` keys."""
    return max(1, min(ceil_div(_WAVES * processors(dev), b * hk), ceil_div(capacity, _MIN_SPLIT)))


# a contiguous cache's integers that follow its length: a call's own (``_Plan``), in this order
_GROWING = ("capacity", "split_len", "sk_blk", "sk_h", "sv_blk", "sv_h")


def _key(q, k_cache, v_cache, q_len, k_len, k_start, rows, page_table, mask, softcap, sinks, out) -> tuple[Any, ...]:
    """Every shape, stride, dtype and flag a plan's integers and kernels come from; for a contiguous cache, not its
    length or the strides that follow it (a call's own, ``_GROWING``), only their classes."""
    if page_table is None:
        kc, vc = k_cache.stride(), v_cache.stride()
        splits = _splits(q.shape[0], k_cache.shape[2], k_cache.shape[1], q.device)
        cache = (k_cache.shape[0], k_cache.shape[2:], kc[1], kc[3], v_cache.shape[-1], vc[1], vc[3], splits,
                 classes(k_cache.shape[1], kc[0], kc[2], vc[0], vc[2]))  # fmt: skip
    else:
        cache = (k_cache.shape, k_cache.stride(), v_cache.shape, v_cache.stride())
    return (q.device, q.dtype, q.shape, q.stride(), k_cache.dtype, cache, k_len.dtype, mask.limits, bool(softcap),
            None if page_table is None else (page_table.dtype, page_table.shape, page_table.stride()),
            None if q_len is None else q_len.dtype, None if k_start is None else k_start.dtype,
            None if rows is None else rows.dtype, None if sinks is None else sinks.dtype,
            None if out is None else (out.dtype, out.shape, out.stride()))  # fmt: skip


_PLANS: Plans[_Plan] = Plans()


def paged_decode(q, k_cache, v_cache, q_len, k_len, k_start, rows, page_table, scale: float, mask: Masking,
                 softcap: float, sinks: Any, out: Any = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """q (B, Lq, Hq, D) over the cache -> out (B, Lq, Hq, Dv) in q's dtype (``out`` where given) and lse
    (B, Hq, Lq) float32. ``q_len`` None: every sequence has Lq queries; ``rows`` None: sequence b reads cache
    row b; ``page_table`` None: a contiguous cache (a row is one page). None builds no tensor: no launch.
    The launches are planned once per call geometry (``_Plan``)."""
    q = q if q.stride(-1) == 1 else q.contiguous()
    dev = q.device
    configs = _configs(dev)
    key = (configs, *_key(q, k_cache, v_cache, q_len, k_len, k_start, rows, page_table, mask, softcap, sinks, out))
    call = (q, k_cache, v_cache, q_len, k_len, k_start, rows, page_table, scale, softcap, sinks, out)

    def first(config: tuple[int, int, int]) -> tuple[_Plan, tuple[torch.Tensor, torch.Tensor]]:
        made = _Plan(config, q, k_cache, v_cache, q_len, k_start, rows, page_table, mask, softcap, sinks, out)
        return made, made(*call)

    d, dv, rows_of_group = q.shape[-1], v_cache.shape[-1], q.shape[1] * (q.shape[2] // k_cache.shape[2])
    return _PLANS.call(key, call, ("the paged decode kernel", dev, d, dv, q.dtype, rows_of_group), configs, first)
