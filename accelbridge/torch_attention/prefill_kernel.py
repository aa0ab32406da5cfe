"""The Triton prefill kernel (imported by ``prefill`` on its first call: importing it imports triton)."""

import triton
import triton.language as tl

from accelbridge.torch_attention import triton_common as common


@triton.jit
def step(acc, m, total, q, K, V, TABLE, b, start, k0, k_len, offs_m, shift, hk, left, right,
         sk_0, sk_1, sk_h, sv_0, sv_1, sv_h, s_table, page, num_blocks, scale_log2, softcap,
         D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
         BLOCK_N: tl.constexpr, PAGED: tl.constexpr, MASKED: tl.constexpr, LEFT: tl.constexpr,
         RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    n = start + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    n_ok = n < k_len
    if PAGED:  # only entries of keys inside the sequence are read, each clamped into the cache
        blk = common.clamp_block(tl.load(TABLE + b * s_table + n // page, mask=n_ok, other=0).to(tl.int64), num_blocks)
        slot = (n % page).to(tl.int64)
        k_row = blk * sk_0 + slot * sk_1
        v_row = blk * sv_0 + slot * sv_1
    else:
        k_row = (k0 + n).to(tl.int64) * sk_0
        v_row = (k0 + n).to(tl.int64) * sv_0
    k_at = K + k_row[:, None] + hk * sk_h + d[None, :]
    if MASKED:
        k = tl.load(k_at, mask=n_ok[:, None] & (d < D)[None, :], other=0.0)
    elif D == BLOCK_D:  # a block inside the sequence: no mask at all
        k = tl.load(k_at)
    else:
        k = tl.load(k_at, mask=(d < D)[None, :], other=0.0)
    s = common.scores_log2(common.mma(q, k, None, DOT_F32, True), scale_log2, softcap, SOFTCAP)
    if MASKED:
        ok = n_ok[None, :]
        if LEFT:
            ok = ok & (n[None, :] >= offs_m[:, None] + shift - left)
        if RIGHT:
            ok = ok & (n[None, :] <= offs_m[:, None] + shift + right)
        s = tl.where(ok, s, float("-inf"))
    p, alpha, m_new = common.online_softmax(s, m, MASKED)  # masked: a row may have seen no key yet
    total = total * alpha + tl.sum(p, 1)
    v_at = V + v_row[:, None] + hk * sv_h + dv[None, :]
    if MASKED:
        val = tl.load(v_at, mask=n_ok[:, None] & (dv < DV)[None, :], other=0.0)
    elif DV == BLOCK_DV:
        val = tl.load(v_at)
    else:
        val = tl.load(v_at, mask=(dv < DV)[None, :], other=0.0)
    acc = common.rescaled_mma(acc, alpha, p, val, DOT_F32)
    return acc, m_new, total


@triton.jit
def prefill_kernel(Q, K, V, OUT, LSE, CU_Q, CU_K, USED_Q, USED_K, TABLE, SINKS,
                   sq_t, sq_h, sk_0, sk_1, sk_h, sv_0, sv_1, sv_h, so_t, so_h, sl_h, s_table,
                   scale_log2, softcap, left, right, page, num_blocks, total_q, batch, aligned,
                   G: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   PAGED: tl.constexpr, USED_Q_GIVEN: tl.constexpr, USED_K_GIVEN: tl.constexpr,
                   LEFT: tl.constexpr, RIGHT: tl.constexpr, SOFTCAP: tl.constexpr,
                   HAS_SINKS: tl.constexpr, WRITE_LSE: tl.constexpr, SKIP_ALIGNED: tl.constexpr,
                   DOT_F32: tl.constexpr):  # fmt: skip
    mb = tl.num_programs(0) - 1 - tl.program_id(0)  # the longest causal rows first: a shorter tail
    h = tl.program_id(1)
    b = tl.program_id(2)
    dv = tl.arange(0, BLOCK_DV)
    q0 = tl.load(CU_Q + b)
    if SKIP_ALIGNED:  # a sequence on rows [b * aligned, (b + 1) * aligned) is already written (dense views)
        end = tl.load(CU_Q + b + 1, mask=b < batch, other=-1)
        if (q0 == b * aligned) & (end == (b + 1) * aligned):
            return
    if b == batch:  # rows past the last sequence: zeros, lse -inf
        for r0 in range(mb * BLOCK_M, total_q - q0, tl.num_programs(0) * BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            keep = rows < total_q - q0
            at = (q0 + rows).to(tl.int64)
            zero = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
            tl.store(OUT + at[:, None] * so_t + h * so_h + dv[None, :], zero.to(OUT.dtype.element_ty),
                     mask=keep[:, None] & (dv < DV)[None, :])  # fmt: skip
            if WRITE_LSE:
                tl.store(LSE + h * sl_h + at, tl.full([BLOCK_M], float("-inf"), tl.float32), mask=keep)
        return
    q_rows = tl.load(CU_Q + b + 1) - q0
    m_start = mb * BLOCK_M
    if m_start >= q_rows:
        return
    q_len = q_rows
    if USED_Q_GIVEN:
        q_len = tl.minimum(tl.load(USED_Q + b), q_rows)
    k0 = 0
    if PAGED:
        k_len = tl.load(USED_K + b)
    else:
        k0 = tl.load(CU_K + b)
        if USED_K_GIVEN:
            k_len = tl.load(USED_K + b)
        else:
            k_len = tl.load(CU_K + b + 1) - k0
    hk = h // G
    offs_m = m_start + tl.arange(0, BLOCK_M)
    row_ok = offs_m < q_len
    d = tl.arange(0, BLOCK_D)
    at = (q0 + offs_m).to(tl.int64)
    q = tl.load(Q + at[:, None] * sq_t + h * sq_h + d[None, :], mask=row_ok[:, None] & (d < D)[None, :],
                other=0.0)  # fmt: skip
    shift = k_len - q_len  # query i sits at key position i + shift (FlashAttention's bottom-right alignment)
    m_last = tl.minimum(m_start + BLOCK_M, q_len) - 1
    lo = 0
    hi = k_len
    full_lo = 0
    full_hi = k_len
    if LEFT:
        lo = tl.maximum(0, m_start + shift - left)
        full_lo = tl.maximum(0, m_last + shift - left)
    if RIGHT:
        hi = tl.maximum(0, tl.minimum(k_len, m_last + shift + right + 1))
        full_hi = tl.maximum(0, tl.minimum(k_len, m_start + shift + right + 1))
    lo = lo // BLOCK_N * BLOCK_N
    f_lo = tl.minimum(tl.maximum(lo, (full_lo + BLOCK_N - 1) // BLOCK_N * BLOCK_N), hi)
    f_hi = tl.maximum(f_lo, full_hi // BLOCK_N * BLOCK_N)
    m, total, acc = common.running_state(BLOCK_M, BLOCK_DV)
    for start in range(lo, f_lo, BLOCK_N):
        acc, m, total = step(acc, m, total, q, K, V, TABLE, b, start, k0, k_len, offs_m, shift, hk, left, right,
                             sk_0, sk_1, sk_h, sv_0, sv_1, sv_h, s_table, page, num_blocks, scale_log2, softcap,
                             D, DV, BLOCK_D, BLOCK_DV, BLOCK_N, PAGED, True, LEFT, RIGHT, SOFTCAP,
                             DOT_F32)  # fmt: skip
    for start in range(f_lo, f_hi, BLOCK_N):
        acc, m, total = step(acc, m, total, q, K, V, TABLE, b, start, k0, k_len, offs_m, shift, hk, left, right,
                             sk_0, sk_1, sk_h, sv_0, sv_1, sv_h, s_table, page, num_blocks, scale_log2, softcap,
                             D, DV, BLOCK_D, BLOCK_DV, BLOCK_N, PAGED, False, LEFT, RIGHT, SOFTCAP,
                             DOT_F32)  # fmt: skip
    for start in range(f_hi, hi, BLOCK_N):
        acc, m, total = step(acc, m, total, q, K, V, TABLE, b, start, k0, k_len, offs_m, shift, hk, left, right,
                             sk_0, sk_1, sk_h, sv_0, sv_1, sv_h, s_table, page, num_blocks, scale_log2, softcap,
                             D, DV, BLOCK_D, BLOCK_DV, BLOCK_N, PAGED, True, LEFT, RIGHT, SOFTCAP,
                             DOT_F32)  # fmt: skip
    if HAS_SINKS:  # the sink joins the denominator (and the lse); +inf takes all the weight, -inf none
        sink = tl.load(SINKS + h).to(tl.float32) * common.LOG2E
        m_new = tl.maximum(m, sink)
        finite = (m_new > float("-inf")) & (m_new < float("inf"))
        base = tl.where(finite, m_new, 0.0)
        alpha = tl.where(finite, tl.exp2(m - base), 0.0)
        total = total * alpha + tl.where(finite, tl.exp2(sink - base), 0.0)
        acc = acc * alpha[:, None]
        m = m_new
    o = acc / common.nonzero(total)[:, None]
    o = tl.where(row_ok[:, None], o, 0.0)
    keep = offs_m < q_rows
    tl.store(OUT + at[:, None] * so_t + h * so_h + dv[None, :], o.to(OUT.dtype.element_ty),
             mask=keep[:, None] & (dv < DV)[None, :])  # fmt: skip
    if WRITE_LSE:
        lse = common.lse_of(m, total)
        lse = tl.where(m == float("inf"), float("inf"), lse)  # a +inf sink took all the weight
        tl.store(LSE + h * sl_h + at, tl.where(row_ok, lse, float("-inf")), mask=keep)
