"""FlashMLA ops: tile-scheduler metadata and decode over a paged latent cache (sglang-kernel 0.4.5's signatures)."""

# no `from __future__ import annotations`: the role annotations must stay objects
from dataclasses import replace

import torch

from accelbridge.ops import reference
from accelbridge.ops.cases import Case, Inputs
from accelbridge.ops.spec import Check, Data, Hint, Index, OpSpec, Option, Plan, PlanRelation


def get_mla_metadata(
    cache_seqlens: Index = None,
    num_q_tokens_per_head_k: Hint = None,
    num_heads_k: Hint = None,
    num_heads_q: Hint = None,
    is_fp8_kvcache: Hint = False,
    topk: Hint = None,
):
    """FlashMLA tile-scheduler metadata: ``(tile_scheduler_metadata, num_splits)``."""


def flash_mla_with_kvcache(
    q: Data,
    k_cache: Data,
    block_table: Index,
    cache_seqlens: Index,
    head_dim_v: Option,
    tile_scheduler_metadata: Plan,
    num_splits: Hint = None,
    softmax_scale: Option = None,
    causal: Option = False,
    descale_q: Data = None,
    descale_k: Data = None,
    is_fp8_kvcache: Option = False,
    indices: Index = None,
    attn_sink: Data = None,
    extra_k_cache: Data = None,
    extra_indices_in_kvcache: Index = None,
    topk_length: Index = None,
    extra_topk_length: Index = None,
):
    """FlashMLA decode over a paged latent cache (dense, or sparse with ``indices``): ``(out, lse)``."""


def _mla_values(a) -> None:
    from accelbridge.ops.flash_attn import _pages

    if a["indices"] is None:
        k_cache = a["k_cache"]
        _pages(a["block_table"], a["cache_seqlens"].tolist(), k_cache.shape[1], k_cache.shape[0], "block_table")


_SPARSE = "(None only in sparse mode, with indices)"
MLA_CHECKS = (
    Check("q", "q.dim() == 4", "{_shape(q)}", "a tensor (batch, seqlen_q, num_heads, head_dim)"),
    Check("q", "q.dtype in _F", "has dtype {q.dtype}", "a floating dtype (bf16, fp16, fp8)", what="dtype"),
    Check("k_cache", "k_cache.dim() == 4", "{_shape(k_cache)}",
          "a tensor (num_blocks, page_size, num_heads_k, head_dim)"),
    Check("k_cache", "is_fp8_kvcache or k_cache.dtype is q.dtype", "has dtype {k_cache.dtype} but q has {q.dtype}",
          "q's dtype (or is_fp8_kvcache=True)", what="dtype"),
    Check("k_cache", "k_cache.device == q.device", "is on {k_cache.device} but q is on {q.device}",
          "every tensor on q's device", what="device"),
    Check("q", "q.shape[2] % k_cache.shape[2] == 0", "has {q.shape[2]} heads and k_cache {k_cache.shape[2]}",
          "q heads to be a multiple of kv heads (MHA, GQA or MQA)"),
    Check("block_table", "block_table is not None or indices is not None", "is None",
          "an int32 tensor (batch, max_pages_per_seq) of block ids " + _SPARSE),
    Check("block_table", "block_table is None or (block_table.dtype is _I32 and block_table.dim() == 2)",
          "{_index(block_table)}", "an int32 tensor (batch, max_pages_per_seq) of block ids"),
    Check("cache_seqlens", "cache_seqlens is not None or indices is not None", "is None",
          "an int32 tensor (batch,) of cached lengths " + _SPARSE),
    Check("cache_seqlens", "cache_seqlens is None or (cache_seqlens.dtype is _I32 and cache_seqlens.dim() == 1)",
          "{_index(cache_seqlens)}", "an int32 tensor (batch,) of cached lengths"),
    Check("head_dim_v", "head_dim_v.__class__ is int and 0 < head_dim_v and "
                        "(is_fp8_kvcache or head_dim_v <= k_cache.shape[-1])",
          "is {head_dim_v!r}", "an int in (0, {k_cache.shape[-1]}] (V is the cache's first dims)"),
    Check("indices", "indices is None or (indices.dtype is _I32 and indices.dim() == 3)", "{_index(indices)}",
          "an int32 tensor (batch, seqlen_q, topk) of token positions (-1: none)"),
    Check("block_table", _mla_values, kind="values"),
)  # fmt: skip


def mla_cases(full: bool = False) -> list[Case]:
    c = Case("flashmla.kvcache", "decode", lens_q=(1, 1, 1), lens_k=(1, 100, 300), hq=16, hk=1, d=576, dv=512,
             page_size=64, causal=False, with_out=False)  # fmt: skip
    return [
        c,
        replace(c, name="heads128", hq=128),
        replace(c, name="mtp-causal", lens_q=(2, 2, 2), causal=True),
        replace(c, name="long", lens_q=(1, 1), lens_k=(1000, 4097)),
        replace(c, name="empty-seq", lens_k=(0, 100, 64)),
    ]


def mla_inputs(case: Case, inp: Inputs) -> dict:
    c = case
    q = inp.randn(len(c.lens_q), c.lens_q[0], c.hq, c.d)
    k_cache, table = inp.paged(c.lens_k or c.lens_q, c.hk, c.d)
    return {"q": q, "k_cache": k_cache, "block_table": table, "head_dim_v": c.dv, "causal": c.causal,
            "cache_seqlens": torch.tensor(c.lens_k, dtype=torch.int32, device=inp.dev)}  # fmt: skip


def mla_plan_args(a) -> dict:
    q, k_cache = a["q"], a["k_cache"]
    return {"cache_seqlens": a["cache_seqlens"], "num_q_tokens_per_head_k": q.shape[1] * q.shape[2] // k_cache.shape[2],
            "num_heads_k": k_cache.shape[2], "num_heads_q": q.shape[2], "is_fp8_kvcache": a["is_fp8_kvcache"],
            "topk": None if a["indices"] is None else a["indices"].shape[-1]}  # fmt: skip


MLA_PLAN = PlanRelation(
    "tile_scheduler_metadata",
    "flashmla.metadata",
    keys=(),
    producer_args=mla_plan_args,
    result_params=("tile_scheduler_metadata", "num_splits"),
)

SPECS = [
    OpSpec("flashmla.metadata", get_mla_metadata, features={}, reference=reference.get_mla_metadata),
    OpSpec("flashmla.kvcache", flash_mla_with_kvcache, checks=MLA_CHECKS, reference=reference.flash_mla_with_kvcache,
           plan=MLA_PLAN, cases=mla_cases, inputs=mla_inputs),
]  # fmt: skip
