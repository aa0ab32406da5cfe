"""Ops served by a provider function of another shape: a wrapper with the canonical names, built at bind time.

``mla-decode-via-csr``: FlashMLA's paged decode served by an MLA kernel that takes CSR page indices
and writes ``o`` in place (``aiter.mla.mla_decode_fwd``). The block table and cache lengths become
``qo_indptr / kv_indptr / kv_indices / kv_last_page_lens`` with device-side tensor ops only (no
host sync, CUDA-graph safe): each sequence's used pages are scattered into a buffer sized for the
whole table, entries past a sequence's pages going to one spare slot the kernel never reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from accelbridge.ops.spec import out_dtype


def csr_pages(block_table: torch.Tensor, cache_seqlens: torch.Tensor, page_size: int):
    """(kv_indptr, kv_indices, kv_last_page_lens) of a block table, computed on its device without a sync."""
    batch, width = block_table.shape
    dev = block_table.device
    pages = (cache_seqlens + page_size - 1) // page_size
    kv_indptr = torch.zeros(batch + 1, dtype=torch.int32, device=dev)
    kv_indptr[1:] = torch.cumsum(pages, 0)
    col = torch.arange(width, device=dev)
    spare = batch * width
    slots = torch.where(col[None, :] < pages[:, None], kv_indptr[:-1, None] + col[None, :], spare)
    kv_indices = torch.zeros(spare + 1, dtype=torch.int32, device=dev)
    kv_indices.scatter_(0, slots.reshape(-1).long(), block_table.reshape(-1).to(torch.int32))
    last = (cache_seqlens - (pages - 1).clamp_min(0) * page_size).to(torch.int32)
    return kv_indptr, kv_indices, last


def mla_decode_via_csr(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A ``flash_mla_with_kvcache``-shaped function calling ``fn`` (aiter's mla_decode_fwd) by keyword."""

    def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, softmax_scale=None,
                               descale_q=None, descale_k=None, is_fp8_kvcache=False):  # fmt: skip
        batch, s_q, h_q, d = q.shape
        kv_indptr, kv_indices, last = csr_pages(block_table, cache_seqlens, k_cache.shape[1])
        qo_indptr = torch.arange(0, (batch + 1) * s_q, s_q, dtype=torch.int32, device=q.device)
        o = torch.empty(batch * s_q, h_q, head_dim_v, dtype=out_dtype(q.dtype), device=q.device)
        _, lse = fn(q=q.reshape(batch * s_q, h_q, d), kv_buffer=k_cache, o=o, qo_indptr=qo_indptr,
                    kv_indptr=kv_indptr, kv_indices=kv_indices, kv_last_page_lens=last, max_seqlen_q=s_q,
                    sm_scale=softmax_scale, q_scale=descale_q, kv_scale=descale_k)  # fmt: skip
        return o.view(batch, s_q, h_q, head_dim_v), lse.reshape(batch, s_q, h_q).transpose(1, 2)

    flash_mla_with_kvcache.__wrapped_provider__ = fn  # type: ignore[attr-defined]
    return flash_mla_with_kvcache


WRAPPERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {"mla-decode-via-csr": mla_decode_via_csr}
