"""FlashMLA ops: tile-scheduler metadata, decode (dense, FP8, sparse FP8) and sparse prefill (sglang-kernel 0.4.10).

sglang-kernel 0.4.10 added ``kv_format`` (the sparse cache's layout) as the last parameter of
``flash_mla_with_kvcache``; 0.4.5 has no such parameter and reads the layout from q's head dim. Its inert
value says when a call asks for nothing 0.4.5 cannot do: a V3.2 or V4 cache (and no FP4 extra cache).

Sparse mode (DeepSeek V3.2 / V4) takes token positions from ``indices``: ``block_table`` and
``cache_seqlens`` are None by design and inert then. Any index outside the cache (-1, or a value
past its last token: sgl-kernel's docstring, FlashMLA's tests use 2147480000 and negatives) marks
"no key", so no check refuses it: the providers mask it.
"""

# no `from __future__ import annotations`: the role annotations must stay objects

from accelbridge.ops import reference
from accelbridge.ops.flash_mla_cases import mla_cases, mla_inputs, prefill_cases, prefill_inputs
from accelbridge.ops.spec import (
    EXPRESSION_ENV,
    Check,
    Data,
    Hint,
    Index,
    OpSpec,
    Option,
    Plan,
    PlanRelation,
    fail,
    on_q_device,
)

# a sparse call whose caches are V3.2 (d_qk 576) or V4 (584 bytes a token), the layouts q's head dim told apart
# before kv_format existed, asks nothing of kv_format
_KV_FORMAT_INERT = (
    "indices is None or ((kv_format in ('V32', 'V4') or (kv_format is None and "
    "(q.shape[-1] == 576 or k_cache.shape[-1] == 584))) and (extra_k_cache is None or extra_k_cache.shape[-1] != 288))"
)


def kv_layout_of(kv_format, q, cache, plan=None):
    """The layout of a sparse ``cache`` read with q and ``kv_format`` (``reference.kv_layout``'s rule), or None
    where its bytes per token or q's head dim do not fit that layout."""
    layout = reference.kv_layout(kv_format, q.shape[-1], cache.shape[-1], plan)
    fits = layout is not None and reference.LAYOUT_BYTES[layout] == cache.shape[-1]
    return layout if fits and reference.LAYOUT_D_QK[layout] == q.shape[-1] else None


EXPRESSION_ENV["_kv_layout"] = kv_layout_of  # declarations and catalog conditions read a call's layout with it


def get_mla_metadata(
    cache_seqlens: Index = None,
    num_q_tokens_per_head_k: Hint = None,
    num_heads_k: Hint = None,
    num_heads_q: Hint = None,
    is_fp8_kvcache: Hint = False,
    topk: Hint = None,
):
    """FlashMLA tile-scheduler metadata, ``(metadata, num_splits)``; without arguments a plan made on first use."""


def flash_mla_with_kvcache(
    q: Data,
    k_cache: Data,
    block_table: Index,
    cache_seqlens: Index,
    head_dim_v: Option(schema="SymInt"),
    tile_scheduler_metadata: Plan,
    num_splits: Hint(schema="Tensor?") = None,
    softmax_scale: Option(schema="float?") = None,
    causal: Option("not causal or q.shape[1] == 1") = False,  # one query per sequence: nothing to mask
    descale_q: Data = None,
    descale_k: Data = None,
    is_fp8_kvcache: Option = False,
    indices: Index = None,
    attn_sink: Data = None,
    extra_k_cache: Data = None,
    extra_indices_in_kvcache: Index = None,
    topk_length: Index = None,
    extra_topk_length: Index = None,
    kv_format: Option(_KV_FORMAT_INERT, schema="str?") = None,
):
    """FlashMLA decode over a paged latent cache (dense, or sparse with ``indices``): ``(out, lse)``."""


def flash_mla_sparse_fwd(
    q: Data,
    kv: Data,
    indices: Index,
    sm_scale: Option(schema="float"),
    d_v: Option = 512,
    attn_sink: Data = None,
    topk_length: Index = None,
):
    """FlashMLA sparse prefill: ``(out, max_logits, lse)`` over the kv rows each query's ``indices`` name."""


def _mla_values(a) -> None:
    from accelbridge.ops.flash_attn import _pages

    for name in ("cache_seqlens", "topk_length", "extra_topk_length"):
        lengths = [] if a[name] is None else a[name].tolist()
        if min(lengths, default=0) < 0:
            fail(name, f"is {lengths[:8]}", "lengths >= 0")
    if a["indices"] is None:
        k_cache = a["k_cache"]
        _pages(a["block_table"], a["cache_seqlens"].tolist(), k_cache.shape[1], k_cache.shape[0], "block_table")


