"""The Triton MLA decode kernel (imported by ``mla_decode`` on its first call: importing it imports triton)."""

import triton
import triton.language as tl

from accelbridge.torch_attention.triton_common import (
    clamp_block,
    lse_and_inverse,
    mma,
    online_softmax,
    rescaled_mma,
    running_state,
)

# DeepSeek's MLA head: a latent of 512 (keys and values) and a rope of 64 (keys only), 576 a token. The TMA and
# Gluon kernels read the latent as two halves: a TMA box is at most 256 wide.
HALF = tl.constexpr(256)
ROPE_DIM = tl.constexpr(64)


@triton.jit
def _softmax_step(x, n_ok, m, total, scale_log2):
    """One block of raw scores (keys outside ``n_ok`` are none) into the running (max, sum), base 2:
    (p, rescale of the past, max, sum)."""
    p, alpha, m_new = online_softmax(tl.where(n_ok[None, :], x * scale_log2, float("-inf")), m, True)
    return p, alpha, m_new, total * alpha + tl.sum(p, 1)


@triton.jit
def dense_key_range(LENS, b, s, sq, capacity, sp, split_len, CAUSAL: tl.constexpr):
    """Split ``sp``'s keys [lo, hi) of dense row (b, s): its sequence's length, causal up to the row's own
    position (the last of ``sq`` queries sees them all), never past the block-table row (``capacity``)."""
    limit = tl.load(LENS + b)
    if CAUSAL:
        limit = limit - sq + s + 1
    lo = sp * split_len
    return lo, tl.minimum(lo + split_len, tl.minimum(limit, capacity))


