"""Pure-torch reference attention, float32 accumulation, any device.

Each function declares exactly the canonical parameters it implements; the facade reads that
from its signature, so an argument the reference cannot honour routes elsewhere or raises
instead of being dropped. These functions are the oracle of every numerical test: written for
clarity (a loop over sequences), never for speed.

Semantics follow FlashAttention 3 (``hopper/test_util.py``'s attention_ref): masks align
bottom-right (query i sees key j <= i + Lk - Lq); ``qv`` adds qv.v to the scores with a default
scale of 1/sqrt(d + dv); FP8 inputs are dequantised with per-(sequence, kv-head) descales and
produce bf16; ``attention_chunk`` keeps keys within the query's chunk; rotary embeddings rotate
q and the appended k at ``rotary_seqlens`` (default ``cache_seqlens``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from accelbridge.ops.layout import dequantise, finish, gather_pages
from accelbridge.ops.softmax import LOG2E, softmax_shift
from accelbridge.ops.spec import FP8_DTYPES as _FP8_DTYPES
from accelbridge.ops.spec import out_dtype, window_tuple


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool = False,
    window_size: Any = (-1, -1),
    softcap: float = 0.0,
    sinks: torch.Tensor | None = None,
    qv: torch.Tensor | None = None,
    attention_chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence: q (Lq, Hq, D), k (Lk, Hk, D), v (Lk, Hk, Dv) -> out (Lq, Hq, Dv) float32, lse (Hq, Lq).

    Rows that see no key give zeros and lse -inf. ``sinks`` (Hq,) add a per-head logit to the
    softmax denominator only. ``qv`` (Lq, Hq, Dv) adds qv.v to the scores.
    """
    lq, hq = q.shape[0], q.shape[1]
    lk, hk = k.shape[0], k.shape[1]
    if hq % hk:
        raise ValueError(f"q has {hq} heads, not a multiple of k's {hk} heads")
    group = hq // hk
    qf, kf, vf = q.float(), k.float(), v.float()
    if group > 1:
        kf, vf = kf.repeat_interleave(group, dim=1), vf.repeat_interleave(group, dim=1)
    s = torch.einsum("qhd,khd->hqk", qf, kf)
    if qv is not None:
        s = s + torch.einsum("qhd,khd->hqk", qv.float(), vf)
    s = s * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    left, right = window_tuple(window_size)
    if causal:
        right = 0
    if left >= 0 or right >= 0 or attention_chunk:
        i = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        j = torch.arange(lk, device=q.device)[None, :]
        allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
        if left >= 0:
            allowed &= j >= i - left
        if right >= 0:
            allowed &= j <= i + right
        if attention_chunk:
            start = i - i % attention_chunk
            allowed &= (j >= start) & (j < start + attention_chunk)
        s = s.masked_fill(~allowed, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks.float()[:, None, None].expand(hq, lq, 1)], dim=-1)
    lse = torch.logsumexp(s, dim=-1)  # (Hq, Lq)
    finite = torch.isfinite(lse)
    p = torch.exp(s - softmax_shift(lse)[..., None])
    p = torch.where(finite[..., None], p, torch.zeros_like(p))[..., :lk]
    out = torch.einsum("hqk,khd->qhd", p, vf)
    return out, lse


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor, interleaved: bool):
    """Rotary embedding of x (L, H, D) at ``positions`` (L,): the first 2 * cos.shape[-1] channels turn."""
    half = cos.shape[-1]
    c = cos.float()[positions.long()][:, None, :]
    s = sin.float()[positions.long()][:, None, :]
    xf = x.float()
    rot = xf[..., : 2 * half]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        turned = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
    else:
        x1, x2 = rot[..., :half], rot[..., half:]
        turned = torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)
    return torch.cat([turned, xf[..., 2 * half :]], dim=-1)


