"""The Triton paged decode kernel (imported by ``decode`` on its first call: importing it imports triton)."""

import triton
import triton.language as tl

from accelbridge.torch_attention.triton_common import (
    clamp_block,
    lse_of,
    mma,
    nonzero,
    online_softmax,
    running_state,
    scores_log2,
)


@triton.jit
def decode_split_kernel(Q, K, V, TABLE, ROWS, QLEN, KLEN, KSTART, MID_O, MID_L,
                        sq_b, sq_l, sq_h, sk_blk, sk_slot, sk_h, sv_blk, sv_slot, sv_h, s_table,
                        so_b, so_s, so_h, so_r, sl_b, sl_s, sl_h,
                        scale_log2, softcap, page, num_blocks, capacity, left, right, split_len,
                        G: tl.constexpr, LQ: tl.constexpr, BLOCK_R: tl.constexpr, D: tl.constexpr,
                        DV: tl.constexpr, BLOCK_N: tl.constexpr, SOFTCAP: tl.constexpr, LEFT: tl.constexpr,
                        RIGHT: tl.constexpr, HAS_START: tl.constexpr, PAGED: tl.constexpr, OWN_ROW: tl.constexpr,
                        UNIFORM_Q: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """Program (b, kv head, split): the GQA group's query rows (row g * LQ + i: head hk * G + g, query i) over
    keys [split * split_len, ...) of the sequence, each key's block looked up in the table. Writes the split's
    out (float32, normalised by its sum) and lse (base e; -inf where it saw no key) for ``splits.merge_launch``."""
    b = tl.program_id(0)
    hk = tl.program_id(1)
    sp = tl.program_id(2)
    r = tl.arange(0, BLOCK_R)
    g = r // LQ
    i = r % LQ
    q_len = LQ  # UNIFORM_Q: every sequence has LQ queries, else QLEN says
    if not UNIFORM_Q:
        q_len = tl.load(QLEN + b)
    k_len = tl.load(KLEN + b)
    k_start = 0
    if HAS_START:  # leftpad: the sequence's keys start there
        k_start = tl.load(KSTART + b)
    cache_row = b.to(tl.int64)  # OWN_ROW: sequence b's cache (or page-table) row is b, else ROWS says
    if not OWN_ROW:
        cache_row = tl.load(ROWS + b).to(tl.int64)
    row_ok = (r < G * LQ) & (i < q_len)
    d = tl.arange(0, D)
    dv = tl.arange(0, DV)
    q = tl.load(Q + b * sq_b + i[:, None] * sq_l + (hk * G + g)[:, None] * sq_h + d[None, :],
                mask=row_ok[:, None], other=0.0)  # fmt: skip
    seen = k_len - k_start
    at = i + seen - q_len  # the query's position among the keys it may see
    lo = sp * split_len
    hi = tl.minimum(lo + split_len, tl.minimum(seen, capacity - k_start))  # never past the table
    m, total, acc = running_state(BLOCK_R, DV)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        pos = n + k_start
        if PAGED:
            blk = clamp_block(tl.load(TABLE + cache_row * s_table + pos // page, mask=n_ok, other=0).to(tl.int64),
                              num_blocks)  # fmt: skip
            slot = (pos % page).to(tl.int64)
        else:  # a contiguous cache: the row is the block, the position the slot
            blk = tl.zeros([BLOCK_N], tl.int64) + tl.minimum(cache_row, num_blocks - 1)
            slot = pos.to(tl.int64)
        k = tl.load(K + blk[:, None] * sk_blk + slot[:, None] * sk_slot + hk * sk_h + d[None, :],
                    mask=n_ok[:, None], other=0.0)  # fmt: skip
        s = scores_log2(mma(q, k, None, DOT_F32, True), scale_log2, softcap, SOFTCAP)
        ok = n_ok[None, :] & row_ok[:, None]
        if LEFT:
            ok = ok & (n[None, :] >= at[:, None] - left)
        if RIGHT:
            ok = ok & (n[None, :] <= at[:, None] + right)
        p, alpha, m = online_softmax(tl.where(ok, s, float("-inf")), m, True)
        total = total * alpha + tl.sum(p, 1)
        val = tl.load(V + blk[:, None] * sv_blk + slot[:, None] * sv_slot + hk * sv_h + dv[None, :],
                      mask=n_ok[:, None], other=0.0)  # fmt: skip
        acc = acc * alpha[:, None] + mma(p, val, None, DOT_F32)
    o = acc / nonzero(total)[:, None]
    keep = r < G * LQ
    tl.store(MID_O + b * so_b + sp * so_s + hk * so_h + r[:, None] * so_r + dv[None, :], o, mask=keep[:, None])
    tl.store(MID_L + b * sl_b + sp * sl_s + hk * sl_h + r, lse_of(m, total), mask=keep)
