"""Attention over a padded batch, vectorised: one mask, one batched SDPA or score computation.

Every path takes q (B, Lq, Hq, D), k (B, Lk, Hk, D), v (B, Lk, Hk, Dv) and per-sequence lengths
as tensors, so nothing reads the device to decide. The mask follows FlashAttention: a query at
row i of a sequence with lq queries and lk keys sits at key position i + lk - lq (bottom-right);
keys before ``k_start`` (left padding) and past ``k_len`` are invisible and are zeroed before any
product: an unused cache slot may hold anything, NaN included (FlashMLA's tests put NaN there),
and 0 * NaN would reach the output. Rows that see no key give out 0 and lse -inf, as the reference
does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from accelbridge.ops.softmax import softmax_shift
from accelbridge.ops.spec import window_tuple
from accelbridge.torch_attention.layout import fold_groups, unfold_groups

_SCORE_BYTES = 256 << 20  # float32 scores held at once by the explicit path (queries are chunked to fit)
_SDPA_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_FUSED_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Masking:
    """What limits the keys a query sees: the call's causal/window/chunk options."""

    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    chunk: int = 0

    @classmethod
    def of(cls, causal: Any, window_size: Any, attention_chunk: Any) -> Masking:
        return cls(bool(causal), window_tuple(window_size), int(attention_chunk or 0))

    @property
    def limits(self) -> tuple[int, int]:
        """(left, right) key offsets around the query's position; -1 is unlimited."""
        left, right = self.window
        return left, 0 if self.causal else right