def _prefill_values(a) -> None:
    lengths = [] if a["topk_length"] is None else a["topk_length"].tolist()
    if lengths and not 0 <= min(lengths) <= max(lengths) <= a["indices"].shape[-1]:
        fail("topk_length", f"is {lengths[:8]}", f"counts in [0, {a['indices'].shape[-1]}] (the indices' topk)")


_SPARSE = "(None only in sparse mode, with indices)"
_FP8_LAYOUTS = "576 (DeepSeek V3.2, 656-byte rows) or 512 (V4 MODEL1, V4.1, V3.2 without RoPE)"
_LAYOUTS = (
    "656 bytes a token with d_qk 576 (V3.2), or with d_qk 512: 584 (V4), 528 (V3.2-no-RoPE or V4.1), "
    "with kv_format (None, or one of " + ", ".join(map(repr, reference.KV_FORMATS)) + ") naming that layout"
)
MLA_CHECKS = (
    Check("q", "q.dim() == 4", "{_shape(q)}", "a tensor (batch, seqlen_q, num_heads, head_dim)"),
    Check("q", "q.dtype in _F", "has dtype {q.dtype}", "a floating dtype (bf16, fp16, fp8)", what="dtype"),
    Check("k_cache", "k_cache.dim() == 4", "{_shape(k_cache)}",
          "a tensor (num_blocks, page_size, num_heads_k, head_dim or bytes per token)"),
    Check("k_cache", "is_fp8_kvcache or k_cache.dtype is q.dtype", "has dtype {k_cache.dtype} but q has {q.dtype}",
          "q's dtype (or is_fp8_kvcache=True)", what="dtype"),
    Check("k_cache", "q.get_device() == k_cache.get_device()", "is on {k_cache.device} but q is on {q.device}",
          "every tensor on q's device", what="device"),
    Check("q", "q.shape[2] % k_cache.shape[2] == 0", "has {q.shape[2]} heads and k_cache {k_cache.shape[2]}",
          "q heads to be a multiple of kv heads (MHA, GQA or MQA)"),
    Check("k_cache", "is_fp8_kvcache or k_cache.shape[-1] == q.shape[-1]",
          "has head_dim {k_cache.shape[-1]} but q has {q.shape[-1]}", "q's head_dim (or is_fp8_kvcache=True)"),
    Check("block_table", "block_table is not None or indices is not None", "is None",
          "an int32 tensor (batch, max_pages_per_seq) of block ids " + _SPARSE),
    Check("block_table", "block_table is None or (block_table.dtype is _I32 and block_table.dim() == 2)",
          "{_index(block_table)}", "an int32 tensor (batch, max_pages_per_seq) of block ids"),
    Check("cache_seqlens", "cache_seqlens is not None or indices is not None", "is None",
          "an int32 tensor (batch,) of cached lengths " + _SPARSE),
    Check("cache_seqlens", "cache_seqlens is None or (cache_seqlens.dtype is _I32 and cache_seqlens.dim() == 1)",
          "{_index(cache_seqlens)}", "an int32 tensor (batch,) of cached lengths"),
    *(Check(n, f"{n} is None or {n}.shape[0] == q.shape[0]", f"has {{{n}.shape[0]}} rows",
            "one per sequence: {q.shape[0]}, q's batch") for n in ("block_table", "cache_seqlens")),
    Check("head_dim_v", "head_dim_v.__class__ is int and 0 < head_dim_v and "
                        "(is_fp8_kvcache or head_dim_v <= k_cache.shape[-1])",
          "is {head_dim_v!r}", "an int in (0, {k_cache.shape[-1]}] (V is the cache's first dims)"),
    Check("head_dim_v", "is_fp8_kvcache or k_cache.shape[-1] != 576 or head_dim_v == 512",
          "is {head_dim_v!r} on a 576-wide cache", "512: DeepSeek's layout, 512 latent dims (V) then 64 rope dims"),
    Check("indices", "indices is None or (indices.dtype is _I32 and indices.dim() == 3 "
                     "and indices.shape[:2] == q.shape[:2])",
          "{_index(indices)}", "an int32 tensor (batch, seqlen_q, topk) of token positions (-1: none)"),
    Check("indices", "indices is None or is_fp8_kvcache", "is given without is_fp8_kvcache=True",
          "sparse decode over an FP8 cache (is_fp8_kvcache=True)"),
    Check("q", "indices is None or q.shape[-1] in (576, 512)", "has head_dim {q.shape[-1]}",
          "for sparse FP8 decode " + _FP8_LAYOUTS),
    Check("kv_format", "kv_format is None or (indices is not None and kv_format in " + repr(reference.KV_FORMATS) + ")",
          "is {kv_format!r}{' without indices (dense mode)' if indices is None else ''}",
          "None, or in sparse mode one of " + ", ".join(map(repr, reference.KV_FORMATS))),
    Check("k_cache", "indices is None or not is_fp8_kvcache or "
                     "_kv_layout(kv_format, q, k_cache, tile_scheduler_metadata) not in (None, 'V41_FP4')",
          "has {k_cache.shape[-1]} bytes a token with q's head dim {q.shape[-1]} and kv_format={kv_format!r}",
          _LAYOUTS),
    Check("extra_k_cache", "extra_k_cache is None or indices is None or not is_fp8_kvcache or "
                           "extra_k_cache.shape[-1] == k_cache.shape[-1] or (extra_k_cache.shape[-1] == 288 and "
                           "_kv_layout(kv_format, q, k_cache, tile_scheduler_metadata) == 'V41')",
          "has {extra_k_cache.shape[-1]} bytes a token and k_cache {k_cache.shape[-1]}",
          "k_cache's layout, or V4.1's FP4 (288 bytes a token) beside a V4.1 cache"),
    Check("extra_indices_in_kvcache", "(extra_k_cache is None) == (extra_indices_in_kvcache is None)",
          "{'is None' if extra_indices_in_kvcache is None else 'is given'} and extra_k_cache "
          "{'is None' if extra_k_cache is None else 'is given'}", "both, or neither"),
    Check("topk_length", "topk_length is None or (topk_length.dtype is _I32 and topk_length.shape == q.shape[:1])",
          "{_index(topk_length)}", "an int32 tensor (batch,) of valid index counts"),
    Check("extra_k_cache", "extra_k_cache is None or (extra_k_cache.dtype is k_cache.dtype "
                           "and extra_k_cache.dim() == 4 and extra_k_cache.shape[2] == k_cache.shape[2])",
          "{_tensor(extra_k_cache)}", "k_cache's dtype, rank and heads (its row width: see the layout check)"),
    Check("extra_indices_in_kvcache", "extra_indices_in_kvcache is None or (extra_indices_in_kvcache.dtype is _I32 "
                                      "and extra_indices_in_kvcache.dim() == 3 "
                                      "and extra_indices_in_kvcache.shape[:2] == q.shape[:2])",
          "{_index(extra_indices_in_kvcache)}", "an int32 tensor (batch, seqlen_q, extra_topk) of token positions"),
    Check("extra_topk_length", "extra_topk_length is None or (extra_topk_length.dtype is _I32 "
                               "and extra_topk_length.shape == q.shape[:1])",
          "{_index(extra_topk_length)}", "an int32 tensor (batch,) of valid extra index counts"),
    Check("attn_sink", "attn_sink is None or (attn_sink.shape == q.shape[2:3] and attn_sink.dtype in _F)",
          "{_tensor(attn_sink)}", "a float32 tensor (num_heads,) of sink logits"),
    *(Check(name, f"{name} is None or indices is not None", "is given in dense mode (indices is None)",
            "None: FlashMLA's dense decode takes no " + name + " (sparse decode only)")
      for name in ("attn_sink", "topk_length", "extra_k_cache")),
    Check("causal", "not causal or indices is None", "is True in sparse mode (indices given)",
          "False: FlashMLA's sparse decode is not causal (each query's index list picks its keys)"),
    Check("k_cache", "not _EXACT or q.device == k_cache.device", "is on {k_cache.device} but q is on {q.device}",
          "every tensor on q's device", what="device"),
    *map(on_q_device, ("block_table", "cache_seqlens", "indices", "topk_length", "attn_sink", "extra_k_cache",
                       "extra_indices_in_kvcache", "extra_topk_length", "descale_q", "descale_k")),
    Check("block_table", _mla_values, kind="values"),
)  # fmt: skip


