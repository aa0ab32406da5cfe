"""The Triton pieces every attention kernel shares: one online-softmax step (base 2), its epilogue, the block-table
clamp, the dot the interpreter needs in float32, and the base constants. Importing it imports triton: only the
``*_kernel.py`` modules import it, and they are imported on a launcher's first call."""

import triton
import triton.language as tl

from accelbridge.ops.softmax import LN2 as _LN2
from accelbridge.ops.softmax import LOG2E as _LOG2E

LOG2E = tl.constexpr(_LOG2E)
LN2 = tl.constexpr(_LN2)


@triton.jit
def _operands(a, b, DOT_F32: tl.constexpr):
    """A dot's operands: ``a`` cast to ``b``'s dtype; with DOT_F32 both in float32 (Triton's interpreter multiplies
    bf16 bit patterns in tl.dot)."""
    if DOT_F32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    else:
        a = a.to(b.dtype)
    return a, b


@triton.jit
def mma(a, b, acc, DOT_F32: tl.constexpr, B_T: tl.constexpr = False):
    """a @ b (b transposed with B_T: scores q @ k^T) + ``acc`` (None: nothing), through ``_operands``."""
    a, b = _operands(a, b, DOT_F32)
    if B_T:
        b = tl.trans(b)
    return tl.dot(a, b, acc)


@triton.jit
def rescaled_mma(acc, alpha, p, v, DOT_F32: tl.constexpr):
    """The value step of the online softmax: acc * alpha + p @ v, accumulated in the dot (wgmma's accumulator on
    Hopper)."""
    p, v = _operands(p, v, DOT_F32)
    return tl.dot(p, v, acc * alpha[:, None])


@triton.jit
def running_state(ROWS: tl.constexpr, COLS: tl.constexpr):
    """A fresh online softmax over ROWS rows with COLS output columns: (max -inf, sum 0, accumulator 0)."""
    return tl.full([ROWS], float("-inf"), tl.float32), tl.zeros([ROWS], tl.float32), tl.zeros([ROWS, COLS], tl.float32)


@triton.jit
def shift_of(m):
    """What a row subtracts before ``exp2``: its running max, 0 where it is -inf (a row with no key yet: its
    scores are all -inf, exp2(-inf - 0) = 0 instead of NaN)."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def online_softmax(s, m, MAY_BE_EMPTY: tl.constexpr):
    """One block of base-2 scores ``s`` (rows, keys; -inf: no key) into a row's running max ``m``
    -> (p, the rescale of the past, the new max). The caller adds p's row sums to its running sum.
    Without MAY_BE_EMPTY every row has a finite score in this block (no shift guard)."""
    m_new = tl.maximum(m, tl.max(s, 1))
    if MAY_BE_EMPTY:
        base = shift_of(m_new)
    else:
        base = m_new
    alpha = tl.exp2(m - base)
    return tl.exp2(s - base[:, None]), alpha, m_new


@triton.jit
def nonzero(total):
    """A running sum safe to divide by: 1 where the row saw no key (its accumulator is 0)."""
    return tl.where(total > 0, total, 1.0)


@triton.jit
def lse_of(m, total):
    """The row's log-sum-exp in base e from its base-2 running (max, sum); -inf where it saw no key."""
    return tl.where(total > 0, (m + tl.log2(nonzero(total))) * LN2, float("-inf"))


@triton.jit
def lse_and_inverse(m, total):
    """The epilogue: (lse in base e, the reciprocal of the sum to normalise the accumulator by)."""
    return lse_of(m, total), 1.0 / nonzero(total)


@triton.jit
def clamp_block(blk, num_blocks):
    """A block-table entry clamped into the cache: an arbitrary entry (a table naming no block) reads a real
    block instead of faulting; the keys it gives are masked by the caller."""
    return tl.minimum(tl.maximum(blk, 0), num_blocks - 1)


@triton.jit
def scores_log2(s, scale_log2, softcap, SOFTCAP: tl.constexpr):
    """Raw scores q.k -> base-2 logits: times the scale (``scale_log2`` = scale * log2(e)), with SOFTCAP first
    capped in base e, softcap * tanh(s * scale / softcap) (tanh written with exp)."""
    if SOFTCAP:
        x = s * (scale_log2 * LN2) / softcap
        return softcap * (2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0) * LOG2E
    return s * scale_log2
