"""The Triton kernel that merges split-K partial results (imported on first use)."""

import triton
import triton.language as tl

from accelbridge.torch_attention.triton_common import shift_of


@triton.jit
def merge_kernel(MID_O, MID_L, SINK, OUT, LSE, splits, lq,
                 so_b, so_i, so_h, so_s, sl_b, sl_i, sl_h, sl_s, to_b, to_i, to_h, tl_b, tl_i, tl_h,
                 DV: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr, HAS_SINK: tl.constexpr,
                 SINK_IN_LSE: tl.constexpr, LONELY_INF: tl.constexpr):  # fmt: skip
    """Program (b * lq + i, head): the row's splits weighted by exp(split lse - total) into OUT (its dtype).

    The total is the splits' log-sum-exp, with the sink's logit added where one is given; a row whose
    total is not finite (no key, a +inf sink) gets 0. LSE gets the total (SINK_IN_LSE) or the splits'
    log-sum-exp alone, +inf for a row with no key where LONELY_INF (FlashMLA's convention).
    """
    n = tl.program_id(0)
    h = tl.program_id(1)
    b = n // lq
    i = n % lq
    s = tl.arange(0, BLOCK_S)
    s_ok = s < splits
    part = tl.load(MID_L + b * sl_b + i * sl_i + h * sl_h + s * sl_s, mask=s_ok, other=float("-inf"))
    top = tl.max(part, 0)
    shift = shift_of(top)
    seen = shift + tl.log(tl.sum(tl.exp(part - shift), 0))  # -inf where no split saw a key
    total = seen
    if HAS_SINK:
        sink = tl.load(SINK + h).to(tl.float32)
        big = tl.maximum(seen, sink)
        finite_big = (big > float("-inf")) & (big < float("inf"))
        both = big + tl.log(tl.exp(seen - big) + tl.exp(sink - big))
        total = tl.where(finite_big, both, big)
    finite = (total > float("-inf")) & (total < float("inf"))
    weight = tl.where(s_ok, tl.exp(part - tl.where(finite, total, 0.0)), 0.0)
    weight = tl.where(finite, weight, 0.0)
    for d0 in tl.static_range(0, DV, BLOCK_DV):
        d = d0 + tl.arange(0, BLOCK_DV)
        d_ok = d < DV
        o = tl.load(MID_O + b * so_b + i * so_i + h * so_h + s[:, None] * so_s + d[None, :],
                    mask=s_ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
        tl.store(OUT + b * to_b + i * to_i + h * to_h + d, tl.sum(o * weight[:, None], 0).to(OUT.dtype.element_ty),
                 mask=d_ok)  # fmt: skip
    reported = total if SINK_IN_LSE else seen
    if LONELY_INF:
        reported = tl.where(seen == float("-inf"), float("inf"), reported)
    tl.store(LSE + b * tl_b + i * tl_i + h * tl_h, reported)
