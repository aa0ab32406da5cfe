"""fa3/fa4 varlen through torch: its varlen API where the device has it, else one padded batch.

Paths, first that fits the call:
0. where Triton runs: self-attention over a batch of (nearly) one length as one dense SDPA batch
   (``dense``: cuDNN's kernel on a GPU, over views of the rows where there are exactly batch x L),
   else the Triton prefill kernel (``prefill``): packed or paged keys, GQA, causal, windows, softcap,
   sinks, lse, seqused_q/k; not qv, FP8 or chunks;
1. ``torch.nn.attention.varlen.varlen_attn`` (torch's FlashAttention 2) when this torch build
   has it on q's device and every argument of the call maps onto what it offers here (GQA,
   windows, seqused_k, paging and LSE arrived in different torch releases);
2. self-attention prefill (``cu_seqlens_k is cu_seqlens_q``, causal, no window): padded SDPA
   with ``is_causal`` (its flash kernels; padding rows never reach a real query);
3. padded SDPA with a mask, or explicit float32 scores for lse/softcap/sinks/qv/FP8.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from accelbridge.ops.layout import dequantise, finish, gather_pages
from accelbridge.ops.reference import default_scale, holds_no_key
from accelbridge.ops.spec import FP8_DTYPES
from accelbridge.torch_attention import capabilities, dense, prefill
from accelbridge.torch_attention.core import Call, Masking, attend
from accelbridge.torch_attention.layout import lengths, longest, pad, unpad

_FA2_DTYPES = (torch.float16, torch.bfloat16)


def _torch_varlen(q, k, v, cu_q, cu_k, max_q, max_k, seqused_k, page_table, scale, mask: Masking, want_lse):
    """torch's varlen_attn when the device and this call allow it, else None."""
    caps = capabilities.of(q.device)
    if not caps.has_varlen or q.dtype not in _FA2_DTYPES or q.shape[-1] != v.shape[-1] or q.shape[-1] % 8:
        return None
    if max_q is None or max_k is None or mask.chunk:
        return None
    need = set()
    if q.shape[1] != k.shape[-2]:
        need.add("enable_gqa")
    if mask.window != (-1, -1) or mask.causal:
        need.add("window_size")
    if seqused_k is not None:
        need.add("seqused_k")
    if page_table is not None:
        need.add("block_table")
    if want_lse:
        need.add("return_aux")
    if not need <= caps.varlen:
        return None
    from torch.nn.attention import varlen

    kw: dict[str, Any] = {"scale": scale}
    if "window_size" in need:
        left, right = mask.limits
        kw["window_size"] = (left, right)
    if "enable_gqa" in need:
        kw["enable_gqa"] = True
    if seqused_k is not None:
        kw["seqused_k"] = seqused_k
    if page_table is not None:
        kw["block_table"] = page_table
    if want_lse:
        kw["return_aux"] = varlen.AuxRequest(lse=True)
    result = varlen.varlen_attn(q, k, v, cu_q, cu_k, int(max_q), int(max_k), **kw)
    if not want_lse:
        return result, None
    o, lse = result
    return o, (lse if lse.shape[0] == q.shape[1] else lse.transpose(0, 1))