def visible(mask: Masking, q_len: torch.Tensor, k_len: torch.Tensor, lq: int, lk: int,
            k_start: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """(B, lq, lk) bool: which padded key each padded query sees."""
    dev = q_len.device
    i = torch.arange(lq, device=dev)[None, :, None]
    j = torch.arange(lk, device=dev)[None, None, :]
    start = torch.zeros_like(k_len) if k_start is None else k_start
    seen = (k_len - start).long()[:, None, None]  # keys this sequence attends to
    rel = j - start.long()[:, None, None]  # key position after the left padding
    at = i + seen - q_len.long()[:, None, None]  # the query's position among the keys
    allowed = (rel >= 0) & (j < k_len.long()[:, None, None]) & (i < q_len.long()[:, None, None])
    left, right = mask.limits
    if left >= 0:
        allowed = allowed & (rel >= at - left)
    if right >= 0:
        allowed = allowed & (rel <= at + right)
    if mask.chunk:
        first = at - torch.remainder(at, mask.chunk)
        allowed = allowed & (rel >= first) & (rel < first + mask.chunk)
    return allowed


@dataclass
class Call:
    """One attention call on padded tensors."""

    q: torch.Tensor  # (B, Lq, Hq, D)
    k: torch.Tensor  # (B, Lk, Hk, D)
    v: torch.Tensor  # (B, Lk, Hk, Dv)
    q_len: torch.Tensor  # (B,)
    k_len: torch.Tensor  # (B,)
    scale: float
    mask: Masking
    k_start: torch.Tensor | None = None
    softcap: float = 0.0
    sinks: torch.Tensor | None = None  # (Hq,)
    qv: torch.Tensor | None = None  # (B, Lq, Hq, Dv)
    want_lse: bool = False
    kv_own: bool = False  # k and v are this call's own copies (gathered, padded): zeroed in place

    @property
    def sdpa_ok(self) -> bool:
        """SDPA computes softmax(qk^T * scale + mask) v and nothing else: no lse, softcap, sinks or qv."""
        return (not self.want_lse and not self.softcap and self.sinks is None and self.qv is None
                and self.q.dtype in _SDPA_DTYPES)  # fmt: skip


def keys_in_use(c: Call) -> torch.Tensor:
    """(B, Lk) bool: the padded keys some query of the sequence may see (k_start <= j < k_len)."""
    j = torch.arange(c.k.shape[1], device=c.k.device)[None, :]
    used = j < c.k_len.long()[:, None]
    return used if c.k_start is None else used & (j >= c.k_start.long()[:, None])


def _zero_unused(x: torch.Tensor, used: torch.Tensor, own: bool) -> torch.Tensor:
    """x (B, Lk, H, D) with the key rows not ``used`` (B, Lk, 1, 1) set to zero bits (in place where ``own``).

    The select runs on the rows' bytes as int64 where they allow it: a CPU selects 64-bit words several
    times faster than bf16 values (dev VM, 32 x 1024 x 2 x 64 bf16: 0.33-0.42 ms against 1.1 ms), and
    in place it allocates nothing (a fresh 8 MiB result page-faults: 2 ms).
    """
    if x.stride(-1) == 1 and (x.shape[-1] * x.element_size()) % 8 == 0:
        try:
            words = x.view(torch.int64)
        except RuntimeError:  # a stride or offset that is no whole word
            pass
        else:
            if own:
                words.masked_fill_(~used, 0)
                return x
            return torch.where(used, words, 0).view(x.dtype)
    if own:
        return x.masked_fill_(~used, 0)
    return torch.where(used.expand_as(x), x, torch.zeros((), dtype=x.dtype, device=x.device))


def attend(call: Call) -> tuple[torch.Tensor, torch.Tensor | None]:
    """out (B, Lq, Hq, Dv) and, when wanted, lse (B, Hq, Lq) float32."""
    b, lq, hq, _ = call.q.shape
    if b == 0 or lq == 0:
        out = call.q.new_zeros((b, lq, hq, call.v.shape[-1]), dtype=torch.float32)
        lse = torch.full((b, hq, lq), float("-inf"), dtype=torch.float32, device=call.q.device)
        return out, lse if call.want_lse else None
    used = keys_in_use(call)[..., None, None]
    call = replace(call, k=_zero_unused(call.k, used, call.kv_own), v=_zero_unused(call.v, used, call.kv_own))
    if call.sdpa_ok:
        return _sdpa(call), None
    if _fused_lse_ok(call):
        return _fused_with_lse(call)
    return _explicit(call)


_EFFICIENT = "_scaled_dot_product_efficient_attention"


def _fused_lse_ok(c: Call) -> bool:
    """CUDA's memory-efficient attention returns lse (an aten op SDPA uses; any head dim, e.g. MLA's 576/512)."""
    return (c.want_lse and c.q.is_cuda and torch.version.hip is None and c.q.dtype in _FUSED_DTYPES
            and c.k.dtype == c.q.dtype and not c.softcap and c.sinks is None and c.qv is None
            and c.k.shape[1] % 16 == 0 and hasattr(torch.ops.aten, _EFFICIENT))  # fmt: skip


def _fused_with_lse(c: Call) -> tuple[torch.Tensor, torch.Tensor]:
    b, lq, hq, _ = c.q.shape
    lk, hk = c.k.shape[1], c.k.shape[2]
    g = hq // hk
    allowed = visible(c.mask, c.q_len, c.k_len, lq, lk, c.k_start)
    rows = allowed[:, None].expand(b, g, lq, lk).reshape(b, 1, g * lq, lk)
    bias = torch.zeros(rows.shape, dtype=c.q.dtype, device=c.q.device).masked_fill_(~rows, float("-inf"))
    q = fold_groups(c.q, hk)
    o, lse = getattr(torch.ops.aten, _EFFICIENT)(
        q, c.k.transpose(1, 2), c.v.transpose(1, 2), bias.expand(b, hk, g * lq, lk), True, scale=c.scale
    )[:2]
    seen = allowed.any(dim=-1)  # (B, Lq)
    o = torch.where(seen[..., None, None], unfold_groups(o, lq), torch.zeros((), dtype=o.dtype, device=o.device))
    lse = lse[..., : g * lq].reshape(b, hk, g, lq).reshape(b, hq, lq)
    return o, torch.where(seen[:, None, :], lse.float(), float("-inf"))


def _sdpa(c: Call) -> torch.Tensor:
    b, lq, hq, _ = c.q.shape
    lk, hk = c.k.shape[1], c.k.shape[2]
    allowed = visible(c.mask, c.q_len, c.k_len, lq, lk, c.k_start)  # (B, Lq, Lk)
    g = hq // hk
    rows_mask = allowed[:, None].expand(b, g, lq, lk).reshape(b, 1, g * lq, lk)
    q = fold_groups(c.q, hk)
    o = F.scaled_dot_product_attention(q, c.k.transpose(1, 2), c.v.transpose(1, 2), attn_mask=rows_mask,
                                       scale=c.scale)  # fmt: skip
    o = unfold_groups(o, lq)
    seen = allowed.any(dim=-1)  # (B, Lq): SDPA leaves NaN where a row sees nothing
    return torch.where(seen[..., None, None], o, torch.zeros((), dtype=o.dtype, device=o.device))


def _explicit(c: Call) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores in float32, the query rows chunked so the score tensor stays under _SCORE_BYTES."""
    b, lq, hq, _ = c.q.shape
    lk, hk, dv = c.k.shape[1], c.k.shape[2], c.v.shape[-1]
    g = hq // hk
    kt = c.k.float().transpose(1, 2)  # (B, Hk, Lk, D)
    vt = c.v.float().transpose(1, 2)
    allowed = visible(c.mask, c.q_len, c.k_len, lq, lk, c.k_start)
    sinks = None if c.sinks is None else c.sinks.float().view(1, hk, g, 1)
    out = torch.empty(b, lq, hq, dv, dtype=torch.float32, device=c.q.device)
    lse = torch.empty(b, hq, lq, dtype=torch.float32, device=c.q.device)
    step = max(1, _SCORE_BYTES // max(1, 4 * b * hq * lk))
    for s in range(0, lq, step):
        rows = slice(s, min(s + step, lq))
        n = rows.stop - rows.start
        q = c.q[:, rows].float().view(b, n, hk, g, -1).permute(0, 2, 3, 1, 4)  # (B, Hk, G, n, D)
        scores = torch.einsum("bhgqd,bhkd->bhgqk", q, kt)
        if c.qv is not None:
            qv = c.qv[:, rows].float().view(b, n, hk, g, -1).permute(0, 2, 3, 1, 4)
            scores = scores + torch.einsum("bhgqd,bhkd->bhgqk", qv, vt)
        scores = scores * c.scale
        if c.softcap:
            scores = c.softcap * torch.tanh(scores / c.softcap)
        scores = scores.masked_fill(~allowed[:, None, None, rows], float("-inf"))
        row_lse = torch.logsumexp(scores, dim=-1)  # (B, Hk, G, n)
        if sinks is not None:
            row_lse = torch.logaddexp(row_lse, sinks.expand_as(row_lse))
        finite = torch.isfinite(row_lse)
        p = torch.exp(scores - softmax_shift(row_lse)[..., None])
        p = torch.where(finite[..., None], p, torch.zeros_like(p))
        o = torch.einsum("bhgqk,bhkd->bqhgd", p, vt)
        out[:, rows] = o.reshape(b, n, hq, dv)
        lse[:, :, rows] = row_lse.reshape(b, hq, n)
    return out, lse
