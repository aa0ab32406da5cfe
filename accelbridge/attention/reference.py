"""Pure-torch reference attention, float32 accumulation, any device.

Each function declares exactly the canonical parameters it implements; the facade reads
that from its signature, so an argument the reference cannot honour (``qv``, rotary,
descale) routes elsewhere or raises, instead of being dropped. These functions are also
the oracle of every numerical test.
"""

from __future__ import annotations

import math

import torch


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool = False,
    window_size: tuple[int, int] | list[int] = (-1, -1),
    softcap: float = 0.0,
    sinks: torch.Tensor | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence: q (Lq, Hq, D), k (Lk, Hk, D), v (Lk, Hk, Dv) -> out (Lq, Hq, Dv), lse (Hq, Lq).

    Causal and window masks align bottom-right (query i sees key j <= i + Lk - Lq), as FA does.
    Rows that see no key give zeros and lse -inf. ``sinks`` (Hq,) add a per-head logit to the
    softmax denominator only.
    """
    lq, hq = q.shape[0], q.shape[1]
    lk, hk = k.shape[0], k.shape[1]
    if hq % hk:
        raise ValueError(f"q has {hq} heads, not a multiple of k's {hk} heads")
    group = hq // hk
    qf, kf, vf = q.to(compute_dtype), k.to(compute_dtype), v.to(compute_dtype)
    if group > 1:
        kf, vf = kf.repeat_interleave(group, dim=1), vf.repeat_interleave(group, dim=1)
    s = torch.einsum("qhd,khd->hqk", qf, kf) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    left, right = int(window_size[0]), int(window_size[1])
    if causal:
        right = 0
    if left >= 0 or right >= 0:
        i = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        j = torch.arange(lk, device=q.device)[None, :]
        allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
        if left >= 0:
            allowed &= j >= i - left
        if right >= 0:
            allowed &= j <= i + right
        s = s.masked_fill(~allowed, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks.to(compute_dtype)[:, None, None].expand(hq, lq, 1)], dim=-1)
    lse = torch.logsumexp(s, dim=-1)  # (Hq, Lq)
    finite = torch.isfinite(lse)
    p = torch.exp(s - torch.where(finite, lse, torch.zeros_like(lse))[..., None])
    p = torch.where(finite[..., None], p, torch.zeros_like(p))[..., :lk]
    out = torch.einsum("hqk,khd->qhd", p, vf)
    return out, lse


def _lengths(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(x) for x in t.tolist()]


def _gather_pages(cache: torch.Tensor, pages: torch.Tensor, length: int) -> torch.Tensor:
    """(num_blocks, page_size, H, D) + page ids of one sequence -> its first ``length`` rows."""
    page_size = cache.shape[1]
    n = math.ceil(length / page_size)
    return cache[pages[:n].long()].reshape(-1, *cache.shape[2:])[:length]


def _finish(o, lse, dtype, out, return_softmax_lse):
    """Cast to the input dtype, write into ``out`` when given, and apply the return convention."""
    result = o.to(dtype)
    if out is not None:
        out.copy_(result)
        result = out
    return (result, lse) if return_softmax_lse else result


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q=None,
    max_seqlen_k=None,
    seqused_q=None,
    seqused_k=None,
    page_table=None,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    return_softmax_lse=False,
    sinks=None,
    out=None,
):
    """Varlen attention: q (total_q, Hq, D); k/v (total_k, Hk, D) or paged (blocks, page, Hk, D)."""
    batch = cu_seqlens_q.numel() - 1
    total_q, hq, d = q.shape
    dv = v.shape[-1]
    scale = softmax_scale if softmax_scale is not None else d**-0.5
    o = torch.zeros(total_q, hq, dv, dtype=torch.float32, device=q.device)
    lse = torch.full((hq, total_q), float("-inf"), dtype=torch.float32, device=q.device)
    cu_q, cu_k = _lengths(cu_seqlens_q), _lengths(cu_seqlens_k)
    used_q, used_k = _lengths(seqused_q), _lengths(seqused_k)
    for b in range(batch):
        q0 = cu_q[b]
        lq = used_q[b] if used_q is not None else cu_q[b + 1] - q0
        if page_table is not None:
            lk = used_k[b] if used_k is not None else cu_k[b + 1] - cu_k[b]
            kb, vb = _gather_pages(k, page_table[b], lk), _gather_pages(v, page_table[b], lk)
        else:
            k0 = cu_k[b]
            lk = used_k[b] if used_k is not None else cu_k[b + 1] - k0
            kb, vb = k[k0 : k0 + lk], v[k0 : k0 + lk]
        if lq == 0:
            continue
        ob, lb = attend(q[q0 : q0 + lq], kb, vb, scale, causal, window_size, softcap, sinks)
        o[q0 : q0 + lq] = ob
        lse[:, q0 : q0 + lq] = lb
    return _finish(o, lse, q.dtype, out, return_softmax_lse)


def flash_attn_with_kvcache(
    q,
    k_cache,
    v_cache,
    k=None,
    v=None,
    cache_seqlens=None,
    cache_batch_idx=None,
    page_table=None,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    return_softmax_lse=False,
    sinks=None,
    out=None,
):
    """Decode/append attention over a contiguous (B, S, Hk, D) or paged cache.

    ``k``/``v`` (B, S_new, Hk, D) are written into the cache at ``cache_seqlens`` first (in
    place, as FA3 does); attention then covers ``cache_seqlens + S_new`` keys.
    """
    batch, _, hq, d = q.shape
    dv = v_cache.shape[-1]
    scale = softmax_scale if softmax_scale is not None else d**-0.5
    if cache_seqlens is None:
        if page_table is not None:
            raise ValueError("cache_seqlens is required with page_table")
        seqlens = [k_cache.shape[1]] * batch
    elif isinstance(cache_seqlens, int):
        seqlens = [cache_seqlens] * batch
    else:
        seqlens = _lengths(cache_seqlens)
    rows = _lengths(cache_batch_idx) or list(range(batch))
    new = 0 if k is None else k.shape[1]
    page_size = k_cache.shape[1]
    o = torch.zeros(batch, q.shape[1], hq, dv, dtype=torch.float32, device=q.device)
    lse = torch.full((batch, hq, q.shape[1]), float("-inf"), dtype=torch.float32, device=q.device)
    for b in range(batch):
        start = seqlens[b]
        for t in range(new):
            pos = start + t
            if page_table is not None:
                block = int(page_table[b, pos // page_size])
                k_cache[block, pos % page_size] = k[b, t]
                v_cache[block, pos % page_size] = v[b, t]
            else:
                k_cache[rows[b], pos] = k[b, t]
                v_cache[rows[b], pos] = v[b, t]
        length = start + new
        if page_table is not None:
            kb, vb = _gather_pages(k_cache, page_table[b], length), _gather_pages(v_cache, page_table[b], length)
        else:
            kb, vb = k_cache[rows[b], :length], v_cache[rows[b], :length]
        ob, lb = attend(q[b], kb, vb, scale, causal, window_size, softcap, sinks)
        o[b], lse[b] = ob, lb
    return _finish(o, lse, q.dtype, out, return_softmax_lse)


def get_mla_metadata(
    cache_seqlens=None,
    num_q_tokens_per_head_k=None,
    num_heads_k=None,
    num_heads_q=None,
    is_fp8_kvcache=False,
    topk=None,
):
    """The reference schedules nothing: (None, None), accepted back by flash_mla_with_kvcache."""
    return None, None


def flash_mla_with_kvcache(
    q,
    k_cache,
    block_table,
    cache_seqlens,
    head_dim_v,
    tile_scheduler_metadata=None,
    num_splits=None,
    softmax_scale=None,
    causal=False,
):
    """FlashMLA dense decode: q (B, Sq, Hq, 576), paged latent cache (blocks, page, Hk, 576).

    V is the first ``head_dim_v`` channels of the cache. Returns (out (B, Sq, Hq, Dv), lse (B, Hq, Sq)).
    """
    batch, sq, hq, d = q.shape
    scale = softmax_scale if softmax_scale is not None else d**-0.5
    o = torch.zeros(batch, sq, hq, head_dim_v, dtype=torch.float32, device=q.device)
    lse = torch.full((batch, hq, sq), float("-inf"), dtype=torch.float32, device=q.device)
    for b, length in enumerate(_lengths(cache_seqlens)):
        kb = _gather_pages(k_cache, block_table[b], length)
        ob, lb = attend(q[b], kb, kb[..., :head_dim_v], scale, causal)
        o[b], lse[b] = ob, lb
    return o.to(q.dtype), lse
