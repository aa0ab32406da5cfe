"""fa3/fa4 kvcache through torch: append as one scatter, attention as one batched call.

New keys (rotated when rotary tables are given) are written into the cache at each sequence's
``cache_seqlens`` with one ``index_put_`` (in place, as FA3 does). Where Triton runs, decode-shaped
calls read the (paged) cache in place with the decode kernel and longer ones (chunked prefill)
with the prefill kernel; everything else gathers each sequence's keys into a padded batch and
runs ``core.attend``.
"""

from __future__ import annotations

import torch

from accelbridge.ops.layout import dequantise, finish, gather_pages
from accelbridge.ops.reference import default_scale, holds_no_key, rotary_q_per_row, rotate
from accelbridge.ops.spec import FP8_DTYPES
from accelbridge.torch_attention import capabilities, decode, prefill
from accelbridge.torch_attention.core import Call, Masking, attend
from accelbridge.torch_attention.layout import lengths, longest, pad, unpad


def _per_sequence(value, batch: int, default: int, device) -> torch.Tensor:
    if value is None:
        return torch.full((batch,), default, dtype=torch.int32, device=device)
    if isinstance(value, int):
        return torch.full((batch,), value, dtype=torch.int32, device=device)
    return value


def _rows(rows, batch: int, device) -> torch.Tensor:
    """The cache row of each sequence: ``rows``, or sequence b's own row b."""
    return rows if rows is not None else torch.arange(batch, dtype=torch.int32, device=device)