def _self_attention(q, k, v, cu, max_len, scale, hk) -> torch.Tensor:
    """Causal prefill with equal q/k lengths: padded SDPA with is_causal (no mask, flash kernels)."""
    # (B, H, L, D) contiguous: cuDNN's SDPA takes GQA in this layout only (H200, torch 2.11: 614 TFLOP/s
    # against 324 for the flash kernel it falls back to with strided views)
    qp, kp, vp = (pad(x, cu, max_len).transpose(1, 2).contiguous() for x in (q, k, v))
    group = q.shape[1] // hk
    if group > 1 and capabilities.of(q.device).sdpa_gqa:
        o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale, enable_gqa=True)
    else:
        kp, vp = kp.repeat_interleave(group, dim=1), vp.repeat_interleave(group, dim=1)
        o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=scale)
    return unpad(o.transpose(1, 2), cu, lengths(cu), q.shape[0], 0.0)


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
    """Varlen attention, vectorised over the batch (see the module docstring for the paths)."""
    total_q, hq, d = q.shape
    hk = k.shape[-2]
    if holds_no_key(k):  # FA3 launches nothing: out 0, lse +inf
        o = torch.zeros(total_q, hq, v.shape[-1], dtype=torch.float32, device=q.device)
        lse = torch.full((hq, total_q), float("inf"), dtype=torch.float32, device=q.device)
        return finish(o, lse, q.dtype, out, return_softmax_lse)
    scale = default_scale(softmax_scale, d, qv)
    mask = Masking.of(causal, window_size, attention_chunk)
    caps = capabilities.of(q.device)
    extras = qv is not None or q_descale is not None or k_descale is not None or v_descale is not None
    if (not extras and not softcap and sinks is None and seqused_q is None and seqused_k is None and page_table is None
            and not return_softmax_lse
            and dense.fits(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, mask, caps)):  # fmt: skip
        o = dense.self_attention(q, k, v, cu_seqlens_q, max_seqlen_q, scale, mask.causal, caps, out)
        return finish(o, None, q.dtype, out, False)
    if not extras and prefill.fits(q, k, v, max_seqlen_q, mask, caps):
        o, lse = prefill.prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, seqused_q, seqused_k, page_table,
                                 scale, mask, softcap, sinks, return_softmax_lse, out)  # fmt: skip
        return finish(o, lse, q.dtype, out, return_softmax_lse)
    plain = qv is None and not softcap and sinks is None and q.dtype not in FP8_DTYPES and seqused_q is None
    if plain:
        fast = _torch_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_k, page_table,
                             scale, mask, return_softmax_lse)  # fmt: skip
        if fast is not None:
            return finish(fast[0], fast[1], q.dtype, out, return_softmax_lse)
        if (cu_seqlens_k is cu_seqlens_q and mask == Masking(causal=True) and page_table is None
                and seqused_k is None and not return_softmax_lse and q.shape[0] == k.shape[0]):  # fmt: skip
            o = _self_attention(q, k, v, cu_seqlens_q, longest(max_seqlen_q, lengths(cu_seqlens_q)), scale, hk)
            return finish(o, None, q.dtype, out, False)
    batch = cu_seqlens_q.shape[0] - 1
    q_len = seqused_q if seqused_q is not None else lengths(cu_seqlens_q)
    lq = longest(max_seqlen_q, lengths(cu_seqlens_q))
    if page_table is not None:
        k_len = seqused_k
        lk = page_table.shape[1] * k.shape[1] if max_seqlen_k is None else int(max_seqlen_k)
        kp, vp = gather_pages(k, page_table, seqused_k, lk), gather_pages(v, page_table, seqused_k, lk)
    else:
        k_len = seqused_k if seqused_k is not None else lengths(cu_seqlens_k)
        lk = longest(max_seqlen_k, lengths(cu_seqlens_k))
        kp, vp = pad(k, cu_seqlens_k, lk), pad(v, cu_seqlens_k, lk)
    dv = v.shape[-1]
    if batch == 0 or lq == 0 or total_q == 0:
        o = torch.zeros(total_q, hq, dv, dtype=torch.float32, device=q.device)
        lse = torch.full((hq, total_q), float("-inf"), dtype=torch.float32, device=q.device)
        return finish(o, lse, q.dtype, out, return_softmax_lse)
    qp = dequantise(pad(q, cu_seqlens_q, lq), q_descale, hk)
    qvp = None if qv is None else dequantise(pad(qv, cu_seqlens_q, lq), q_descale, hk)
    call = Call(qp, dequantise(kp, k_descale, hk), dequantise(vp, v_descale, hk), q_len, k_len, scale, mask,
                softcap=softcap or 0.0, sinks=sinks, qv=qvp, want_lse=return_softmax_lse, kv_own=True)  # fmt: skip
    o, lse = attend(call)
    o = unpad(o, cu_seqlens_q, q_len, total_q, 0.0)
    if lse is not None:
        lse = unpad(lse.transpose(1, 2), cu_seqlens_q, q_len, total_q, float("-inf")).transpose(0, 1)
    return finish(o, lse, q.dtype, out, return_softmax_lse)