@triton.jit
def mla_decode_kernel(Q, CACHE, TABLE, LENS, IDX, TOPK_LEN, SINK, OUT, LSE, MAXES,
                      sq_r, sq_h, s_blk, s_slot, s_table, s_idx, so_r, so_s, so_h, sl_b, sl_q, sl_s, sl_h,
                      scale_log2, page, num_blocks, capacity, sq, heads, topk, split_len,
                      DV: tl.constexpr, DR: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                      DV_BLOCK: tl.constexpr,
                      SPARSE: tl.constexpr, FP8: tl.constexpr, CAUSAL: tl.constexpr, TOPK_GIVEN: tl.constexpr,
                      PAGE_TILE: tl.constexpr, WRITE_MAX: tl.constexpr, FINAL: tl.constexpr, HAS_SINK: tl.constexpr,
                      DOT_F32: tl.constexpr):  # fmt: skip
    """Program (query row b * sq + s, block of BLOCK_H heads and DV_BLOCK output dims, split) over one
    slice of its keys (each output block computes the whole scores: fewer registers, more programs).

    Dense: the sequence's positions, each looked up in its block-table row (only positions inside
    the sequence are read); with PAGE_TILE (pages a multiple of BLOCK_N) a tile is one page's slots.
    Sparse: the row's index list; an index outside the cache (-1, or past its last token) or past
    ``topk_length`` is no key and is never used to address the cache.
    FP8 caches (V3.2: 512 e4m3 in 4 tiles of 128, 4 float32 scales, 64 bf16 rope per token) are
    dequantised to bf16 in registers. Writes out (float32, normalised by its split's sum) and lse (base e), and
    with WRITE_MAX each head's largest scaled score in base 2 (sparse prefill's max_logits; LSE's layout).
    With FINAL (one split) the result itself, as the merge would write it (``final_result``): no float32 partials.
    LSE and MAXES are addressed by (b, s, split, head).
    """
    row = tl.program_id(0)
    hb = tl.program_id(1) // (DV // DV_BLOCK)
    vb = tl.program_id(1) % (DV // DV_BLOCK)
    ov = vb * DV_BLOCK + tl.arange(0, DV_BLOCK)
    sp = tl.program_id(2)
    b = row // sq
    s = row % sq
    h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = h < heads
    dv = tl.arange(0, DV)
    dr = tl.arange(0, DR)
    q_at = Q + row.to(tl.int64) * sq_r + h[:, None] * sq_h
    q_nope = tl.load(q_at + dv[None, :], mask=h_ok[:, None], other=0.0)
    q_rope = tl.load(q_at + DV + dr[None, :], mask=h_ok[:, None], other=0.0)
    tokens = num_blocks * page
    if SPARSE:
        limit = topk
        if TOPK_GIVEN:
            limit = tl.minimum(tl.load(TOPK_LEN + b), topk)
        topk_row = IDX + row.to(tl.int64) * s_idx
        lo = sp * split_len
        hi = tl.minimum(lo + split_len, limit)
    else:
        lo, hi = dense_key_range(LENS, b, s, sq, capacity, sp, split_len, CAUSAL)
    m, total, acc = running_state(BLOCK_H, DV_BLOCK)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        if SPARSE:
            tok = tl.load(topk_row + n, mask=n_ok, other=-1)
            n_ok = n_ok & (tok >= 0) & (tok < tokens)
            tok = tl.where(n_ok, tok, 0).to(tl.int64)
            blk = tok // page
            slot = tok % page
        elif PAGE_TILE:  # the tile lies in one page (start < hi: an entry of the sequence): one entry read
            blk = clamp_block(tl.load(TABLE + b * s_table + start // page).to(tl.int64), num_blocks)
            slot = (start % page + tl.arange(0, BLOCK_N)).to(tl.int64)
        else:
            blk = clamp_block(tl.load(TABLE + b * s_table + n // page, mask=n_ok, other=0).to(tl.int64), num_blocks)
            slot = (n % page).to(tl.int64)
        at = CACHE + blk * s_blk + slot * s_slot  # (BLOCK_N,) token starts (bytes for FP8, else elements)
        if FP8:
            raw = tl.load(at[:, None] + dv[None, :], mask=n_ok[:, None], other=0)
            tiles = tl.arange(0, DV // 128)
            scales = tl.load((at[:, None] + DV).to(tl.pointer_type(tl.float32)) + tiles[None, :],
                             mask=n_ok[:, None], other=0.0)  # fmt: skip
            scales = tl.reshape(tl.broadcast_to(scales[:, :, None], [BLOCK_N, DV // 128, 128]), [BLOCK_N, DV])
            k_nope = (raw.to(tl.float8e4nv, bitcast=True).to(tl.float32) * scales).to(tl.bfloat16)
            k_rope = tl.load((at[:, None] + DV + 16).to(tl.pointer_type(tl.bfloat16)) + dr[None, :],
                             mask=n_ok[:, None], other=0.0)  # fmt: skip
        else:
            k_nope = tl.load(at[:, None] + dv[None, :], mask=n_ok[:, None], other=0.0)
            k_rope = tl.load(at[:, None] + DV + dr[None, :], mask=n_ok[:, None], other=0.0)
        x = mma(q_rope, k_rope, mma(q_nope, k_nope, None, DOT_F32, True), DOT_F32, True)
        p, alpha, m_new, total = _softmax_step(x, n_ok, m, total, scale_log2)
        if DV_BLOCK == DV:
            val = k_nope
        elif FP8:
            raw_v = tl.load(at[:, None] + ov[None, :], mask=n_ok[:, None], other=0)
            v_tiles = vb * (DV_BLOCK // 128) + tl.arange(0, DV_BLOCK // 128)
            v_scales = tl.load((at[:, None] + DV).to(tl.pointer_type(tl.float32)) + v_tiles[None, :],
                               mask=n_ok[:, None], other=0.0)  # fmt: skip
            v_scales = tl.reshape(tl.broadcast_to(v_scales[:, :, None], [BLOCK_N, DV_BLOCK // 128, 128]),
                                  [BLOCK_N, DV_BLOCK])  # fmt: skip
            val = (raw_v.to(tl.float8e4nv, bitcast=True).to(tl.float32) * v_scales).to(tl.bfloat16)
        else:
            val = tl.load(at[:, None] + ov[None, :], mask=n_ok[:, None], other=0.0)
        acc = rescaled_mma(acc, alpha, p, val, DOT_F32)
        m = m_new
    lse, inv = lse_and_inverse(m, total)
    if FINAL:
        inv, lse = final_result(inv, lse, total, SINK, h, h_ok, HAS_SINK)
    tl.store(OUT + row.to(tl.int64) * so_r + sp * so_s + h[:, None] * so_h + ov[None, :], acc * inv[:, None],
             mask=h_ok[:, None])  # fmt: skip
    l_at = b.to(tl.int64) * sl_b + s * sl_q + sp * sl_s + h * sl_h
    tl.store(LSE + l_at, lse, mask=h_ok & (h * 0 + vb == 0))  # one output block writes the lse
    if WRITE_MAX:
        tl.store(MAXES + l_at, m, mask=h_ok & (h * 0 + vb == 0))


@triton.jit
def final_result(inv, lse, total, SINK, h, h_ok, HAS_SINK: tl.constexpr):
    """What one split's epilogue writes when it is the row's only split, as ``splits.merge_launch`` would (FlashMLA's
    conventions): the output scale ``inv`` times 1 / (1 + exp(sink - lse)) with a sink (the sink joins the sum;
    +inf takes all the weight), lse without the sink, +inf where the row saw no key. -> (inv, lse)."""
    if HAS_SINK:
        sink = tl.load(SINK + h, mask=h_ok, other=float("-inf")).to(tl.float32)
        gap = tl.where(total > 0, sink - lse, float("-inf"))  # a row with no key keeps out 0 (its acc is 0)
        inv = inv / (1.0 + tl.exp(gap))
    return inv, tl.where(total > 0, lse, float("inf"))


@triton.jit
def _half_tile(q1, q2, qr, k1, k2, kr, n_ok, m, total, acc1, acc2, scale_log2, DOT_F32: tl.constexpr):
    """One key tile of a head block, its latent as two HALFs (a TMA box is at most 256 wide)."""
    x = mma(q1, k1, None, DOT_F32, True)
    x = mma(q2, k2, x, DOT_F32, True)
    x = mma(qr, kr, x, DOT_F32, True)
    p, alpha, m_new, total = _softmax_step(x, n_ok, m, total, scale_log2)
    acc1 = rescaled_mma(acc1, alpha, p, k1, DOT_F32)
    acc2 = rescaled_mma(acc2, alpha, p, k2, DOT_F32)
    return m_new, total, acc1, acc2


@triton.jit
def mla_decode_tma_kernel(Q, CACHE, NOPE, ROPE, TABLE, LENS, OUT, LSE, sq_r, sq_h, s_table, so_r, so_s, so_h,
                          sl_r, sl_s, scale_log2, page, num_blocks, s_row, capacity, sq, heads, split_len,
                          BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                          DOT_F32: tl.constexpr):  # fmt: skip
    """Dense decode over one kv head of a bf16/fp16 cache (tokens of 576, ``s_row`` elements apart) with pages a
    multiple of BLOCK_N: the program (query row, head block, split) of ``mla_decode_kernel``, its whole key tiles
    read by TMA (descriptors NOPE (BLOCK_N, 256) and ROPE (BLOCK_N, 64) over the head's (tokens, 576) rows), each
    one page's slots through one block-table entry; the last, partial tile by masked loads, so no slot
    past the sequence is read. Writes out (float32, normalised by its split's sum) and lse (base e).
    """
    row = tl.program_id(0)
    hb = tl.program_id(1)
    sp = tl.program_id(2)
    b = row // sq
    s = row % sq
    h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = h < heads
    half = tl.arange(0, HALF)
    dr = tl.arange(0, ROPE_DIM)
    q_at = Q + row.to(tl.int64) * sq_r + h[:, None] * sq_h
    q1 = tl.load(q_at + half[None, :], mask=h_ok[:, None], other=0.0)
    q2 = tl.load(q_at + HALF + half[None, :], mask=h_ok[:, None], other=0.0)
    qr = tl.load(q_at + 2 * HALF + dr[None, :], mask=h_ok[:, None], other=0.0)
    lo, hi = dense_key_range(LENS, b, s, sq, capacity, sp, split_len, CAUSAL)
    whole = lo + tl.maximum(hi - lo, 0) // BLOCK_N * BLOCK_N  # the whole tiles end here
    m = tl.full([BLOCK_H], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_H], tl.float32)
    acc1 = tl.zeros([BLOCK_H, HALF], tl.float32)
    acc2 = tl.zeros([BLOCK_H, HALF], tl.float32)
    every = tl.full([BLOCK_N], 1, tl.int1)
    for start in range(lo, whole, BLOCK_N):
        first = clamp_block(tl.load(TABLE + b * s_table + start // page), num_blocks) * page + start % page
        k1 = NOPE.load([first, 0])
        k2 = NOPE.load([first, HALF])
        kr = ROPE.load([first, 2 * HALF])
        m, total, acc1, acc2 = _half_tile(q1, q2, qr, k1, k2, kr, every, m, total, acc1, acc2, scale_log2, DOT_F32)
    if whole < hi:
        n_ok = whole + tl.arange(0, BLOCK_N) < hi
        blk = clamp_block(tl.load(TABLE + b * s_table + whole // page), num_blocks).to(tl.int64)
        at = CACHE + (blk * page + whole % page + tl.arange(0, BLOCK_N)) * s_row
        k1 = tl.load(at[:, None] + half[None, :], mask=n_ok[:, None], other=0.0)
        k2 = tl.load(at[:, None] + HALF + half[None, :], mask=n_ok[:, None], other=0.0)
        kr = tl.load(at[:, None] + 2 * HALF + dr[None, :], mask=n_ok[:, None], other=0.0)
        m, total, acc1, acc2 = _half_tile(q1, q2, qr, k1, k2, kr, n_ok, m, total, acc1, acc2, scale_log2, DOT_F32)
    lse, inv = lse_and_inverse(m, total)
    o_at = OUT + row.to(tl.int64) * so_r + sp * so_s + h[:, None] * so_h
    tl.store(o_at + half[None, :], acc1 * inv[:, None], mask=h_ok[:, None])
    tl.store(o_at + HALF + half[None, :], acc2 * inv[:, None], mask=h_ok[:, None])
    tl.store(LSE + row.to(tl.int64) * sl_r + sp * sl_s + h, lse, mask=h_ok)
