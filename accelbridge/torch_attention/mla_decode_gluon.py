"""The dense MLA decode kernel for sm90 written in Gluon (imported by ``mla_decode`` on its first sm90 call).

The program of ``mla_decode_tma_kernel`` (query row, block of 64 heads, split; whole key tiles by
TMA, the partial last tile by masked loads), scheduled as Triton's compiler does not schedule it
(seen in Triton 3.6's TTGIR of that kernel):

- the score MMAs split across the two warpgroups, 32 keys of the tile each. Triton puts all warps
  on the heads for a dot that feeds another dot, so with 64 heads both warpgroups computed the
  whole score tile: twice the score MMAs;
- the next tile's TMA issued as soon as its buffer is free (the previous tile's value MMAs
  retired), a tile ahead, its block-table entry read a tile before that. Triton's pipeliner issued
  it after the value MMAs at the end of the iteration, so each tile waited for its load;
- the row sums kept per key column and added up across the warpgroups once, at the end;
- with one split and no sink, the result written directly: no partials, no merge launch.

H200, B=64, 128 heads, ctx 4096 (bench): 224 us against Triton's 283 and FlashMLA's 115.
Gluon has no interpreter: under TRITON_INTERPRET and off sm90, ``mla_decode_tma_kernel`` runs.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_init,
    warpgroup_mma_wait,
)

from accelbridge.torch_attention.mla_decode_kernel import HALF, ROPE_DIM, dense_key_range
from accelbridge.torch_attention.triton_common import clamp_block, lse_and_inverse, online_softmax

# Triton 3.6 names the TMA load async_copy_global_to_shared; 3.7 on, async_load (the old name raises)
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier  # 3.6: thread_barrier


@gluon.jit
def _issue_scores(q1, q2, qr, k1, k2, kr, zero):
    """The tile's scores (BLOCK_H, BLOCK_N), three MMA groups in flight."""
    s = warpgroup_mma(q1, k1.permute((1, 0)), zero, use_acc=False, is_async=True)
    s = warpgroup_mma(q2, k2.permute((1, 0)), s, is_async=True)
    return warpgroup_mma(qr, kr.permute((1, 0)), s, is_async=True)


@gluon.jit
def _issue_values(s, n_ok, m, sums, acc1, acc2, k1, k2, scale_log2, O_LAYOUT: gl.constexpr,
                  P_LAYOUT: gl.constexpr):  # fmt: skip
    """Softmax step of one tile's scores (base 2; keys outside ``n_ok`` are none), then its value MMAs on
    the two output halves, in flight. ``sums`` are the running sums per (head, key column), added up across
    the warpgroups once at the end: one cross-warpgroup reduction a tile (the max) instead of two
    (H200, B=64 ctx 4096: 217.5 us against 229.9). -> (max, sums, acc1, acc2)."""
    p, alpha, m_new = online_softmax(gl.where(n_ok[None, :], s * scale_log2, float("-inf")), m, True)
    sums = sums * alpha[:, None] + p
    scale = gl.convert_layout(alpha, gl.SliceLayout(1, O_LAYOUT))[:, None]
    p_op = gl.convert_layout(p.to(k1.dtype), P_LAYOUT)
    acc1 = warpgroup_mma(p_op, k1, acc1 * scale, is_async=True)
    acc2 = warpgroup_mma(p_op, k2, acc2 * scale, is_async=True)
    return m_new, sums, acc1, acc2