def rotary_q_per_row(causal: Any, window_size: Any, attention_chunk: Any, seqlen_q: int, seqlen_k: int) -> bool:
    """Whether FA3 rotates each query row at its own position (else every row at the sequence's offset).

    FA3 does so for causal or local calls, ``attention_chunk`` counting as local, after it has
    normalised the window: a left side >= seqlen_k - 1 or a right side >= seqlen_q - 1 is no limit
    (seqlen_k: the cache's capacity; seqlen_q: q's length, max_seqlen_q when q is packed).
    """
    left, right = window_tuple(window_size)
    left = -1 if left >= seqlen_k - 1 else left
    right = -1 if right >= seqlen_q - 1 else right
    return bool(causal) or bool(attention_chunk) or left >= 0 or right >= 0


def _lengths(t: Any) -> list[int] | None:
    return None if t is None else [int(x) for x in t.tolist()]


def _gather_pages(cache: torch.Tensor, pages: torch.Tensor, length: int) -> torch.Tensor:
    """(num_blocks, page_size, H, D) + page ids of one sequence -> its first ``length`` rows."""
    return gather_pages(cache, pages[None], None, length)[0]  # a batch of one sequence


def _dequant(x: torch.Tensor, descale: Any, b: int, heads_k: int) -> torch.Tensor:
    """x (L, H, D) of sequence b, scaled by descale[b] per kv head (repeated over a GQA group for q)."""
    return dequantise(x, None if descale is None else descale[b], heads_k)


def default_scale(softmax_scale: Any, d: int, qv: Any) -> float:
    """FA3's default: 1/sqrt(d + dv) when qv is given, else 1/sqrt(d)."""
    if softmax_scale is not None:
        return softmax_scale
    return (d + (qv.shape[-1] if qv is not None else 0)) ** -0.5