def _rotate_padded(x: torch.Tensor, cos, sin, positions: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """x (B, L, H, D) rotated at positions (B, L), clamped into the table (padding rows are discarded)."""
    b, length = x.shape[0], x.shape[1]
    pos = positions.clamp(0, cos.shape[0] - 1).reshape(-1)
    return rotate(x.reshape(b * length, *x.shape[2:]), cos, sin, pos, interleaved).view(*x.shape[:2], *x.shape[2:])


def _append(k_cache, v_cache, kn, vn, new_len, seqlens, rows, page_table, ragged: bool) -> None:
    """Write kn/vn (B, S_new, Hk, D) rows t < new_len[b] at position seqlens[b] + t of cache row rows[b].

    Only ``ragged`` (packed) new keys have rows to leave out; selecting them reads the device.
    """
    b, s_new = kn.shape[0], kn.shape[1]
    t = torch.arange(s_new, device=kn.device)
    pos = seqlens.long()[:, None] + t[None, :]  # (B, S_new)
    valid = (t[None, :] < new_len.long()[:, None]).reshape(-1)
    keys, values = kn.reshape(b * s_new, *kn.shape[2:]), vn.reshape(b * s_new, *vn.shape[2:])
    if page_table is not None:
        page = k_cache.shape[1]
        table = page_table[rows.long()]
        first = table.gather(1, (pos // page).clamp(max=table.shape[1] - 1)).long().reshape(-1)
        first = first.clamp(0, k_cache.shape[0] - 1)  # a table naming no block must not take the device down
        second = (pos % page).reshape(-1)
    else:
        first = rows.long()[:, None].expand(b, s_new).reshape(-1)
        second = pos.clamp(max=k_cache.shape[1] - 1).reshape(-1)
    if ragged:  # packed new keys of unequal lengths: write only the real rows (a sync)
        first, second, keys, values = first[valid], second[valid], keys[valid], values[valid]
    k_cache.index_put_((first, second), keys.to(k_cache.dtype))
    v_cache.index_put_((first, second), values.to(v_cache.dtype))


def _prefill(qp, k_cache, v_cache, q_len, k_len, rows, page_table, scale, mask, softcap, sinks, want_lse):
    """Chunked prefill over the cache with the Triton prefill kernel: the padded batch as packed rows
    (sequence b at b * Lq), its cache rows as a page table (a contiguous cache is one page a row)."""
    b, lq, hq = qp.shape[0], qp.shape[1], qp.shape[2]
    cu = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=qp.device)
    table = rows.view(b, 1) if page_table is None else page_table[rows.long()]
    o, lse = prefill.prefill(qp.reshape(b * lq, hq, qp.shape[-1]), k_cache, v_cache, cu, None, lq, q_len, k_len,
                             table, scale, mask, softcap, sinks, want_lse)  # fmt: skip
    o = o.view(b, lq, hq, -1)
    return o, (None if lse is None else lse.view(hq, b, lq).transpose(0, 1))


def flash_attn_with_kvcache(
    q,
    k_cache,
    v_cache,
    k=None,
    v=None,
    qv=None,
    rotary_cos=None,
    rotary_sin=None,
    cache_seqlens=None,
    cache_batch_idx=None,
    cache_leftpad=None,
    page_table=None,
    cu_seqlens_q=None,
    cu_seqlens_k_new=None,
    max_seqlen_q=None,
    rotary_seqlens=None,
    q_descale=None,
    k_descale=None,
    v_descale=None,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    attention_chunk=None,
    softcap=0.0,
    rotary_interleaved=True,
    return_softmax_lse=False,
    sinks=None,
    out=None,
):
    """Decode / append attention over a contiguous or paged cache, vectorised over the batch."""
    dev = q.device
    packed = cu_seqlens_q is not None
    batch = cu_seqlens_q.shape[0] - 1 if packed else q.shape[0]
    d, hk = q.shape[-1], k_cache.shape[-2]
    if holds_no_key(k_cache, k):  # FA3 launches nothing: out 0, lse +inf
        o = torch.zeros(*q.shape[:-1], v_cache.shape[-1], dtype=torch.float32, device=dev)
        shape = (q.shape[1], q.shape[0]) if packed else (q.shape[0], q.shape[2], q.shape[1])
        lse = torch.full(shape, float("inf"), dtype=torch.float32, device=dev)
        return finish(o, lse, q.dtype, out, return_softmax_lse)
    scale = default_scale(softmax_scale, d, qv)
    capacity = k_cache.shape[1] * (1 if page_table is None else page_table.shape[1])
    mask = Masking.of(causal, window_size, attention_chunk)
    if packed:
        q_len = lengths(cu_seqlens_q)
        lq = longest(max_seqlen_q, q_len)
        qp = pad(q, cu_seqlens_q, lq)
        qvp = None if qv is None else pad(qv, cu_seqlens_q, lq)
    else:  # every sequence has lq queries: None, which the decode kernel takes as its constant (no launch)
        lq, q_len = q.shape[1], None
        qp, qvp = q, qv
    seqlens = _per_sequence(cache_seqlens, batch, capacity, dev)  # no lengths: every row is full (as FA3)
    rows = None  # sequence b reads cache row b (None: no tensor to build on the decode path)
    if cache_batch_idx is not None:  # rows past the cache (or the page table) would fault; full checks name them
        rows = cache_batch_idx.clamp(0, (k_cache if page_table is None else page_table).shape[0] - 1)
    new_len = None
    kn = vn = None
    if k is not None:
        if cu_seqlens_k_new is not None:
            new_len = lengths(cu_seqlens_k_new)
            s_new = longest(None, new_len)
            kn, vn = pad(k, cu_seqlens_k_new, s_new), pad(v, cu_seqlens_k_new, s_new)
        else:
            kn, vn = k, v
            new_len = torch.full_like(seqlens, k.shape[1])
    if rotary_cos is not None:
        offsets = (rotary_seqlens if rotary_seqlens is not None else seqlens).long()[:, None]
        per_row = rotary_q_per_row(causal, window_size, attention_chunk, lq, capacity)
        steps = torch.arange(lq, device=dev)[None, :] if per_row else torch.zeros(1, lq, dtype=torch.long, device=dev)
        qp = _rotate_padded(qp, rotary_cos, rotary_sin, steps + offsets, rotary_interleaved)
        qp = qp if q.dtype in FP8_DTYPES else qp.to(q.dtype)
        if kn is not None:
            steps = torch.arange(kn.shape[1], device=dev)[None, :]
            kn = _rotate_padded(kn, rotary_cos, rotary_sin, steps + offsets, rotary_interleaved)
    if kn is not None and kn.shape[1] > 0:
        rows = _rows(rows, batch, dev)
        _append(k_cache, v_cache, kn, vn, new_len, seqlens, rows, page_table, cu_seqlens_k_new is not None)
    k_len = seqlens if new_len is None else seqlens + new_len
    plain = qvp is None and q.dtype not in FP8_DTYPES and not mask.chunk
    caps = capabilities.of(dev)
    if plain and decode.fits(qp, k_cache, v_cache, caps):
        direct = None if packed else prefill.writable(out, q.dtype)  # packed rows are unpadded after
        o, lse = decode.paged_decode(qp, k_cache, v_cache, q_len, k_len, cache_leftpad, rows, page_table, scale,
                                     mask, softcap or 0.0, sinks, direct)  # fmt: skip
        return _finished(o, lse, q, cu_seqlens_q, q_len, out, return_softmax_lse)
    q_len, rows = _per_sequence(q_len, batch, lq, dev), _rows(rows, batch, dev)
    if (plain and lq > 0 and cache_leftpad is None and q_descale is None and k_descale is None and v_descale is None
            and prefill.fits(qp, k_cache, v_cache, lq, mask, caps)):  # fmt: skip
        o, lse = _prefill(qp, k_cache, v_cache, q_len, k_len, rows, page_table, scale, mask, softcap, sinks,
                          return_softmax_lse)  # fmt: skip
    else:
        if page_table is not None:
            kp = gather_pages(k_cache, page_table[rows.long()], k_len)
            vp = gather_pages(v_cache, page_table[rows.long()], k_len)
        elif cache_batch_idx is not None:
            kp, vp = k_cache.index_select(0, rows), v_cache.index_select(0, rows)
        else:
            kp, vp = k_cache[:batch], v_cache[:batch]  # the caller's cache: never written here
        gathered = page_table is not None or cache_batch_idx is not None
        call = Call(dequantise(qp, q_descale, hk), dequantise(kp, k_descale, hk), dequantise(vp, v_descale, hk),
                    q_len, k_len, scale, mask, k_start=cache_leftpad, softcap=softcap or 0.0, sinks=sinks,
                    qv=None if qvp is None else dequantise(qvp, q_descale, hk),
                    want_lse=return_softmax_lse, kv_own=gathered)  # fmt: skip
        o, lse = attend(call)
    return _finished(o, lse, q, cu_seqlens_q, q_len, out, return_softmax_lse)


def _finished(o, lse, q, cu_seqlens_q, q_len, out, want_lse: bool):
    """The padded result as the op returns it: packed rows unpadded, in ``out`` where given."""
    if cu_seqlens_q is not None:
        o = unpad(o, cu_seqlens_q, q_len, q.shape[0], 0.0)
        if lse is not None:
            lse = unpad(lse.transpose(1, 2), cu_seqlens_q, q_len, q.shape[0], float("-inf")).transpose(0, 1)
    return finish(o, lse, q.dtype, out, want_lse)