@gluon.jit
def _table_entry(TABLE, at_table, start, page, pred):
    """The block-table entry of sequence position ``start`` where ``pred`` (else 0, nothing read)."""
    return gl.load(TABLE + at_table + start // page, mask=pred, other=0)


@gluon.jit
def _first_row(entry, start, page, num_blocks):
    """The cache row (token) of sequence position ``start``, through its table ``entry`` clamped into the cache."""
    return clamp_block(entry, num_blocks) * page + start % page


@gluon.jit
def _load_tile(NOPE, ROPE, entry, start, page, num_blocks, bar, k1, k2, kr):
    """TMA of the whole tile at sequence position ``start``: one page's slots, through its table ``entry``."""
    first = _first_row(entry, start, page, num_blocks)
    mbarrier.expect(bar, 2 * NOPE.block_type.nbytes + ROPE.block_type.nbytes)
    _tma_load(NOPE, [first, 0], bar, k1)
    _tma_load(NOPE, [first, HALF], bar, k2)
    _tma_load(ROPE, [first, 2 * HALF], bar, kr)


@gluon.jit
def _masked_rows(at, rows_ok, cols, dst):
    """Rows ``at`` (element pointers) into shared ``dst``; rows outside ``rows_ok`` are zero (never read)."""
    dst.store(gl.load(at[:, None] + cols[None, :], mask=rows_ok[:, None], other=0.0))


@gluon.jit
def mla_decode_sm90_kernel(Q, CACHE, NOPE, ROPE, TABLE, LENS, OUT, LSE, sq_r, sq_h, s_table, so_r, so_s, so_h,
                           sl_b, sl_q, sl_s, sl_h, scale_log2, page, num_blocks, s_row, capacity, sq, heads, split_len,
                           BLOCK_H: gl.constexpr, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr,
                           FINAL: gl.constexpr):  # fmt: skip
    """Dense decode over one kv head of a bf16/fp16 cache (tokens of 576, ``s_row`` elements apart) with pages a
    multiple of BLOCK_N, 8 warps: whole key tiles by TMA into two buffers, the last partial tile by masked loads
    (no slot past the sequence is read). Writes out (normalised by its split's sum) and lse (base e), addressed
    by (b, s, split, head): a split's float32 partials, or with FINAL (one split, no sink: no merge to run) the
    result itself, out in OUT's dtype and lse +inf where the row sees no key (FlashMLA's convention)."""
    S_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 2],
                                                       instr_shape=[16, BLOCK_N // 2, 16])  # fmt: skip
    O_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 2],
                                                       instr_shape=[16, HALF // 2, 16])  # fmt: skip
    P_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=O_LAYOUT, k_width=2)
    WIDE: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [8, 1], [1, 0])  # (rows, 256) loads
    NARROW: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [8, 1], [1, 0])  # (rows, 64) loads
    dtype: gl.constexpr = Q.dtype.element_ty

    row = gl.program_id(0)
    hb = gl.program_id(1)
    sp = gl.program_id(2)
    b = row // sq
    s = row % sq

    h_w = hb * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, WIDE))
    h_n = hb * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, NARROW))
    half = gl.arange(0, HALF, layout=gl.SliceLayout(0, WIDE))
    dr = gl.arange(0, ROPE_DIM, layout=gl.SliceLayout(0, NARROW))
    q_row = Q + row.to(gl.int64) * sq_r
    Q_HALF: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_H, HALF], dtype)
    Q_ROPE: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_H, ROPE_DIM], dtype)
    q1 = gl.allocate_shared_memory(dtype, [BLOCK_H, HALF], Q_HALF)
    q2 = gl.allocate_shared_memory(dtype, [BLOCK_H, HALF], Q_HALF)
    qr = gl.allocate_shared_memory(dtype, [BLOCK_H, ROPE_DIM], Q_ROPE)
    _masked_rows(q_row + h_w * sq_h, h_w < heads, half, q1)
    _masked_rows(q_row + h_w * sq_h + HALF, h_w < heads, half, q2)
    _masked_rows(q_row + h_n * sq_h + 2 * HALF, h_n < heads, dr, qr)

    k1 = gl.allocate_shared_memory(dtype, [2, BLOCK_N, HALF], NOPE.layout)
    k2 = gl.allocate_shared_memory(dtype, [2, BLOCK_N, HALF], NOPE.layout)
    kr = gl.allocate_shared_memory(dtype, [2, BLOCK_N, ROPE_DIM], ROPE.layout)
    bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(bars.index(0), count=1)
    mbarrier.init(bars.index(1), count=1)
    fence_async_shared()  # q's stores and the barriers' init, before the async proxy reads them

    lo, hi = dense_key_range(LENS, b, s, sq, capacity, sp, split_len, CAUSAL)  # scalar: Triton's helper serves
    tiles = gl.maximum(hi - lo, 0) // BLOCK_N  # whole tiles, by TMA
    at_table = b * s_table

    zero = gl.zeros([BLOCK_H, BLOCK_N], gl.float32, S_LAYOUT)
    m = gl.full([BLOCK_H], float("-inf"), gl.float32, gl.SliceLayout(1, S_LAYOUT))
    sums = gl.zeros([BLOCK_H, BLOCK_N], gl.float32, S_LAYOUT)
    acc1 = warpgroup_mma_init(gl.zeros([BLOCK_H, HALF], gl.float32, O_LAYOUT))  # loop-carried in flight
    acc2 = warpgroup_mma_init(gl.zeros([BLOCK_H, HALF], gl.float32, O_LAYOUT))
    every = gl.full([BLOCK_N], 1, gl.int1, gl.SliceLayout(0, S_LAYOUT))
    if tiles > 0:
        entry = _table_entry(TABLE, at_table, lo, page, True)
        _load_tile(NOPE, ROPE, entry, lo, page, num_blocks, bars.index(0), k1.index(0), k2.index(0), kr.index(0))
    # the entry of the tile after next is read a tile ahead: its load's latency is not in the TMA's issue
    entry = _table_entry(TABLE, at_table, lo + BLOCK_N, page, tiles > 1)
    for t in range(tiles):
        buf = t % 2
        mbarrier.wait(bars.index(buf), (t // 2) % 2)
        scores = _issue_scores(q1, q2, qr, k1.index(buf), k2.index(buf), kr.index(buf), zero)
        # the previous tile's value MMAs are done (groups retire in order): its buffer takes the next tile
        acc1, acc2 = warpgroup_mma_wait(num_outstanding=3, deps=(acc1, acc2))
        if t + 1 < tiles:
            nxt = 1 - buf
            _load_tile(NOPE, ROPE, entry, lo + (t + 1) * BLOCK_N, page, num_blocks, bars.index(nxt), k1.index(nxt),
                       k2.index(nxt), kr.index(nxt))  # fmt: skip
        entry = _table_entry(TABLE, at_table, lo + (t + 2) * BLOCK_N, page, t + 2 < tiles)
        scores = warpgroup_mma_wait(num_outstanding=0, deps=(scores,))
        m, sums, acc1, acc2 = _issue_values(scores, every, m, sums, acc1, acc2, k1.index(buf), k2.index(buf),
                                            scale_log2, O_LAYOUT, P_LAYOUT)  # fmt: skip
    acc1, acc2 = warpgroup_mma_wait(num_outstanding=0, deps=(acc1, acc2))
    whole = lo + tiles * BLOCK_N
    if whole < hi:  # the partial last tile, into buffer 0 (every MMA has retired)
        first = _first_row(_table_entry(TABLE, at_table, whole, page, True).to(gl.int64), whole, page, num_blocks)
        n_w = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, WIDE))
        n_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, NARROW))
        _masked_rows(CACHE + (first + n_w) * s_row, whole + n_w < hi, half, k1.index(0))
        _masked_rows(CACHE + (first + n_w) * s_row + HALF, whole + n_w < hi, half, k2.index(0))
        _masked_rows(CACHE + (first + n_n) * s_row + 2 * HALF, whole + n_n < hi, dr, kr.index(0))
        fence_async_shared()
        _cta_barrier()
        scores = _issue_scores(q1, q2, qr, k1.index(0), k2.index(0), kr.index(0), zero)
        scores = warpgroup_mma_wait(num_outstanding=0, deps=(scores,))
        n_ok = whole + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, S_LAYOUT)) < hi
        m, sums, acc1, acc2 = _issue_values(scores, n_ok, m, sums, acc1, acc2, k1.index(0), k2.index(0),
                                            scale_log2, O_LAYOUT, P_LAYOUT)  # fmt: skip
        acc1, acc2 = warpgroup_mma_wait(num_outstanding=0, deps=(acc1, acc2))
    mbarrier.invalidate(bars.index(0))
    mbarrier.invalidate(bars.index(1))

    total = gl.sum(sums, 1)
    lse, inv = lse_and_inverse(m, total)  # the Triton kernels' epilogue
    if FINAL:
        lse = gl.where(total > 0, lse, float("inf"))
    inv = gl.convert_layout(inv, gl.SliceLayout(1, O_LAYOUT))[:, None]
    h_o = hb * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, O_LAYOUT))
    d_o = gl.arange(0, HALF, layout=gl.SliceLayout(0, O_LAYOUT))
    o_at = OUT + row.to(gl.int64) * so_r + sp * so_s + h_o[:, None] * so_h + d_o[None, :]
    gl.store(o_at, (acc1 * inv).to(OUT.dtype.element_ty), mask=(h_o < heads)[:, None])
    gl.store(o_at + HALF, (acc2 * inv).to(OUT.dtype.element_ty), mask=(h_o < heads)[:, None])
    h_s = hb * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, S_LAYOUT))
    gl.store(LSE + b.to(gl.int64) * sl_b + s * sl_q + sp * sl_s + h_s * sl_h, lse, mask=h_s < heads)