def holds_no_key(k: torch.Tensor, k_new: Any = None) -> bool:
    """FA3 launches nothing when its key tensors hold no token at all (total_k + total_knew == 0, read
    from shapes): out is 0 and lse +inf for every row then, where a row without keys gets -inf."""
    tokens = k.shape[0] * (k.shape[1] if k.dim() == 4 else 1)
    return tokens == 0 and (k_new is None or k_new.numel() == 0)


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    seqused_q=None,
    seqused_k=None,
    page_table=None,
    softmax_scale=None,
    causal=False,
    qv=None,
    q_descale=None,
    k_descale=None,
    v_descale=None,
    window_size=(-1, -1),
    attention_chunk=0,
    softcap=0.0,
    return_softmax_lse=False,
    sinks=None,
    out=None,
):
    """Varlen attention: q (total_q, Hq, D); k/v (total_k, Hk, D) or paged (blocks, page, Hk, D)."""
    batch = cu_seqlens_q.numel() - 1
    total_q, hq, d = q.shape
    hk, dv = k.shape[-2], v.shape[-1]
    scale = default_scale(softmax_scale, d, qv)
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
        qb = _dequant(q[q0 : q0 + lq], q_descale, b, hk)
        qvb = None if qv is None else _dequant(qv[q0 : q0 + lq], q_descale, b, hk)
        kd, vd = _dequant(kb, k_descale, b, hk), _dequant(vb, v_descale, b, hk)
        ob, lb = attend(qb, kd, vd, scale, causal, window_size, softcap, sinks, qvb, attention_chunk or 0)
        o[q0 : q0 + lq] = ob
        lse[:, q0 : q0 + lq] = lb
    return finish(o, lse, q.dtype, out, return_softmax_lse, holds_no_key(k))


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
    """Decode/append attention over a contiguous (B, S, Hk, D) or paged cache.

    ``k``/``v`` (B, S_new, Hk, D), or packed (total_new, Hk, D) with ``cu_seqlens_k_new``, are
    rotated (with rotary) and written into the cache at ``cache_seqlens`` first, in place as FA3
    does; attention then covers keys ``cache_leftpad .. cache_seqlens + S_new``. With
    ``cu_seqlens_q`` q is packed (total_q, Hq, D) and so is the output.
    """
    packed_q = cu_seqlens_q is not None
    cu_q = _lengths(cu_seqlens_q)
    batch = len(cu_q) - 1 if packed_q else q.shape[0]
    hq, d = q.shape[-2], q.shape[-1]
    hk, dv = k_cache.shape[-2], v_cache.shape[-1]
    scale = default_scale(softmax_scale, d, qv)
    page_size = k_cache.shape[1]
    capacity = page_size if page_table is None else page_table.shape[1] * page_size
    if cache_seqlens is None:  # every sequence fills the cache row (FA3: the whole page-table row)
        seqlens = [capacity] * batch
    elif isinstance(cache_seqlens, int):
        seqlens = [cache_seqlens] * batch
    else:
        seqlens = _lengths(cache_seqlens)
    rows = _lengths(cache_batch_idx) or list(range(batch))
    pads = _lengths(cache_leftpad) or [0] * batch
    offsets = _lengths(rotary_seqlens) or seqlens
    cu_new = _lengths(cu_seqlens_k_new)
    o = torch.zeros(*q.shape[:-1], dv, dtype=torch.float32, device=q.device)
    lse_shape = (hq, q.shape[0]) if packed_q else (batch, hq, q.shape[1])
    lse = torch.full(lse_shape, float("-inf"), dtype=torch.float32, device=q.device)
    seqlen_q = max((y - x for x, y in zip(cu_q, cu_q[1:])), default=0) if packed_q else q.shape[1]
    per_row = rotary_q_per_row(causal, window_size, attention_chunk, seqlen_q, capacity)
    for b in range(batch):
        q_rows = slice(cu_q[b], cu_q[b + 1]) if packed_q else slice(None)
        qb = q[q_rows] if packed_q else q[b]
        qvb = None if qv is None else (qv[q_rows] if packed_q else qv[b])
        if k is None:
            kn = vn = None
        elif cu_new is not None:
            kn, vn = k[cu_new[b] : cu_new[b + 1]], v[cu_new[b] : cu_new[b + 1]]
        else:
            kn, vn = k[b], v[b]
        new = 0 if kn is None else kn.shape[0]
        start = seqlens[b]
        if rotary_cos is not None:
            rows_q = torch.arange(qb.shape[0])
            pos_q = (rows_q if per_row else torch.zeros_like(rows_q)).to(q.device)
            qb = rotate(qb, rotary_cos, rotary_sin, (pos_q + offsets[b]).to(q.device), rotary_interleaved)
            if qvb is not None:
                qvb = qvb.float()
            if kn is not None:
                pos_k = torch.arange(new, device=q.device) + offsets[b]
                kn = rotate(kn, rotary_cos, rotary_sin, pos_k, rotary_interleaved).to(k_cache.dtype)
        for t in range(new):
            pos = start + t
            if page_table is not None:
                block = int(page_table[rows[b], pos // page_size])
                k_cache[block, pos % page_size] = kn[t]
                v_cache[block, pos % page_size] = vn[t]
            else:
                k_cache[rows[b], pos] = kn[t]
                v_cache[rows[b], pos] = vn[t]
        length = start + new
        if page_table is not None:
            pages = page_table[rows[b]]
            kb, vb = _gather_pages(k_cache, pages, length), _gather_pages(v_cache, pages, length)
        else:
            kb, vb = k_cache[rows[b], :length], v_cache[rows[b], :length]
        kb, vb = kb[pads[b] :], vb[pads[b] :]
        qd = _dequant(qb, q_descale, b, hk)
        qvd = None if qvb is None else _dequant(qvb, q_descale, b, hk)
        kd, vd = _dequant(kb, k_descale, b, hk), _dequant(vb, v_descale, b, hk)
        ob, lb = attend(qd, kd, vd, scale, causal, window_size, softcap, sinks, qvd, attention_chunk or 0)
        if packed_q:
            o[q_rows], lse[:, q_rows] = ob, lb
        else:
            o[b], lse[b] = ob, lb
    return finish(o, lse, q.dtype, out, return_softmax_lse, holds_no_key(k_cache, k))


class MLAPlan:
    """What ``get_mla_metadata()`` hands out without arguments, as FlashMLA's ``FlashMLASchedMeta``: nothing is
    scheduled in it, but the facade freezes it to its first call's shapes like FlashMLA's, so reusing one plan
    across shapes is refused on every platform alike."""

    __slots__ = ("__weakref__",)

    def __repr__(self) -> str:
        return "MLAPlan()"


def get_mla_metadata(
    cache_seqlens=None,
    num_q_tokens_per_head_k=None,
    num_heads_k=None,
    num_heads_q=None,
    is_fp8_kvcache=False,
    topk=None,
):
    """The reference schedules nothing: ``(MLAPlan(), None)`` without arguments (a plan frozen on first use, as
    FlashMLA's), ``(None, None)`` with them; flash_mla_with_kvcache accepts either back."""
    return (MLAPlan() if cache_seqlens is None else None), None


# -- FlashMLA's sparse KV-cache layouts, read token by token ---------------------------------------------
# Every layout is a (num_blocks, block_size, 1, bytes per token) view; the bytes per token tell them apart
# but for 528, which two layouts share (see kv_layout).
# V32 (d_qk 576): per token 512 e4m3 (4 tiles of 128) + 4 float32 scales + 64 bf16 rope = 656 bytes.
# V32_NO_ROPE (d_qk 512): the V3.2 token without its rope: 512 e4m3 + 4 float32 scales = 528 bytes.
# V4 "MODEL1" (d_qk 512): per block, block_size rows of 448 e4m3 (7 tiles of 64) + 64 bf16 rope (576 bytes),
#   then block_size rows of 8 bytes (7 e8m0 scales + 1 pad); the block padded to a multiple of 576 bytes.
# V41 (d_qk 512): per block, block_size rows of 512 e4m3 (all dims, the rope's too; 16 tiles of 32), then
#   block_size rows of 16 e8m0 scales: 528 bytes a token; the block padded to a multiple of 512 bytes.
# V41_FP4 (d_qk 512, FlashMLA's extra cache of V4.1): per block, block_size rows of 256 bytes of e2m1 codes
#   (element 2i in the low nibble of byte i, 2i+1 in the high one), then block_size rows of 32 e4m3 scales
#   (tiles of 16): 288 bytes a token; the block padded to a multiple of 512 bytes.
V32_TOKEN_BYTES, MODEL1_ROW_BYTES, MODEL1_SCALE_BYTES = 656, 576, 8
V32_SCALES_AT, V32_ROPE_AT = 512, 528  # byte offsets in a V3.2 token: its 4 scales, then its rope
LAYOUT_BYTES = {"V32": 656, "V32_NO_ROPE": 528, "V4": 584, "V41": 528, "V41_FP4": 288}  # bytes per token
LAYOUT_D_QK = {"V32": 576, "V32_NO_ROPE": 512, "V4": 512, "V41": 512, "V41_FP4": 512}
KV_FORMATS = ("V32", "V32_NO_ROPE", "V4", "V41")  # the kv_format values (sglang-kernel 0.4.10's)
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # by the code's 3 low bits; bit 3 is the sign


def kv_layout(kv_format: str | None, d_qk: int, token_bytes: int, plan: Any = None) -> str | None:
    """The layout of a sparse cache with ``token_bytes`` bytes a token (the last dim of its view).

    288 bytes is V4.1's FP4 (an extra cache). Otherwise ``kv_format`` when given; when not, the rule of
    sglang-kernel 0.4.10: 528 bytes with d_qk 512 is V3.2-no-RoPE under tensor scheduler metadata (the API
    that predates V4.1) and V4.1 under a plan object (FlashMLASchedMeta) or none; other caches follow
    d_qk (576: V3.2, 512: V4). None: no layout (a mismatch the op's checks name).
    """
    if token_bytes == LAYOUT_BYTES["V41_FP4"]:
        return "V41_FP4"
    if kv_format is not None:
        return kv_format if kv_format in LAYOUT_BYTES else None
    if d_qk == 512 and token_bytes == 528:
        return "V32_NO_ROPE" if isinstance(plan, (torch.Tensor, tuple, list)) else "V41"
    return {576: "V32", 512: "V4"}.get(d_qk)


def _e4m3(raw: torch.Tensor) -> torch.Tensor:
    return raw.contiguous().view(torch.float8_e4m3fn).float()


def _bf16(raw: torch.Tensor) -> torch.Tensor:
    return raw.contiguous().view(torch.bfloat16).float()


def _as_bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


def e2m1(codes: torch.Tensor) -> torch.Tensor:
    """FP4 e2m1 codes (uint8, 0..15) -> float32 values."""
    magnitudes = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    values = magnitudes[(codes & 7).long()]
    return torch.where((codes & 8).bool(), -values, values)


def _block_rows(raw: torch.Tensor, block_size: int, at: int, width: int) -> torch.Tensor:
    """(num_blocks, block_size, width): the block's rows of ``width`` bytes starting at byte ``at`` of each block."""
    return raw[:, at : at + block_size * width].reshape(raw.shape[0], block_size, width)


def gather_fp8_tokens(cache: torch.Tensor, tokens: torch.Tensor, layout: str | int,
                      e4m3: Callable[[torch.Tensor], torch.Tensor] = _e4m3) -> torch.Tensor:  # fmt: skip
    """Dequantise only the cache rows ``tokens`` (flat ids block * block_size + offset) -> (n, d_qk) float32.

    ``layout``: one of ``LAYOUT_BYTES`` (or a d_qk, 576 or 512, for V3.2 or V4). ``e4m3`` turns e4m3 bytes
    (uint8) into their float32 values (torch's cast here; a provider may pass a faster decoder that gives
    the same values).

    ``cache`` is FlashMLA's (num_blocks, block_size, 1, bytes) view. Memory is O(len(tokens) * d_qk), never
    the whole cache. Each dequantised value is rounded to bf16, the operand the kernels multiply (FlashMLA's
    tests dequantise to bf16 too): with scales that are not powers of two the product is not exact.
    """
    layout = {576: "V32", 512: "V4"}.get(layout, layout)  # type: ignore[call-overload]
    num_blocks, block_size = cache.shape[0], cache.shape[1]
    raw = cache.view(torch.uint8).reshape(num_blocks, -1)  # each block's bytes (block stride kept)
    blocks, offsets = (tokens // block_size).long(), (tokens % block_size).long()
    if layout in ("V32", "V32_NO_ROPE"):
        width = LAYOUT_BYTES[layout]
        rows = _block_rows(raw, block_size, 0, width)[blocks, offsets]
        scales = rows[:, V32_SCALES_AT:V32_ROPE_AT].contiguous().view(torch.float32)  # (n, 4)
        nope = _as_bf16(e4m3(rows[:, :V32_SCALES_AT]).view(-1, 4, 128) * scales[:, :, None]).reshape(-1, 512)
        return torch.cat([nope, _bf16(rows[:, V32_ROPE_AT:V32_TOKEN_BYTES])], dim=-1) if layout == "V32" else nope
    if layout == "V4":
        rows = _block_rows(raw, block_size, 0, MODEL1_ROW_BYTES)[blocks, offsets]
        e8m0 = _block_rows(raw, block_size, block_size * MODEL1_ROW_BYTES, MODEL1_SCALE_BYTES)[blocks, offsets, :7]
        scales = torch.exp2(e8m0.float() - 127.0)  # e8m0: a power of two, 2**(byte - 127)
        nope = _as_bf16(e4m3(rows[:, :448]).view(-1, 7, 64) * scales[:, :, None])
        return torch.cat([nope.reshape(-1, 448), _bf16(rows[:, 448:576])], dim=-1)
    if layout == "V41":
        rows = _block_rows(raw, block_size, 0, 512)[blocks, offsets]
        e8m0 = _block_rows(raw, block_size, block_size * 512, 16)[blocks, offsets]
        scales = torch.exp2(e8m0.float() - 127.0)
        return _as_bf16(e4m3(rows).view(-1, 16, 32) * scales[:, :, None]).reshape(-1, 512)
    if layout == "V41_FP4":
        packed = _block_rows(raw, block_size, 0, 256)[blocks, offsets]
        scales = e4m3(_block_rows(raw, block_size, block_size * 256, 32)[blocks, offsets])  # (n, 32)
        codes = torch.stack([packed & 15, packed >> 4], dim=-1).reshape(-1, 32, 16)
        return _as_bf16(e2m1(codes) * scales[:, :, None]).reshape(-1, 512)
    raise ValueError(f"no sparse KV-cache layout {layout!r}; layouts: {', '.join(LAYOUT_BYTES)}")


def _sparse_scope(cache, indices, topk_length, b: int, d_qk: int, layout: str | None):
    """One cache's indexed keys for sequence b: (s_q, topk, d_qk) float32 and its invalid mask."""
    idx = indices[b].long()  # (s_q, topk)
    tokens = cache.shape[0] * cache.shape[1]
    invalid = (idx < 0) | (idx >= tokens)  # -1, or any position past the cache: no key
    if topk_length is not None:
        invalid |= torch.arange(idx.shape[-1], device=idx.device)[None, :] >= int(topk_length[b])
    flat = idx.clamp(0, max(tokens - 1, 0)).flatten()
    if layout is not None:
        keys = gather_fp8_tokens(cache, flat, layout)
    else:
        keys = cache.reshape(-1, cache.shape[-1])[flat].float()
    keys = keys.view(*idx.shape, d_qk)
    return torch.nan_to_num(keys, nan=0.0), invalid


def _mla_finish(scores, values, sink=None):
    """Softmax over the last dim with FlashMLA's conventions: lonely queries give out 0 and lse +inf."""
    lse = torch.logsumexp(scores, dim=-1)  # (..., h_q)
    p = torch.exp(scores - softmax_shift(lse)[..., None])
    out = p @ values
    if sink is not None:
        out = out * torch.sigmoid(lse - sink.float())[..., None]  # 1 / (1 + exp(sink - lse))
    lonely = torch.isneginf(lse)
    out = torch.where(lonely[..., None], torch.zeros_like(out), out)
    return out, torch.where(lonely, torch.full_like(lse, float("inf")), lse)


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
    descale_q=None,
    descale_k=None,
    is_fp8_kvcache=False,
    indices=None,
    attn_sink=None,
    extra_k_cache=None,
    extra_indices_in_kvcache=None,
    topk_length=None,
    extra_topk_length=None,
    kv_format=None,
):
    """FlashMLA decode: q (B, Sq, Hq, D) against a paged latent cache; V is the cache's first ``head_dim_v`` dims.

    Dense (``indices`` None): block_table/cache_seqlens pick each sequence's keys; FP8 q and cache are
    dequantised with the scalar ``descale_q``/``descale_k``. Sparse (``indices`` (B, Sq, topk)
    positions, -1 invalid; FP8 cache in one of FlashMLA's layouts, named by ``kv_format`` or told by
    ``kv_layout``'s rule, an extra cache's its own): only the indexed tokens are gathered,
    ``topk_length`` cuts each sequence's list, an ``extra_k_cache`` adds a second list, ``attn_sink``
    scales out by 1/(1+exp(sink-lse)). Returns (out (B, Sq, Hq, Dv), lse (B, Hq, Sq)); a query that
    sees no key gives out 0 and lse +inf, as FlashMLA's kernels do.
    """
    batch, sq, hq, d = q.shape
    scale = softmax_scale if softmax_scale is not None else d**-0.5
    o = torch.zeros(batch, sq, hq, head_dim_v, dtype=torch.float32, device=q.device)
    lse = torch.full((batch, hq, sq), float("inf"), dtype=torch.float32, device=q.device)
    qf = q.float() * (descale_q.float() if descale_q is not None else 1.0)
    if indices is not None:
        layouts = [kv_layout(kv_format, d, c.shape[-1], tile_scheduler_metadata) if is_fp8_kvcache else None
                   for c in (k_cache, k_cache if extra_k_cache is None else extra_k_cache)]  # fmt: skip
        for b in range(batch):
            keys, invalid = _sparse_scope(k_cache, indices, topk_length, b, d, layouts[0])
            if extra_k_cache is not None:
                k2, inv2 = _sparse_scope(extra_k_cache, extra_indices_in_kvcache, extra_topk_length, b, d,
                                         layouts[1])  # fmt: skip
                keys, invalid = torch.cat([keys, k2], dim=1), torch.cat([invalid, inv2], dim=1)
            scores = torch.einsum("shd,std->sht", qf[b], keys) * scale  # (sq, hq, topk)
            scores = scores.masked_fill(invalid[:, None, :], float("-inf"))
            ob, lb = _mla_finish(scores, keys[..., :head_dim_v], attn_sink)
            o[b], lse[b] = ob, lb.transpose(0, 1)
        return o.to(torch.bfloat16 if q.dtype in _FP8_DTYPES else q.dtype), lse
    dk = descale_k.float() if descale_k is not None else 1.0
    for b, length in enumerate(_lengths(cache_seqlens)):
        kb = _gather_pages(k_cache, block_table[b], length).float() * dk
        ob, lb = attend(qf[b], kb, kb[..., :head_dim_v], scale, causal)
        o[b], lse[b] = ob, torch.where(torch.isneginf(lb), float("inf"), lb)
    return o.to(out_dtype(q.dtype)), lse


def flash_mla_sparse_fwd(q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None):
    """Sparse prefill: q (s_q, h_q, d_qk), kv (s_kv, 1, d_qk) bf16, indices (s_q, 1, topk) rows of kv (-1 invalid).

    Returns (out (s_q, h_q, d_v) bf16, max_logits (s_q, h_q), lse (s_q, h_q)); max_logits and lse are in
    base-2 units (scores times log2(e)), as sgl-kernel 0.4.5's FlashMLA returns them (seen on an H200);
    ``attn_sink`` (h_q,) joins the softmax denominator of out only; a query with no valid key gives
    out 0, lse +inf.
    """
    s_q, h_q, d_qk = q.shape
    s_kv = kv.shape[0]
    if s_kv == 0:  # no key at all: every query is lonely
        kv = torch.zeros(1, *kv.shape[1:], dtype=kv.dtype, device=kv.device)
    out = torch.zeros(s_q, h_q, d_v, dtype=torch.float32, device=q.device)
    max_logits = torch.full((s_q, h_q), float("-inf"), dtype=torch.float32, device=q.device)
    lse = torch.full((s_q, h_q), float("inf"), dtype=torch.float32, device=q.device)
    flat_kv = kv[:, 0]
    chunk = 64  # queries per step: memory O(chunk * topk * d_qk)
    for start in range(0, s_q, chunk):
        rows = slice(start, min(start + chunk, s_q))
        idx = indices[rows, 0].long()  # (c, topk)
        invalid = (idx < 0) | (idx >= s_kv)
        if topk_length is not None:
            invalid |= torch.arange(idx.shape[-1], device=idx.device)[None, :] >= topk_length[rows].long()[:, None]
        keys = flat_kv[idx.clamp(0, max(s_kv - 1, 0))].float()  # (c, topk, d_qk)
        scores = torch.einsum("chd,ctd->cht", q[rows].float(), keys) * sm_scale
        scores = scores.masked_fill(invalid[:, None, :], float("-inf"))
        orig_lse = torch.logsumexp(scores, dim=-1)
        max_logits[rows] = scores.max(dim=-1).values * LOG2E
        lse_for_o = orig_lse if attn_sink is None else torch.logaddexp(orig_lse, attn_sink.float()[None, :])
        lse_for_o = torch.where(torch.isneginf(lse_for_o), float("inf"), lse_for_o)
        out[rows] = torch.exp(scores - lse_for_o[..., None]) @ keys[..., :d_v]
        lse[rows] = torch.where(torch.isneginf(orig_lse), float("inf"), orig_lse * LOG2E)
    return out.to(torch.bfloat16), max_logits, lse
