"""FlashMLA through torch: the Triton MLA decode kernel where Triton runs (``mla_decode``; sparse prefill at
d_qk 576 too, each query a sequence of one row over its index list); elsewhere dense decode as one padded MQA
batch, sparse attention as batched gathers.

Sparse calls gather (and, for FP8 caches, dequantise) only the indexed tokens, a bounded number
of query rows at a time; no loop over sequences. An index outside the cache (-1, or any value
past its last token, as sgl-kernel documents) is invalid: it is masked and never used to index.
"""

from __future__ import annotations

import torch

from accelbridge.ops.layout import gather_pages
from accelbridge.ops.reference import gather_fp8_tokens, kv_layout
from accelbridge.ops.reference import get_mla_metadata as get_mla_metadata  # nothing to schedule: the reference's
from accelbridge.ops.softmax import LOG2E, softmax_shift
from accelbridge.ops.spec import FP8_DTYPES, out_dtype
from accelbridge.torch_attention import capabilities, fp8_cache, mla_decode
from accelbridge.torch_attention import fp8 as fp8_bytes
from accelbridge.torch_attention.core import Call, Masking, attend

_GATHER_BYTES = 512 << 20  # float32 gathered keys held at once


def _tokens(cache: torch.Tensor, idx: torch.Tensor, d: int, layout: str | None, unused: torch.Tensor) -> torch.Tensor:
    """Keys of flat token ids idx (...,) -> (..., d) float32; where ``unused``, zeros (never a token's values).

    ``layout``: the cache's FlashMLA layout (``reference.LAYOUT_BYTES``), None for a bf16/fp16 cache."""
    tokens = cache.shape[0] * cache.shape[1]
    if tokens == 0:
        return torch.zeros(*idx.shape, d, dtype=torch.float32, device=idx.device)
    flat = idx.reshape(-1).long().clamp(0, tokens - 1)
    rows = fp8_cache.token_rows(cache, flat, unused) if layout == "V32" else None
    if rows is not None:
        keys = fp8_cache.v32_keys(rows)
    elif layout is not None:
        keys = gather_fp8_tokens(cache, flat, layout, fp8_bytes.e4m3).masked_fill_(unused.reshape(-1, 1), 0.0)
    else:
        keys = cache.reshape(tokens, -1).index_select(0, flat).masked_fill_(unused.reshape(-1, 1), 0).float()
    return keys.view(*idx.shape, d)


