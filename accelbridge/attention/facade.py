"""The engine's unified attention interface, resolved against the current platform.

Signatures are sglang-kernel 0.4.5's (``sgl_kernel.flash_attn`` / ``sgl_kernel.flash_mla``),
so ``from accelbridge.attention import flash_attn_varlen_func`` is a drop-in. The
steady-state call is a dict lookup plus the provider's generated adapter.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import torch

from accelbridge import platforms
from accelbridge.attention import checks as _checks
from accelbridge.attention import metadata as _metadata
from accelbridge.attention.errors import ResolutionError
from accelbridge.attention.resolver import Chain, Resolution, describe, feature_values
from accelbridge.kernels_catalog import OP_IDS, OPS

_VARLEN: dict[Any, Callable[..., Any]] = {}  # ver -> adapter
_KVCACHE: dict[Any, Callable[..., Any]] = {}
_SINGLE: dict[str, Callable[..., Any]] = {}  # op -> adapter, for the metadata and MLA ops
_chains: dict[str, Chain] = {}
_lock = threading.RLock()


def reset() -> None:
    """Forget every resolution (after changing env vars or catalogs); the next call resolves anew."""
    with _lock:
        _VARLEN.clear()
        _KVCACHE.clear()
        _SINGLE.clear()
        _chains.clear()
        _checks.set_level()


platforms.on_change(reset)


def _canonical(op: str) -> inspect.Signature:
    sig = inspect.signature(globals()[OPS[op].facade])
    return sig.replace(parameters=[p for n, p in sig.parameters.items() if n != "ver"])


def chain(op: str) -> Chain:
    """The (cached) candidate chain of ``op`` on the current platform."""
    if op not in OPS:
        raise ResolutionError(f"unknown op {op!r}; valid: {', '.join(OP_IDS)}")
    with _lock:
        c = _chains.get(op)
        if c is None:
            checker = _metadata.checker if OPS[op].facade == "flash_attn_with_kvcache" else None
            c = _chains[op] = Chain(op, platforms.current(), _canonical(op), checker)
        return c


def _impl_for(table: dict[Any, Callable[..., Any]], key: Any, op: str) -> Callable[..., Any]:
    with _lock:
        fn = table.get(key)
        if fn is None:
            fn = table[key] = chain(op).impl()
        return fn


def _ver_op(ver: Any, kind: str) -> str:
    if ver not in (3, 4) or isinstance(ver, bool):
        raise ValueError(f"ver must be 3 or 4 (selects the fa3.* or fa4.* ops), got {ver!r}")
    return f"fa{int(ver)}.{kind}"


def resolve(op: str, **features: Any) -> Resolution:
    """Which provider serves ``op`` here for a call with these features, and every candidate's reasons.

    Features: ``dtype`` (torch dtype or name like "bf16"), ``head_dim``, or canonical argument
    names meaning "the call passes this" (``sinks=True``, ``qv=True``).
    """
    c = chain(op)
    return describe(c, feature_values(op, features))


def explain(op: str, **features: Any) -> str:
    """A readable account of ``resolve(op)``: each candidate, viable or with its reasons."""
    r = resolve(op, **features)
    p = platforms.current()
    sim = f" (simulated {getattr(p, 'spec', '')})" if p.simulated else ""
    lines = [f"{r.op} on {r.platform} {r.arch}{sim}: " + (f"selected {r.selected}" if r.selected else "NO provider")]
    for n, row in enumerate(r.candidates, 1):
        status = "viable" if row["viable"] else "not viable"
        lines.append(f"  {n}. {row['provider']:<14} {status}  {row.get('source', '')}".rstrip())
        for reason in row["reasons"]:
            lines.append(f"       - {reason}")
        for note in row.get("adapts", []):
            lines.append(f"       adapts: {note}")
    lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines)


# -- the canonical functions ------------------------------------------------------------------
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
    num_splits=1,
    pack_gqa=None,
    only_qv=False,
    sm_margin=0,
    return_softmax_lse=False,
    sinks=None,
    score_mod=None,
    aux_tensors=None,
    ver=3,
    out=None,
):
    """Varlen attention (FA3 with ver=3, FA4 with ver=4): ``out``, or ``(out, lse, ...)``."""
    try:
        fn = _VARLEN[ver]
    except (KeyError, TypeError):
        fn = _impl_for(_VARLEN, ver, _ver_op(ver, "varlen"))
    if _checks.cheap_on:
        _checks.varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_k, page_table, out)
    return fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table,
              softmax_scale, causal, qv, q_descale, k_descale, v_descale, window_size, attention_chunk, softcap,
              num_splits, pack_gqa, only_qv, sm_margin, return_softmax_lse, sinks, score_mod, aux_tensors,
              out)  # fmt: skip


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
    scheduler_metadata=None,
    num_splits=0,
    pack_gqa=None,
    only_qv=False,
    sm_margin=0,
    return_softmax_lse=False,
    sinks=None,
    score_mod=None,
    aux_tensors=None,
    ver=3,
    out=None,
):
    """Decode / append attention over a (paged) KV cache: ``out``, or ``(out, lse, ...)``."""
    try:
        fn = _KVCACHE[ver]
    except (KeyError, TypeError):
        fn = _impl_for(_KVCACHE, ver, _ver_op(ver, "kvcache"))
    if _checks.cheap_on:
        _checks.kvcache(q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, page_table, out)
    return fn(q, k_cache, v_cache, k, v, qv, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
              page_table, cu_seqlens_q, cu_seqlens_k_new, max_seqlen_q, rotary_seqlens, q_descale, k_descale,
              v_descale, softmax_scale, causal, window_size, attention_chunk, softcap, rotary_interleaved,
              scheduler_metadata, num_splits, pack_gqa, only_qv, sm_margin, return_softmax_lse, sinks, score_mod,
              aux_tensors, out)  # fmt: skip


def get_scheduler_metadata(
    batch_size,
    max_seqlen_q,
    max_seqlen_k,
    num_heads,
    num_heads_k,
    headdim,
    cache_seqlens,
    qkv_dtype=torch.bfloat16,
    headdim_v=None,
    cu_seqlens_q=None,
    cu_seqlens_k=None,
    cu_seqlens_k_new=None,
    seqused_q=None,
    leftpad_k=None,
    page_size=None,
    max_seqlen_k_new=0,
    causal=False,
    window_size=(-1, -1),
    attention_chunk=0,
    has_softcap=False,
    num_splits=0,
    pack_gqa=None,
    sm_margin=0,
):
    """FA3 scheduler metadata from the resolved provider, or None where it plans nothing.

    Compute it once per batch and pass it to every layer's ``flash_attn_with_kvcache``; the
    facade refuses it for a call with other num_splits/causal/window_size/pack_gqa.
    """
    try:
        fn = _SINGLE["fa3.scheduler_metadata"]
    except KeyError:
        fn = _impl_for(_SINGLE, "fa3.scheduler_metadata", "fa3.scheduler_metadata")
    result = fn(batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim, cache_seqlens, qkv_dtype,
                headdim_v, cu_seqlens_q, cu_seqlens_k, cu_seqlens_k_new, seqused_q, leftpad_k, page_size,
                max_seqlen_k_new, causal, window_size, attention_chunk, has_softcap, num_splits, pack_gqa,
                sm_margin)  # fmt: skip
    if result is not None:
        selected = chain("fa3.scheduler_metadata").first_viable()
        pid = selected.provider_id if selected else "?"
        _metadata.record(result, pid, num_splits, causal, window_size, pack_gqa)
    return result


def get_mla_metadata(
    cache_seqlens=None,
    num_q_tokens_per_head_k=None,
    num_heads_k=None,
    num_heads_q=None,
    is_fp8_kvcache=False,
    topk=None,
):
    """FlashMLA tile-scheduler metadata: ``(tile_scheduler_metadata, num_splits)``."""
    try:
        fn = _SINGLE["flashmla.metadata"]
    except KeyError:
        fn = _impl_for(_SINGLE, "flashmla.metadata", "flashmla.metadata")
    return fn(cache_seqlens, num_q_tokens_per_head_k, num_heads_k, num_heads_q, is_fp8_kvcache, topk)


def flash_mla_with_kvcache(
    q,
    k_cache,
    block_table,
    cache_seqlens,
    head_dim_v,
    tile_scheduler_metadata,
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
):
    """FlashMLA decode over a paged latent cache: ``(out, lse)``."""
    try:
        fn = _SINGLE["flashmla.kvcache"]
    except KeyError:
        fn = _impl_for(_SINGLE, "flashmla.kvcache", "flashmla.kvcache")
    if _checks.cheap_on:
        _checks.mla(q, k_cache, block_table, cache_seqlens, head_dim_v, is_fp8_kvcache)
    return fn(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits, softmax_scale,
              causal, descale_q, descale_k, is_fp8_kvcache, indices, attn_sink, extra_k_cache,
              extra_indices_in_kvcache, topk_length, extra_topk_length)  # fmt: skip