PREFILL_CHECKS = (
    Check("q", "q.dim() == 3", "{_shape(q)}", "a tensor (s_q, num_heads, d_qk)"),
    Check("kv", "kv.dim() == 3 and kv.shape[-1] == q.shape[-1]", "{_shape(kv)}",
          "a tensor (s_kv, 1, d_qk) like q's d_qk"),
    Check("kv", "kv.dtype is q.dtype", "has dtype {kv.dtype} but q has {q.dtype}", "q's dtype (bf16)", what="dtype"),
    Check("kv", "q.get_device() == kv.get_device() == indices.get_device()", "is on {kv.device} but q is on {q.device}",
          "every tensor on q's device", what="device"),
    Check("indices", "indices.dtype is _I32 and indices.dim() == 3 and indices.shape[:2] == (q.shape[0], kv.shape[1])",
          "{_index(indices)}", "an int32 tensor (s_q, 1, topk) of kv rows (-1: none)"),
    Check("d_v", "d_v.__class__ is int and 0 < d_v <= q.shape[-1]", "is {d_v!r}", "an int in (0, d_qk]"),
    Check("topk_length", "topk_length is None or (topk_length.dtype is _I32 and topk_length.shape == q.shape[:1])",
          "{_index(topk_length)}", "an int32 tensor (s_q,)"),
    Check("attn_sink", "attn_sink is None or (attn_sink.shape == q.shape[1:2] and attn_sink.dtype in _F)",
          "{_tensor(attn_sink)}", "a float32 tensor (num_heads,) of sink logits"),
    Check("kv", "not _EXACT or q.device == kv.device == indices.device", "is on {kv.device} (indices on "
          "{indices.device}) but q is on {q.device}", "every tensor on q's device", what="device"),
    *map(on_q_device, ("topk_length", "attn_sink")),
    Check("topk_length", _prefill_values, kind="values"),
)  # fmt: skip