def _invalid(idx: torch.Tensor, length: torch.Tensor | None, tokens: int) -> torch.Tensor:
    """idx (N, T): entries outside [0, tokens), and entries at or past the row's ``length`` (a list cut short)."""
    bad = (idx < 0) | (idx >= tokens)
    if length is not None:
        bad = bad | (torch.arange(idx.shape[-1], device=idx.device)[None, :] >= length.long()[:, None])
    return bad


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The caches' key lists side by side (dim 1); one cache's as it is, without a copy."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _softmax(scores: torch.Tensor, values: torch.Tensor, sink: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """scores (N, H, T), consumed in place -> out (N, H, Dv) written; returns lse (N, H) without the sink.
    Rows with no key: out 0, lse -inf.

    FlashMLA's decode scales out by 1/(1+exp(sink-lse)); its sparse prefill puts the sink in the
    denominator of out only: the same arithmetic. A +inf sink takes all the weight (out 0), a -inf
    sink none. In place, because on a CPU each pass over the scores costs more than its arithmetic.
    """
    lse = torch.logsumexp(scores, dim=-1)
    full = lse if sink is None else torch.logaddexp(lse, sink.float()[None, :].expand_as(lse))
    base = softmax_shift(full)  # a row without keys: exp(-inf - 0) = 0, out 0
    torch.bmm(scores.sub_(base[..., None]).exp_(), values, out=out)
    if sink is not None:
        out.masked_fill_(full.isposinf()[..., None], 0.0)
    return lse


def _sparse(q, scope_of, n_rows: int, dv: int, scale: float, sink, topk: int, out_dtype: torch.dtype):
    """q (N, H, D) over per-row keys: scope_of(rows) -> keys (n, T, D) float32 (zeros where invalid) and the
    invalid mask (n, T); rows taken a bounded number at a time, each chunk's float32 result written into the
    ``out_dtype`` output (the whole output in float32 would be twice the vendor's: 1 GiB at s_q 4096, 128 heads)."""
    h, d = q.shape[1], q.shape[2]
    out = torch.empty(n_rows, h, dv, dtype=out_dtype, device=q.device)
    lse = torch.empty(n_rows, h, dtype=torch.float32, device=q.device)
    maxes = torch.empty(n_rows, h, dtype=torch.float32, device=q.device)
    step = max(1, _GATHER_BYTES // max(1, 4 * topk * max(d, h)))
    chunk = None  # each chunk's float32 result (named: a caller's default dtype may be bf16, as FlashMLA's tests')
    if out_dtype != torch.float32:
        chunk = torch.empty(min(step, n_rows), h, dv, dtype=torch.float32, device=q.device)
    for s in range(0, n_rows, step):
        rows = slice(s, min(s + step, n_rows))
        keys, invalid = scope_of(rows)
        scores = torch.bmm(q[rows].float(), keys.transpose(1, 2)).mul_(scale)
        scores = scores.masked_fill_(invalid[:, None, :], float("-inf"))
        maxes[rows] = scores.amax(dim=-1) if scores.shape[-1] else float("-inf")
        target = out[rows] if chunk is None else chunk[: rows.stop - rows.start]
        lse[rows] = _softmax(scores, keys[..., :dv], sink, target)
        if chunk is not None:
            out[rows] = target
    return out, lse, maxes


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata=None,
                           num_splits=None, softmax_scale=None, causal=False, descale_q=None, descale_k=None,
                           is_fp8_kvcache=False, indices=None, attn_sink=None, extra_k_cache=None,
                           extra_indices_in_kvcache=None, topk_length=None, extra_topk_length=None,
                           kv_format=None):  # fmt: skip
    """FlashMLA decode, dense or sparse, vectorised: (out (B, Sq, Hq, Dv), lse (B, Hq, Sq)); lonely rows lse +inf."""
    if q.device != k_cache.device:  # the host and the meta device share index -1: the facade's fast path can't tell
        raise ValueError(f"k_cache is on {k_cache.device} but q is on {q.device}")
    b, sq, hq, d = q.shape
    scale = softmax_scale if softmax_scale is not None else d**-0.5
    if mla_decode.fits(q, k_cache, head_dim_v, indices, is_fp8_kvcache, capabilities.of(q.device), descale_q,
                       descale_k, extra_k_cache):  # fmt: skip
        return mla_decode.mla_decode(q, k_cache, block_table, cache_seqlens, scale, causal, indices, topk_length,
                                     is_fp8_kvcache, attn_sink)  # fmt: skip
    if indices is not None:
        idx = indices.reshape(b * sq, -1)
        lengths = None if topk_length is None else topk_length.repeat_interleave(sq)
        parts = [(k_cache, idx, lengths)]
        if extra_k_cache is not None:
            extra_len = None if extra_topk_length is None else extra_topk_length.repeat_interleave(sq)
            parts.append((extra_k_cache, extra_indices_in_kvcache.reshape(b * sq, -1), extra_len))

        layouts = [kv_layout(kv_format, d, c.shape[-1], tile_scheduler_metadata) if is_fp8_kvcache else None
                   for c, _, _ in parts]  # fmt: skip

        def scope_of(rows):
            bad = [_invalid(i[rows], None if n is None else n[rows], c.shape[0] * c.shape[1]) for c, i, n in parts]
            keys = [_tokens(c, i[rows], d, lay, u) for (c, i, _), u, lay in zip(parts, bad, layouts)]
            return _joined(keys), _joined(bad)

        topk = sum(i.shape[-1] for _, i, _ in parts)
        o, lse, _ = _sparse(q.reshape(b * sq, hq, d), scope_of, b * sq, head_dim_v, scale, attn_sink, topk,
                            torch.bfloat16 if q.dtype in FP8_DTYPES else q.dtype)  # fmt: skip
        lse = torch.where(torch.isneginf(lse), float("inf"), lse)
        o = o.view(b, sq, hq, head_dim_v)
        return o, lse.view(b, sq, hq).transpose(1, 2)
    o = torch.empty(b, sq, hq, head_dim_v, dtype=out_dtype(q.dtype), device=q.device)
    lse = torch.empty(b, hq, sq, dtype=torch.float32, device=q.device)
    for rows in _sequence_chunks(b, k_cache, block_table):
        o[rows], lse[rows] = _dense(q[rows], k_cache, block_table[rows], cache_seqlens[rows], head_dim_v, scale,
                                    causal, descale_q, descale_k)  # fmt: skip
    return o, lse


def _sequence_chunks(b: int, k_cache: torch.Tensor, block_table: torch.Tensor) -> list[slice]:
    """Sequences taken a bounded number at a time: their gathered keys, widened to float32, stay under
    ``_GATHER_BYTES`` (one sequence at least), whatever the batch and the block-table width."""
    per_seq = block_table.shape[1] * k_cache.shape[1] * k_cache.shape[2] * k_cache.shape[3] * 4
    step = max(1, _GATHER_BYTES // max(1, per_seq))
    return [slice(s, min(s + step, b)) for s in range(0, b, step)] or [slice(0, 0)]


def _dense(q, k_cache, block_table, cache_seqlens, head_dim_v, scale, causal, descale_q, descale_k):
    """Dense decode of a few sequences: their pages gathered, one padded MQA/GQA batch through ``attend``."""
    qf = q.float() * descale_q.float() if descale_q is not None else q
    keys = gather_pages(k_cache, block_table, cache_seqlens)
    if descale_k is not None or keys.dtype in FP8_DTYPES:
        keys = keys.float() * (descale_k.float() if descale_k is not None else 1.0)
    if qf.dtype != keys.dtype:
        qf, keys = qf.float(), keys.float()
    q_len = torch.full_like(cache_seqlens, q.shape[1])
    call = Call(qf, keys, keys[..., :head_dim_v], q_len, cache_seqlens, scale, Masking(causal=bool(causal)),
                want_lse=True, kv_own=True)  # fmt: skip
    o, lse = attend(call)
    return o, torch.where(torch.isneginf(lse), float("inf"), lse)


def flash_mla_sparse_fwd(q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None):
    """Sparse prefill: (out (s_q, h_q, d_v) bf16, max_logits (s_q, h_q), lse (s_q, h_q)), both in base 2."""
    if not q.device == kv.device == indices.device:  # as in flash_mla_with_kvcache
        raise ValueError(f"kv/indices are on {kv.device}/{indices.device} but q is on {q.device}")
    s_q, h_q, d_qk = q.shape
    s_kv = kv.shape[0]
    as_decode = (q.unsqueeze(1), kv.unsqueeze(0))  # one query a sequence; the tokens one page of one kv head
    if s_kv and mla_decode.fits(*as_decode, d_v, indices, False, capabilities.of(q.device)):
        # the MLA kernel's sparse mode over the bf16 tokens: sequence b is query b, its keys its index list
        o, lse, maxes = mla_decode.mla_decode(*as_decode, None, None, sm_scale, False, indices, topk_length, False,
                                              attn_sink, want_max=True)  # fmt: skip
        return o.view(s_q, h_q, d_v), maxes, lse[:, :, 0] * LOG2E
    idx = indices[:, 0]

    def scope_of(rows):
        bad = _invalid(idx[rows], None if topk_length is None else topk_length[rows], s_kv)
        return _tokens(kv[:, None], idx[rows], d_qk, None, bad), bad

    o, lse_sinkless, maxes = _sparse(q, scope_of, s_q, d_v, sm_scale, attn_sink, idx.shape[-1], torch.bfloat16)
    lse = torch.where(torch.isneginf(lse_sinkless), float("inf"), lse_sinkless * LOG2E)
    return o, maxes * LOG2E, lse
