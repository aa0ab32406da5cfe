"""Triton kernels between the packed (varlen) layout and SDPA's (B, H, L, D) batch (imported on first use)."""

import triton
import triton.language as tl


@triton.jit
def pack_kernel(X, CU, OUT, sx_t, sx_h, so_b, so_h, so_l, max_len,
                D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """Program (row block, head, sequence): rows cu[b] .. cu[b+1] of X (total, H, D) into OUT[b, h, :max_len];
    rows past the sequence's length are zeros (filler no real query sees under a causal mask)."""
    lb = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    start = tl.load(CU + b)
    n = tl.load(CU + b + 1) - start
    r = lb * BLOCK_L + tl.arange(0, BLOCK_L)
    d = tl.arange(0, BLOCK_D)
    d_ok = (d < D)[None, :]
    x = tl.load(X + (start + r).to(tl.int64)[:, None] * sx_t + h * sx_h + d[None, :],
                mask=(r < n)[:, None] & d_ok, other=0.0)  # fmt: skip
    tl.store(OUT + b.to(tl.int64) * so_b + h * so_h + r[:, None] * so_l + d[None, :], x,
             mask=(r < max_len)[:, None] & d_ok)  # fmt: skip


@triton.jit
def unpack_kernel(PADDED, CU, OUT, so_b, so_h, so_l, st_t, st_h, max_len, total, batch,
                  D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """Program (row block, head, sequence or the tail): OUT rows cu[b] + r = PADDED[b, h, r]; the tail program
    (b == batch) writes zeros into the rows past the last sequence. Every row of OUT is written."""
    lb = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    start = tl.load(CU + b)
    if b == batch:
        n = total - start
    else:
        n = tl.load(CU + b + 1) - start
    d = tl.arange(0, BLOCK_D)
    d_ok = (d < D)[None, :]
    for r0 in range(lb * BLOCK_L, n, tl.num_programs(0) * BLOCK_L):
        r = r0 + tl.arange(0, BLOCK_L)
        ok = r < n
        inside = ok & (r < max_len) & (r * 0 + b < batch)  # the tail program reads nothing
        o = tl.load(PADDED + b.to(tl.int64) * so_b + h * so_h + r[:, None] * so_l + d[None, :],
                    mask=inside[:, None] & d_ok, other=0.0)  # fmt: skip
        tl.store(OUT + (start + r).to(tl.int64)[:, None] * st_t + h * st_h + d[None, :], o, mask=ok[:, None] & d_ok)