# -- conformance cases and inputs ----------------------------------------------------------------------


def mla_plan_args(a) -> dict:
    q, k_cache = a["q"], a["k_cache"]
    return {"cache_seqlens": a["cache_seqlens"], "num_q_tokens_per_head_k": q.shape[1] * q.shape[2] // k_cache.shape[2],
            "num_heads_k": k_cache.shape[2], "num_heads_q": q.shape[2], "is_fp8_kvcache": a["is_fp8_kvcache"],
            "topk": None if a["indices"] is None else a["indices"].shape[-1]}  # fmt: skip


# a FlashMLASchedMeta is planned on first use and then frozen: reusing it for other shapes reads wrong tiles
MLA_PLAN = PlanRelation("tile_scheduler_metadata", "flashmla.metadata", keys=(), producer_args=mla_plan_args,
                        result_params=("tile_scheduler_metadata", "num_splits"),
                        freeze=(("batch size", "q.shape[0]"), ("seqlen_q", "q.shape[1]"), ("num_heads", "q.shape[2]"),
                                ("topk", "None if indices is None else indices.shape[-1]"),
                                ("extra topk", "None if extra_indices_in_kvcache is None else "
                                               "extra_indices_in_kvcache.shape[-1]"),
                                ("is_fp8_kvcache", "bool(is_fp8_kvcache)"),
                                # sglang-kernel 0.4.10's FlashMLASchedMeta.Config records these too
                                ("page block size", "k_cache.shape[1]"), ("causal", "bool(causal)"),
                                ("extra page block size",
                                 "None if extra_k_cache is None else extra_k_cache.shape[1]")))  # fmt: skip

SPECS = [
    OpSpec("flashmla.metadata", get_mla_metadata, features={}, reference=reference.get_mla_metadata),
    OpSpec("flashmla.kvcache", flash_mla_with_kvcache, checks=MLA_CHECKS, reference=reference.flash_mla_with_kvcache,
           plan=MLA_PLAN, cases=mla_cases, inputs=mla_inputs,
           result_shapes=(("(*q.shape[:-1], head_dim_v)", "_out_dtype(q.dtype)"),
                          ("(q.shape[0], q.shape[2], q.shape[1])", "torch.float32"))),
    OpSpec("flashmla.sparse_prefill", flash_mla_sparse_fwd, checks=PREFILL_CHECKS,
           reference=reference.flash_mla_sparse_fwd, cases=prefill_cases, inputs=prefill_inputs,
           results=("out", "max_logits", "lse"),
           result_shapes=(("(*q.shape[:-1], d_v)", "q.dtype"), ("q.shape[:-1]", "torch.float32"),
                          ("q.shape[:-1]", "torch.float32"))),
]  # fmt: skip
